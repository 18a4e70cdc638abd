import pytest
from django.db import IntegrityError, transaction

from project.dbclock import now_minus
from project.exceptions import ValidationError
from scheduling import services
from scheduling.models import Attempt, EventKind, WorkItem, WorkItemEvent, WorkItemStatus
from tests.factories import agent_create, item_claim, item_queued, item_running

pytestmark = pytest.mark.django_db
S = WorkItemStatus


def test_submit_creates_pending_items_and_release_queues_them():
    items = services.work_items_submit(work_type="demo.sleep", payloads=[{"seconds": 2}, {}])
    assert [i.status for i in items] == [S.PENDING, S.PENDING]
    assert items[1].payload == {"seconds": 1}  # schema default filled in
    assert services.work_items_release() == 2
    rows = list(WorkItem.objects.order_by("id").values_list("status", "attempt", "queue"))
    assert rows == [(S.QUEUED, 1, "default"), (S.QUEUED, 1, "default")]
    assert WorkItemEvent.objects.filter(from_status=S.PENDING, to_status=S.QUEUED).count() == 2


def test_cpu_work_routes_to_the_cpu_queue():
    assert services.work_item_submit(work_type="demo.cpu", payload={"n": 100}).queue == "cpu"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"work_type": "demo.nope", "payloads": [{}]}, "unknown work type 'demo.nope'"),
        ({"work_type": "demo.sleep", "payloads": [{}, {"seconds": "x"}]}, "item 2: demo.sleep: payload.seconds"),
        ({"work_type": "demo.sleep", "payloads": [{}], "priority": 10}, "priority must be an integer from 0 to 9"),
        ({"work_type": "demo.sleep", "payloads": [{}], "priority": -1}, "priority must be an integer from 0 to 9"),
        ({"work_type": "demo.sleep", "payloads": []}, "nothing to submit"),
    ],
)
def test_bad_submissions_create_nothing(options, message):
    with pytest.raises(ValidationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        services.work_items_submit(**options)
    assert WorkItem.objects.count() == 0


def test_release_window_follows_live_capacity_in_priority_order(settings):
    settings.SHEPHERD_QUEUE_WINDOW_PER_PROCESS = 1
    settings.SHEPHERD_QUEUE_WINDOW = 3
    low = services.work_items_submit(work_type="demo.noop", payloads=[{}] * 3, priority=1)
    high = services.work_items_submit(work_type="demo.noop", payloads=[{}] * 2, priority=8)
    assert services.work_items_release() == 1  # no agent yet: a window of one
    agent_create("a")  # two processes
    assert services.work_items_release() == 1
    agent_create("b")  # four processes, but the window is capped at 3
    assert services.work_items_release() == 1
    assert services.work_items_release() == 0
    queued = set(WorkItem.objects.filter(status=S.QUEUED).values_list("id", flat=True))
    assert queued == {high[0].pk, high[1].pk, low[0].pk}


def test_claim_is_fenced_by_attempt_and_state():
    agent = agent_create()
    item = item_queued()
    assert not item_claim(item, agent, attempt=item.attempt + 1)
    assert item_claim(item, agent)
    assert not item_claim(item, agent)  # already running
    item.refresh_from_db()
    assert item.status == S.RUNNING and item.agent_id == agent.pk and item.lease_expires_at is not None
    attempt = Attempt.objects.get(work_item=item)
    assert (attempt.number, attempt.outcome, attempt.agent_id) == (1, "running", agent.pk)


def test_succeed_then_late_finish_is_rejected_and_recorded():
    agent = agent_create()
    item = item_running(agent)
    assert services.work_item_succeed(work_item_id=item.pk, attempt=1, actor="test", result={"ok": 1})
    assert not services.work_item_succeed(work_item_id=item.pk, attempt=1, actor="test", result={"ok": 2})
    assert services.work_item_fail(work_item_id=item.pk, attempt=1, actor="test", error="late") is None
    item.refresh_from_db()
    assert (item.status, item.result) == (S.SUCCEEDED, {"ok": 1})
    assert Attempt.objects.get(work_item=item).outcome == "succeeded"


def test_fail_retries_with_backoff_then_dead_letters():
    agent = agent_create()
    item = item_running(agent, "demo.fail", payload={"times": 5})
    assert item.max_attempts == 3
    for attempt in (1, 2):
        status = services.work_item_fail(work_item_id=item.pk, attempt=attempt, actor="test", error="boom")
        assert status == S.RETRY_WAIT
        item.refresh_from_db()
        assert item.not_before is not None and item.lease_expires_at is None
        WorkItem.objects.filter(pk=item.pk).update(not_before=now_minus(1))  # backoff elapsed
        services.work_items_release()
        item.refresh_from_db()
        assert (item.status, item.attempt) == (S.QUEUED, attempt + 1)
        assert item_claim(item, agent)
    assert services.work_item_fail(work_item_id=item.pk, attempt=3, actor="test", error="boom") == S.DEAD
    outcomes = list(Attempt.objects.filter(work_item=item).values_list("number", "outcome"))
    assert outcomes == [(1, "failed"), (2, "failed"), (3, "failed")]


def test_retry_wait_is_not_released_before_it_is_due():
    agent = agent_create()
    item = item_running(agent)
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="test", error="boom", retry_delay=60)
    services.work_items_release()
    item.refresh_from_db()
    assert item.status == S.RETRY_WAIT
    assert services.work_item_retry(work_item_id=item.pk, actor="test")  # operator: retry now
    services.work_items_release()  # (on_commit does this in production)
    item.refresh_from_db()
    assert (item.status, item.attempt) == (S.QUEUED, 2)


def test_non_retryable_failure_dead_letters_at_once():
    agent = agent_create()
    item = item_running(agent)
    assert services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", error="no", retryable=False) == S.DEAD


@pytest.mark.parametrize("stage", ["pending", "queued", "running", "retry_wait"])
def test_cancel_from_every_non_terminal_state(stage):
    agent = agent_create()
    if stage == "pending":
        item = services.work_item_submit(work_type="demo.sleep")
    elif stage == "queued":
        item = item_queued()
    else:
        item = item_running(agent)
        if stage == "retry_wait":
            services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", error="x", retry_delay=60)
    assert services.work_item_cancel(work_item_id=item.pk, actor="test")
    assert not services.work_item_cancel(work_item_id=item.pk, actor="test")
    item.refresh_from_db()
    assert item.status == S.CANCELLED
    assert not Attempt.objects.filter(work_item=item, outcome="running").exists()
    # A claim of the cancelled attempt must lose: a cancelled item never runs.
    assert not item_claim(item, agent)


def test_requeue_grants_one_more_attempt_and_is_audited():
    agent = agent_create()
    item = item_running(agent)
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", error="x", retryable=False)
    assert services.work_item_requeue(work_item_id=item.pk, actor="user:op", reason="fixed the input")
    services.work_items_release()
    item.refresh_from_db()
    assert (item.status, item.requeue_count, item.attempt) == (S.QUEUED, 1, 2)
    event = WorkItemEvent.objects.filter(work_item=item, to_status=S.PENDING).get()
    assert (event.actor, event.reason) == ("user:op", "fixed the input")
    succeeded = item_running(agent)
    services.work_item_succeed(work_item_id=succeeded.pk, attempt=1, actor="t", result=None)
    assert not services.work_item_requeue(work_item_id=succeeded.pk, actor="user:op")


def test_every_transition_appends_one_event():
    agent = agent_create()
    item = item_running(agent)
    services.work_item_succeed(work_item_id=item.pk, attempt=1, actor="t", result=None)
    path = list(
        WorkItemEvent.objects.filter(work_item=item, kind=EventKind.TRANSITION).values_list("from_status", "to_status")
    )
    assert path == [(S.PENDING, S.QUEUED), (S.QUEUED, S.RUNNING), (S.RUNNING, S.SUCCEEDED)]


def test_database_constraints_hold_the_invariants():
    agent = agent_create()
    item = item_running(agent)
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkItem.objects.filter(pk=item.pk).update(status="exploded")
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkItem.objects.filter(pk=item.pk).update(lease_expires_at=None)  # running needs a lease
    with pytest.raises(IntegrityError), transaction.atomic():
        Attempt.objects.create(work_item=item, number=2, started_at=item.started_at)  # a second live attempt
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkItem.objects.filter(pk=item.pk).update(attempt=99)  # beyond max_attempts


def test_progress_and_charge_are_fenced():
    agent = agent_create()
    item = item_running(agent)
    assert services.work_item_progress_report(work_item_id=item.pk, attempt=1, fraction=1.7, message="m")
    assert services.work_item_charge(work_item_id=item.pk, attempt=1, amount=2.5)
    assert not services.work_item_progress_report(work_item_id=item.pk, attempt=2, fraction=0.5)
    item.refresh_from_db()
    assert (item.progress, item.progress_message, item.cost_total) == (1.0, "m", 2.5)
    with pytest.raises(ValidationError):
        services.work_item_charge(work_item_id=item.pk, attempt=1, amount=-1)
