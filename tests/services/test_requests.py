"""Requests with dependencies: validated whole, created all or none, released in
dependency order, cascading cancels."""

from __future__ import annotations

import pytest

from project.exceptions import ValidationError
from scheduling import services
from scheduling.models import Dependency, Request, WorkItem
from scheduling.selectors import request_graph, request_rollup
from tests.factories import agent_create, item_claim

pytestmark = pytest.mark.django_db

DIAMOND = {
    "name": "diamond",
    "items": [
        {"key": "fetch", "work_type": "demo.noop"},
        {"key": "left", "work_type": "demo.sleep", "payload": {"seconds": 0}, "depends_on": ["fetch"]},
        {"key": "right", "work_type": "demo.noop", "depends_on": ["fetch"], "priority": 8},
        {"key": "join", "work_type": "demo.noop", "depends_on": ["left", "right"]},
    ],
}


def by_key(request):
    return {item.request_key: item for item in request.items.all()}


def run(item, agent) -> None:
    item.refresh_from_db()
    assert item.status == "queued", (item.request_key, item.status)
    assert item_claim(item, agent)
    assert services.work_item_succeed(work_item_id=item.pk, attempt=item.attempt, actor="t", result=None)


def test_a_request_runs_in_dependency_order(django_capture_on_commit_callbacks):
    agent = agent_create()
    with django_capture_on_commit_callbacks(execute=True):
        request = services.request_submit(spec=DIAMOND)
    items = by_key(request)
    assert {k: (i.status, i.blocked_reason) for k, i in items.items()} == {
        "fetch": ("queued", ""),
        "left": ("pending", "dependencies"),
        "right": ("pending", "dependencies"),
        "join": ("pending", "dependencies"),
    }
    assert Dependency.objects.count() == 4 and items["right"].priority == 8
    assert request_rollup(request)["state"] == "running"
    with django_capture_on_commit_callbacks(execute=True):
        run(items["fetch"], agent)
    with django_capture_on_commit_callbacks(execute=True):
        run(items["left"], agent)
    items["join"].refresh_from_db()
    assert items["join"].blocked_reason == "dependencies"  # right has not succeeded yet
    with django_capture_on_commit_callbacks(execute=True):
        run(items["right"], agent)
    with django_capture_on_commit_callbacks(execute=True):
        run(items["join"], agent)
    rollup = request_rollup(request)
    assert rollup["state"] == "succeeded" and rollup["counts"]["succeeded"] == 4
    graph = request_graph(request)
    assert [[n["request_key"] for n in layer] for layer in graph["layers"]] == [["fetch"], ["left", "right"], ["join"]]


def test_a_dead_parent_cancels_its_dependants_with_a_reason(django_capture_on_commit_callbacks):
    agent = agent_create()
    with django_capture_on_commit_callbacks(execute=True):
        request = services.request_submit(spec=DIAMOND)
    items = by_key(request)
    assert item_claim(items["fetch"], agent)
    with django_capture_on_commit_callbacks(execute=True):
        services.work_item_fail(work_item_id=items["fetch"].pk, attempt=1, actor="t", error="x", retryable=False)
    for key in ("left", "right", "join"):
        items[key].refresh_from_db()
        assert items[key].status == "cancelled", key
    reason = items["left"].events.get(to_status="cancelled").reason
    assert reason == f"dependency #{items['fetch'].pk} ended dead"
    assert request_rollup(request)["state"] == "failed"


def test_the_tick_advances_dependants_whose_hook_never_ran():
    request = services.request_submit(
        spec={
            "items": [
                {"key": "a", "work_type": "demo.noop"},
                {"key": "b", "work_type": "demo.noop", "depends_on": ["a"]},
            ]
        }
    )
    items = by_key(request)
    WorkItem.objects.filter(pk=items["a"].pk).update(status="succeeded")  # as if its process died post-commit
    from supervision.services import supervisor_tick

    supervisor_tick()
    items["b"].refresh_from_db()
    assert items["b"].blocked_reason == "" and items["b"].status == "queued"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "must be a JSON object"),
        ({"items": []}, "non-empty 'items'"),
        ({"items": [{"work_type": "demo.noop"}]}, "'key' must be"),
        ({"items": [{"key": "a", "work_type": "demo.nope"}]}, "unknown work type 'demo.nope'"),
        ({"items": [{"key": "a", "work_type": "demo.sleep", "payload": {"seconds": "x"}}]}, "item 'a': demo.sleep"),
        ({"items": [{"key": "a", "work_type": "demo.noop"}, {"key": "a", "work_type": "demo.noop"}]}, "used twice"),
        ({"items": [{"key": "a", "work_type": "demo.noop", "depends_on": ["zz"]}]}, "unknown key(s): zz"),
        ({"items": [{"key": "a", "work_type": "demo.noop", "depends_on": ["a"]}]}, "depend on itself"),
        (
            {
                "items": [
                    {"key": "a", "work_type": "demo.noop", "depends_on": ["c"]},
                    {"key": "b", "work_type": "demo.noop", "depends_on": ["a"]},
                    {"key": "c", "work_type": "demo.noop", "depends_on": ["b"]},
                    {"key": "d", "work_type": "demo.noop"},
                ]
            },
            "cycle through: a, b, c",
        ),
        ({"items": [{"key": "a", "work_type": "django.task", "payload": {}}]}, "internal"),
        ({"items": [{"key": "a", "work_type": "demo.noop", "priority": 11}]}, "priority"),
        ({"items": [{"key": "a", "work_type": "demo.noop", "colour": 1}]}, "unknown field(s): colour"),
    ],
)
def test_an_invalid_request_creates_nothing(spec, message):
    with pytest.raises(ValidationError) as raised:
        services.request_submit(spec=spec)
    assert message in str(raised.value)
    assert Request.objects.count() == 0 and WorkItem.objects.count() == 0 and Dependency.objects.count() == 0
