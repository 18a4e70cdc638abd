"""The supervisor's monitors acting on real agents: a stalled item is escalated,
revoked and retried, then dead-lettered; an item over its cost budget is stopped."""

import pytest

from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkType
from supervision.models import Escalation, Intervention
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_stalled_item_is_escalated_then_retried_then_dead_lettered(platform):
    WorkType.objects.filter(name="demo.stuck").update(stall_after=2, max_stalls=2)
    platform.start_worker("stall", queues="default", concurrency=2)
    platform.start_supervisor_loop()
    item = services.work_item_submit(work_type="demo.stuck", payload={"seconds": 120})
    healthy = services.work_item_submit(work_type="demo.progress", payload={"steps": 8, "step_seconds": 0.5})

    wait_until(
        lambda: (
            WorkItem.objects.filter(pk=item.pk, status="dead").exists()
            and Intervention.objects.filter(work_item=item, action="dead_letter").exists()
        ),
        timeout=120,
        what="the stalled item to be dead-lettered",
        logs=platform,
    )
    steps = list(Intervention.objects.filter(work_item=item).order_by("id").values_list("action", flat=True))
    assert steps == ["escalate", "retry", "escalate", "dead_letter"], steps
    outcomes = list(Attempt.objects.filter(work_item=item).order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["stalled", "failed"]
    escalation = Escalation.objects.get(work_item=item)  # one unresolved escalation per item and problem
    assert escalation.problem == "stalled" and escalation.status == "open"
    wait_until(
        lambda: WorkItem.objects.filter(pk=healthy.pk, status="succeeded").exists(),
        timeout=60,
        what="the progressing item to succeed",
        logs=platform,
    )
    assert not Intervention.objects.filter(work_item=healthy).exists()  # progressing work is left alone


def test_item_over_its_cost_budget_is_stopped_and_escalated(platform):
    platform.start_worker("budget", queues="default", concurrency=1)
    platform.start_supervisor_loop()
    item = services.work_item_submit(
        work_type="demo.progress",
        payload={"steps": 100, "step_seconds": 0.2, "cost_per_step": 1},
        budget_cost=10,
    )
    # The escalation is written just after the dead-letter commits: wait for both.
    wait_until(
        lambda: WorkItem.objects.filter(pk=item.pk, status="dead").exists() and Escalation.objects.exists(),
        timeout=60,
        what="the item to be stopped over budget and escalated",
        logs=platform,
    )
    item.refresh_from_db()
    assert item.error.startswith("budget_exceeded") and 10 < item.cost_total < 30
    assert item.progress < 0.5  # stopped long before it finished its 100 steps
    assert Escalation.objects.get(work_item=item).problem == "budget_exceeded"
