"""The JSON API on the database: every endpoint, every error status, ownership."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from api.models import ApiToken
from api.services import api_token_create
from scheduling import services
from scheduling.models import WorkItem, WorkItemEvent
from tests.factories import agent_create, item_running

pytestmark = pytest.mark.django_db


def user_make(username: str, *, staff: bool = False):
    return get_user_model().objects.create_user(username, password="pw-not-used", is_staff=staff)


class Api:
    """A client that sends one user's bearer token."""

    def __init__(self, user=None, *, token: str | None = None, rate_limit: int | None = None):
        self.user = user
        if token is None and user is not None:
            _, token = api_token_create(user=user, name="tests", rate_limit_per_minute=rate_limit)
        self.token = token
        self.client = Client()

    def _headers(self, headers):
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**auth, **(headers or {})}

    def get(self, path, **params):
        return self.client.get(f"/api{path}", params, headers=self._headers(None))

    def post(self, path, body=None, *, raw: str | None = None, headers=None):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(f"/api{path}", data, content_type="application/json", headers=self._headers(headers))


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message", "details"}
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def alice():
    return Api(user_make("alice"))


@pytest.fixture
def bob():
    return Api(user_make("bob"))


@pytest.fixture
def staff():
    return Api(user_make("operator", staff=True))


# ----------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer shp_not-a-token", "Token abc", "Basic YWxpY2U6cHc="],
)
def test_every_endpoint_needs_a_valid_token(authorization):
    client = Client()
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [
        ("get", "/api/work-types"),
        ("get", "/api/items"),
        ("get", "/api/items/1"),
        ("get", "/api/agents"),
        ("get", "/api/status"),
        ("post", "/api/items"),
        ("post", "/api/items/batch"),
        ("post", "/api/items/1/cancel"),
        ("post", "/api/items/1/retry"),
        ("post", "/api/items/1/requeue"),
    ]:
        response = getattr(client, method)(path, headers=headers)
        error_of(response, 401, "unauthenticated")
        assert response["WWW-Authenticate"] == "Bearer"


def test_revoked_token_and_inactive_user_are_refused(alice):
    assert alice.get("/work-types").status_code == 200
    call_command("api_token", "revoke", "alice", stdout=StringIO())
    error_of(alice.get("/work-types"), 401, "unauthenticated")

    other = Api(user_make("carol"))
    get_user_model().objects.filter(username="carol").update(is_active=False)
    error_of(other.get("/work-types"), 401, "unauthenticated")


def test_tokens_are_stored_hashed():
    user = user_make("dave")
    token, raw = api_token_create(user=user, name="ci")
    stored = ApiToken.objects.values_list("digest", "prefix").get(pk=token.pk)
    assert raw not in stored[0] and raw.startswith(stored[1]) and len(stored[1]) < 12


def test_rate_limit_per_token_answers_429_with_retry_after():
    limited = Api(user_make("erin"), rate_limit=3)
    assert [limited.get("/work-types").status_code for _ in range(3)] == [200, 200, 200]
    response = limited.get("/work-types")
    error_of(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 61
    # Another token of the same user has its own window.
    assert Api(get_user_model().objects.get(username="erin")).get("/work-types").status_code == 200


def test_no_csrf_needed_for_bearer_but_session_cookies_do_not_authenticate(alice):
    session = Client(enforce_csrf_checks=True)
    session.force_login(alice.user)
    error_of(session.post("/api/items", "{}", content_type="application/json"), 401, "unauthenticated")
    assert WorkItem.objects.count() == 0


# ----------------------------------------------------------------- work types, submit


def test_work_types_list_schemas_and_hides_internal_types(alice):
    response = alice.get("/work-types")
    assert response.status_code == 200
    names = [row["name"] for row in response.json()]
    assert "demo.sleep" in names and "django.task" not in names
    sleep = next(row for row in response.json() if row["name"] == "demo.sleep")
    assert sleep["payload_schema"]["properties"]["seconds"]["type"] == "number"
    assert sleep["queue"] == "default"


def test_submit_one_item(alice):
    response = alice.post("/items", {"work_type": "demo.sleep", "payload": {"seconds": 2}, "priority": 7})
    assert response.status_code == 201, response.content
    body = response.json()
    item = WorkItem.objects.get()
    assert body["id"] == item.pk and body["submitted_by"] == "alice" and body["priority"] == 7
    assert body["payload"] == {"seconds": 2} and body["attempts"] == []
    assert item.submitted_by.username == "alice"


def test_submit_fills_payload_defaults(alice):
    body = alice.post("/items", {"work_type": "demo.sleep"}).json()
    assert body["payload"] == {"seconds": 1}


def test_submit_batch_is_all_or_nothing(alice):
    response = alice.post("/items/batch", {"work_type": "demo.sleep", "payloads": [{"seconds": 1}] * 5})
    assert response.status_code == 201
    assert response.json()["count"] == 5
    assert sorted(response.json()["ids"]) == sorted(WorkItem.objects.values_list("id", flat=True))

    bad = alice.post("/items/batch", {"work_type": "demo.sleep", "payloads": [{"seconds": 1}, {"seconds": "x"}]})
    assert "item 2" in error_of(bad, 422, "invalid_payload")["message"]
    assert WorkItem.objects.count() == 5


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "Cannot parse request body"),
        ("[]", "documented shape"),
        ('{"payload": {}}', "work_type"),
        ('{"work_type": "demo.sleep", "priority": 12}', "priority"),
        ('{"work_type": "demo.sleep", "priority": "high"}', "priority"),
        ('{"work_type": "demo.sleep", "payload": []}', "payload"),
        ('{"work_type": "demo.sleep", "colour": "red"}', "colour"),
        ('{"work_type": "demo.sleep", "not_before": "2030-01-01T00:00:00"}', "not_before"),
    ],
)
def test_malformed_submissions_are_400_and_create_nothing(alice, raw, fragment):
    error = error_of(alice.post("/items", raw=raw), 400, "malformed_request")
    assert fragment in error["message"] + json.dumps(error["details"])
    assert WorkItem.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"work_type": "demo.nope"}, "unknown work type 'demo.nope'"),
        ({"work_type": "demo.sleep", "payload": {"seconds": -1}}, "payload.seconds"),
        ({"work_type": "demo.noop", "payload": {"extra": 1}}, "Additional properties"),
        ({"work_type": "django.task", "payload": {"task": "os.system", "args": [], "kwargs": {}}}, "internal"),
    ],
)
def test_payloads_failing_the_work_type_are_422_and_create_nothing(alice, body, fragment):
    assert fragment in error_of(alice.post("/items", body), 422, "invalid_payload")["message"]
    assert WorkItem.objects.count() == 0


def test_too_large_bodies_are_413_and_create_nothing(alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    error_of(alice.post("/items", {"work_type": "demo.sleep", "payload": {"x": "y" * 2000}}), 413, "too_large")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
    too_many = alice.post("/items/batch", {"work_type": "demo.noop", "payloads": [{}] * 10_001})
    error_of(too_many, 413, "too_large")
    assert WorkItem.objects.count() == 0


def test_idempotency_key_returns_the_existing_item(alice, bob):
    body = {"work_type": "demo.sleep", "payload": {"seconds": 3}}
    first = alice.post("/items", body, headers={"Idempotency-Key": "order-17"})
    again = alice.post("/items", body, headers={"Idempotency-Key": "order-17"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    # Keys are per submitter: bob's "order-17" is his own item.
    theirs = bob.post("/items", body, headers={"Idempotency-Key": "order-17"})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert WorkItem.objects.count() == 2

    batch = {"work_type": "demo.noop", "payloads": [{}, {}, {}]}
    one = alice.post("/items/batch", batch, headers={"Idempotency-Key": "nightly"})
    two = alice.post("/items/batch", batch, headers={"Idempotency-Key": "nightly"})
    assert (one.status_code, two.status_code) == (201, 200)
    assert one.json()["ids"] == two.json()["ids"] and two.json()["created"] is False
    assert WorkItem.objects.count() == 5


# ----------------------------------------------------------------- read


def test_get_item_shows_attempts_progress_and_error(alice):
    agent = agent_create()
    item = item_running(agent, submitted_by=alice.user)
    services.work_item_progress_report(work_item_id=item.pk, attempt=1, fraction=0.4, message="halfway-ish")
    body = alice.get(f"/items/{item.pk}").json()
    assert body["status"] == "running" and body["progress"] == 0.4 and body["progress_message"] == "halfway-ish"
    assert body["attempts"][0]["agent"] == agent.name and body["attempts"][0]["outcome"] == "running"
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="agent:a", error="boom", retryable=False)
    body = alice.get(f"/items/{item.pk}").json()
    assert body["status"] == "dead" and body["error"] == "boom" and body["attempts"][0]["error"] == "boom"


def test_list_filters_and_cursor_pagination(alice, bob):
    mine = services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 7, submitted_by=alice.user)
    services.work_items_submit_ids(work_type="demo.sleep", payloads=[{}] * 2, submitted_by=alice.user)
    services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 3, submitted_by=bob.user)
    seen, cursor = [], None
    while True:
        page = alice.get("/items", work_type="demo.noop", limit=3, **({"cursor": cursor} if cursor else {})).json()
        seen += [row["id"] for row in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(mine, reverse=True)
    assert len(alice.get("/items").json()["items"]) == 9
    assert {row["status"] for row in alice.get("/items", status="pending").json()["items"]} <= {"pending"}
    error_of(alice.get("/items", limit=0), 400, "malformed_request")
    error_of(alice.get("/items", cursor="abc"), 400, "malformed_request")
    error_of(alice.get("/items", status="sleeping"), 400, "malformed_request")


def test_agents_and_status(alice, staff):
    agent_create("agent-x")
    services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 2, submitted_by=alice.user)
    services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 3)
    assert [row["name"] for row in alice.get("/agents").json()] == ["agent-x"]
    mine = alice.get("/status").json()
    everything = staff.get("/status").json()
    assert sum(mine["counts"].values()) == 2
    assert sum(everything["counts"].values()) == 5
    assert set(everything) == {"counts", "queues", "agents", "supervisor"}


# ----------------------------------------------------------------- ownership and actions


def test_other_users_items_are_404_everywhere(alice, bob, staff):
    item = services.work_item_submit(work_type="demo.sleep", submitted_by=alice.user)
    for path in [f"/items/{item.pk}"]:
        error_of(bob.get(path), 404, "not_found")
    for action in ("cancel", "retry", "requeue"):
        error_of(bob.post(f"/items/{item.pk}/{action}"), 404, "not_found")
    assert item.pk not in [row["id"] for row in bob.get("/items").json()["items"]]
    assert bob.get("/items", submitted_by="alice").json()["items"] == []
    item.refresh_from_db()
    assert item.status in {"pending", "queued"}
    assert staff.get(f"/items/{item.pk}").status_code == 200
    error_of(alice.get("/items/999999"), 404, "not_found")
    error_of(alice.get("/no-such-endpoint"), 404, "not_found")


def test_cancel_then_409_with_current_state(alice):
    item = services.work_item_submit(work_type="demo.sleep", submitted_by=alice.user)
    response = alice.post(f"/items/{item.pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    events = WorkItemEvent.objects.filter(work_item=item, to_status="cancelled")
    assert events.get().actor == "user:alice"
    error = error_of(alice.post(f"/items/{item.pk}/cancel"), 409, "illegal_transition")
    assert error["details"] == {"status": "cancelled"}
    error = error_of(alice.post(f"/items/{item.pk}/retry"), 409, "illegal_transition")
    assert error["details"] == {"status": "cancelled"}


def test_retry_skips_the_backoff(alice):
    agent = agent_create()
    item = item_running(agent, submitted_by=alice.user)
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="agent:a", error="flaky", retry_delay=3600)
    response = alice.post(f"/items/{item.pk}/retry")
    assert response.status_code == 200 and response.json()["status"] in {"pending", "queued"}


def test_requeue_is_for_staff(alice, staff):
    agent = agent_create()
    item = item_running(agent, submitted_by=alice.user)
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="agent:a", error="bad", retryable=False)
    error_of(alice.post(f"/items/{item.pk}/requeue"), 403, "forbidden")
    item.refresh_from_db()
    assert item.status == "dead"
    response = staff.post(f"/items/{item.pk}/requeue")
    assert response.status_code == 200 and response.json()["status"] in {"pending", "queued"}
    error_of(staff.post(f"/items/{item.pk}/requeue"), 409, "illegal_transition")


# ----------------------------------------------------------------- docs, schema, command


def test_openapi_schema_and_docs_need_a_login(alice):
    client = Client()
    assert client.get("/api/docs").status_code == 302
    assert client.get("/api/openapi.json").status_code == 302
    client.force_login(alice.user)
    schema = client.get("/api/openapi.json").json()
    assert {"/api/items", "/api/items/batch", "/api/items/{work_item_id}/cancel", "/api/status"} <= set(schema["paths"])
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    assert b"https://" not in docs.content  # Swagger UI from our own static files, no CDN


def test_api_token_command(capsys):
    user_make("frank")
    out = StringIO()
    call_command("api_token", "create", "frank", "--name", "deploy", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("shp_")
    assert Api(token=raw).get("/work-types").status_code == 200
    out = StringIO()
    call_command("api_token", "revoke", "frank", "--name", "deploy", stdout=out)
    assert "revoked 1" in out.getvalue()
    assert Api(token=raw).get("/work-types").status_code == 401
    with pytest.raises(CommandError, match="no user named 'nobody'") as raised:
        call_command("api_token", "create", "nobody", stdout=StringIO())
    assert raised.value.returncode == 2
    assert ApiToken.objects.count() == 1


# ----------------------------------------------------------------- requests


def test_submit_a_request_with_dependencies_and_read_it_back(alice, bob):
    body = {
        "name": "report",
        "items": [
            {"key": "gather", "work_type": "demo.noop"},
            {"key": "render", "work_type": "demo.sleep", "payload": {"seconds": 0}, "depends_on": ["gather"]},
        ],
    }
    response = alice.post("/requests", body)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["name"] == "report" and created["state"] in ("pending", "running")
    nodes = {node["key"]: node for node in created["items"]}
    assert nodes["render"]["depends_on"] == [nodes["gather"]["id"]]
    assert alice.get(f"/requests/{created['id']}").json()["id"] == created["id"]
    error_of(bob.get(f"/requests/{created['id']}"), 404, "not_found")
    assert WorkItem.objects.filter(submitted_by=alice.user).count() == 2


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"items": []}, 400, "malformed_request", "items"),
        ({"items": [{"key": "a", "work_type": "demo.noop", "depends_on": ["a"]}]}, 422, "invalid_payload", "itself"),
        (
            {
                "items": [
                    {"key": "a", "work_type": "demo.noop", "depends_on": ["b"]},
                    {"key": "b", "work_type": "demo.noop", "depends_on": ["a"]},
                ]
            },
            422,
            "invalid_payload",
            "cycle",
        ),
        (
            {"items": [{"key": "a", "work_type": "demo.sleep", "payload": {"seconds": "x"}}]},
            422,
            "invalid_payload",
            "'a'",
        ),
    ],
)
def test_invalid_requests_create_nothing(alice, body, status, code, fragment):
    assert fragment in error_of(alice.post("/requests", body), status, code)["message"] + str(body)
    assert WorkItem.objects.count() == 0


def test_nul_characters_are_refused_not_500(alice):
    error_of(alice.get("/items", queue="a\x00b"), 400, "malformed_request")
    body = {"work_type": "demo.noop_typo", "payload": {}}
    error_of(alice.post("/items", body), 422, "invalid_payload")
    response = alice.post("/items", raw='{"work_type": "demo.progress", "payload": {"steps": 1, "note\\u0000": 1}}')
    assert response.status_code in (400, 422)
    request = {"items": [{"key": "a\\u0000", "work_type": "demo.noop"}]}
    assert alice.post("/requests", raw=json.dumps(request).replace("\\\\u", "\\u")).status_code in (400, 422)
    assert WorkItem.objects.count() == 0
