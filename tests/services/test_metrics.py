"""/metrics: parsed with prometheus-client's own parser and checked against known counts."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from scheduling import services
from supervision.models import Escalation
from supervision.services import supervisor_tick
from tests.factories import agent_create, item_running

pytestmark = pytest.mark.django_db


def scrape(client: Client | None = None, **extra) -> dict:
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_match_the_database():
    agent = agent_create("agent-m")
    succeeded = item_running(agent, "demo.sleep")
    services.work_item_succeed(work_item_id=succeeded.pk, attempt=1, actor="agent:m", result={"ok": True})
    dead = item_running(agent, "demo.fail")
    services.work_item_fail(work_item_id=dead.pk, attempt=1, actor="agent:m", error="no", retryable=False)
    running = item_running(agent, "demo.sleep")
    services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 4)
    assert supervisor_tick() is not None

    samples = scrape()
    # 4 noop items: the release put some in the window (queued), the rest wait (pending).
    default_pending = value(samples, "shepherd_work_items", state="pending", queue="default")
    default_queued = value(samples, "shepherd_work_items", state="queued", queue="default")
    assert default_pending + default_queued == 4
    assert value(samples, "shepherd_work_items", state="running", queue="default") == 1
    assert value(samples, "shepherd_work_items", state="succeeded", queue="default") == 1
    assert value(samples, "shepherd_work_items", state="dead", queue="default") == 1
    assert value(samples, "shepherd_work_items", state="running", queue="cpu") == 0
    assert value(samples, "shepherd_queue_in_flight", queue="default") == default_queued + 1
    assert value(samples, "shepherd_work_items_by_type", work_type="demo.sleep", state="succeeded") == 1
    assert value(samples, "shepherd_work_items_by_type", work_type="demo.fail", state="dead") == 1
    assert value(samples, "shepherd_attempts_total", work_type="demo.sleep", outcome="succeeded") == 1
    assert value(samples, "shepherd_attempts_total", work_type="demo.sleep", outcome="running") == 1
    assert value(samples, "shepherd_attempts_total", work_type="demo.fail", outcome="failed") == 1
    # Two finished attempts, both well under a minute; three items have started.
    assert value(samples, "shepherd_attempt_run_seconds_count") == 2
    assert value(samples, "shepherd_attempt_run_seconds_bucket", le="60.0") == 2
    assert value(samples, "shepherd_attempt_run_seconds_bucket", le="+Inf") == 2
    assert value(samples, "shepherd_queue_wait_seconds_count") == 3
    assert value(samples, "shepherd_queue_wait_seconds_sum") >= 0
    assert 0 <= value(samples, "shepherd_agent_heartbeat_age_seconds", agent="agent-m", status="online") < 5
    assert value(samples, "shepherd_agents", status="online") == 1
    assert value(samples, "shepherd_supervisor_ticks_total") == 1
    assert value(samples, "shepherd_supervisor_silent") == 0
    assert value(samples, "shepherd_supervisor_last_tick_age_seconds") >= 0
    assert running.pk  # the running item is what makes running == 1 above
    Escalation.objects.create(problem="stalled", subject="item:1", summary="x")
    Escalation.objects.create(problem="stalled", subject="item:2", summary="x", status="resolved")
    assert value(scrape(), "shepherd_escalations_open", problem="stalled") == 1


def test_metrics_need_an_allowed_address_or_the_token(settings):
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    settings.SHEPHERD_METRICS_ALLOWED_IPS = ["10.1.0.0/16"]
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert Client().get("/metrics").status_code == 403  # 127.0.0.1 is no longer listed
    settings.SHEPHERD_METRICS_TOKEN = "s3cret-scrape"
    assert Client().get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    scrape(headers={"Authorization": "Bearer s3cret-scrape"})
    assert Client().post("/metrics").status_code == 405
