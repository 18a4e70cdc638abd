"""A stalled item is retried on another agent when one is live."""

import pytest

from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkType
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_a_stalled_items_retry_runs_on_another_agent(platform):
    WorkType.objects.filter(name="demo.stuck").update(stall_after=2, max_stalls=3)
    # Two processes, so the first agent has a free one when the retry arrives.
    first = platform.start_worker("first", queues="default", concurrency=2)
    platform.start_supervisor_loop()
    item = services.work_item_submit(work_type="demo.stuck", payload={"seconds": 120})
    wait_until(lambda: WorkItem.objects.filter(pk=item.pk, status="running").exists(), timeout=30, what="start")
    platform.start_worker("second", queues="default", concurrency=1)
    wait_until(
        lambda: (
            Attempt.objects.filter(work_item=item, number=2).exclude(outcome="running").exists()
            or Attempt.objects.filter(work_item=item, number=2, outcome="running").exists()
        ),
        timeout=60,
        what="the retry to start",
        logs=platform,
    )
    first_agent = platform.agent_for(first)
    attempts = dict(Attempt.objects.filter(work_item=item).values_list("number", "agent__name"))
    assert attempts[1] == first_agent.name
    assert attempts[2] != first_agent.name and attempts[2].startswith("second@"), attempts
    services.work_item_cancel(work_item_id=item.pk, actor="test")
