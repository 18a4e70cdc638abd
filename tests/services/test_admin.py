import pytest
from django.apps import apps
from django.contrib import admin

from scheduling.models import WorkItem
from tests.factories import agent_create, item_running

pytestmark = pytest.mark.django_db


def test_every_shepherd_model_is_registered():
    ours = [m for app in ("scheduling", "agents", "supervision", "api") for m in apps.get_app_config(app).get_models()]
    assert ours and all(model in admin.site._registry for model in ours)


def test_admin_requires_login(client):
    response = client.get("/admin/scheduling/workitem/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_state_fields_are_read_only():
    model_admin = admin.site._registry[WorkItem]
    for field in ("status", "attempt", "agent", "lease_expires_at", "result", "error", "payload"):
        assert field in model_admin.readonly_fields


def test_actions_go_through_services_and_report_done_and_already_handled(admin_client):
    item = item_running(agent_create())
    assert admin_client.get(f"/admin/scheduling/workitem/{item.pk}/change/").status_code == 200
    data = {"action": "cancel", "_selected_action": [item.pk]}
    first = admin_client.post("/admin/scheduling/workitem/", data, follow=True)
    assert "Cancel: 1 done, 0 already handled" in first.content.decode()
    second = admin_client.post("/admin/scheduling/workitem/", data, follow=True)
    assert "Cancel: 0 done, 1 already handled" in second.content.decode()
    item.refresh_from_db()
    assert item.status == "cancelled"
    event = item.events.get(to_status="cancelled", kind="transition")
    assert event.actor == "user:admin"

    requeue = admin_client.post("/admin/scheduling/workitem/", {**data, "action": "requeue"}, follow=True)
    assert "Requeue: 1 done" in requeue.content.decode()


def test_admin_pages_render(admin_client):
    item_running(agent_create())
    for url in (
        "/admin/",
        "/admin/scheduling/workitem/",
        "/admin/agents/agent/",
        "/admin/supervision/supervisorrun/",
        "/admin/supervision/intervention/",
        "/admin/scheduling/attempt/",
        "/admin/scheduling/worktype/",
    ):
        assert admin_client.get(url).status_code == 200, url
    silent = admin_client.get("/admin/supervision/supervisorrun/").content.decode()
    assert "The supervisor is silent" in silent
