"""Two threads attempt the same transition; exactly one wins (STYLE.md #13)."""

import threading

import pytest
from django.db import connection

from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkItemEvent
from supervision.services import supervisor_lease_try_acquire
from tests.factories import agent_create, item_claim, item_queued, item_running

pytestmark = pytest.mark.django_db(transaction=True)


def race(*calls):
    """Run the calls at the same moment in threads; return their results."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)
    errors = []

    def run(index, call):
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return results


@pytest.mark.parametrize("round_", range(5))
def test_two_agents_claim_the_same_attempt(broker, round_):
    a, b = agent_create("a"), agent_create("b")
    item = item_queued()
    results = race(lambda: bool(item_claim(item, a)), lambda: bool(item_claim(item, b)))
    assert sorted(results) == [False, True]
    assert Attempt.objects.filter(work_item=item).count() == 1
    assert WorkItemEvent.objects.filter(work_item=item, to_status="running").count() == 1


@pytest.mark.parametrize("round_", range(5))
def test_finish_races_cancel(broker, round_):
    agent = agent_create()
    item = item_running(agent)
    results = race(
        lambda: services.work_item_succeed(work_item_id=item.pk, attempt=1, actor="agent", result=None),
        lambda: services.work_item_cancel(work_item_id=item.pk, actor="user"),
    )
    assert sorted(results) == [False, True]
    final = WorkItem.objects.get(pk=item.pk).status
    assert final == ("succeeded" if results[0] else "cancelled")


def test_two_supervisors_take_the_lease(broker):
    results = race(*[lambda n=n: supervisor_lease_try_acquire(holder=f"s{n}") for n in range(4)])
    assert results.count(True) == 1
