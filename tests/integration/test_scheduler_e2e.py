"""The scheduler with real agents on every broker: exact priorities, limits across
agents, capability routing and an autoscaling agent. Counted from Attempt rows."""

from __future__ import annotations

import pytest

from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkType
from supervision.models import Escalation
from supervision.services import supervisor_run_once
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def all_done(ids, *, platform, timeout: float = 120) -> None:
    wait_until(
        lambda: WorkItem.objects.filter(pk__in=ids, status="succeeded").count() == len(ids),
        timeout=timeout,
        what=f"{len(ids)} items to succeed",
        logs=platform,
    )


def max_overlap(intervals: list[tuple]) -> int:
    """Most attempts running at one instant (starts sort before ends at the same time)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: e)
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_priority_order_is_exact_with_one_agent(platform):
    """1,000 mixed-priority items submitted before the agent starts, one agent with
    one process: an item starts after a lower-priority one only when both were in
    the broker window together (2 per process, plus the 2 released before any agent
    registered); beyond that the starts follow priority exactly."""
    ids = services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 500, priority=2)
    ids += services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 300, priority=5)
    ids += services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 150, priority=8)
    ids += services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 50, priority=9)
    platform.start_worker("prio", queues="default", concurrency=1)
    all_done(ids, platform=platform, timeout=240)
    # One process claims one item at a time, so Attempt ids are the start order.
    started = list(
        Attempt.objects.filter(work_item_id__in=ids, outcome="succeeded")
        .order_by("id")
        .values_list("work_item__priority", flat=True)
    )
    assert len(started) == 1000
    window = 2 * 1 + 2
    seen_lower = dict.fromkeys(range(10), 0)  # items started so far, per priority
    worst = 0
    for priority in started:
        worst = max(worst, sum(n for p, n in seen_lower.items() if p < priority))
        seen_lower[priority] += 1
    assert worst <= window, f"an item started behind {worst} lower-priority items (window {window})"
    assert sorted(started[window:], reverse=True) == started[window:]


def test_concurrency_limit_holds_across_agents(platform):
    WorkType.objects.filter(name="demo.sleep").update(max_concurrency=2)
    platform.start_worker("limit-a", queues="default", concurrency=2)
    platform.start_worker("limit-b", queues="default", concurrency=2)
    ids = services.work_items_submit_ids(work_type="demo.sleep", payloads=[{"seconds": 0.3}] * 12)
    all_done(ids, platform=platform)
    intervals = list(Attempt.objects.filter(work_item_id__in=ids).values_list("started_at", "finished_at"))
    assert len(intervals) == 12
    assert max_overlap(intervals) == 2  # never more, and the limit, not the 4 processes, bound it


def test_rate_limit_holds_across_two_agents(platform):
    WorkType.objects.filter(name="demo.noop").update(rate_limit=4)
    platform.start_worker("rate-a", queues="default", concurrency=2)
    platform.start_worker("rate-b", queues="default", concurrency=2)
    ids = services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 16)
    all_done(ids, platform=platform, timeout=60)
    starts = sorted(Attempt.objects.filter(work_item_id__in=ids).values_list("started_at", flat=True))
    span = (starts[-1] - starts[0]).total_seconds()
    assert span >= 15 / 4 * 0.9, span  # 16 starts at 4/s take at least 3.75 s
    # In any one second at most 4 slots fall, plus one at the edge for a late start.
    busiest = max(sum(1 for other in starts if 0 <= (other - t).total_seconds() < 1) for t in starts)
    assert busiest <= 5, busiest


def test_items_needing_capabilities_run_only_on_agents_that_have_them(platform):
    gpu = platform.start_worker("gpu", queues="default", concurrency=2, env={"SHEPHERD_AGENT_CAPABILITIES": "gpu"})
    platform.start_worker("plain", queues="default", concurrency=2)
    gpu_agent = platform.agent_for(gpu)
    needs = services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 10, requirements=["gpu"])
    anyone = services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 10)
    all_done(needs + anyone, platform=platform)
    ran_on = set(Attempt.objects.filter(work_item_id__in=needs).values_list("agent_id", flat=True))
    assert ran_on == {gpu_agent.pk}

    gpu.stop()
    wait_until(
        lambda: (
            not WorkItem.objects.filter(status__in=["queued", "running"]).exists()
            and gpu_agent.__class__.objects.get(pk=gpu_agent.pk).status == "offline"
        ),
        timeout=30,
        what="the gpu agent to go offline",
        logs=platform,
    )
    (waiting,) = services.work_items_submit_ids(work_type="demo.noop", payloads=[{}], requirements=["gpu"])
    WorkItem.objects.filter(pk=waiting).update(
        created_at=WorkItem.objects.get(pk=waiting).created_at.replace(year=2000)
    )
    supervisor_run_once()
    assert WorkItem.objects.get(pk=waiting).status == "pending"
    assert Escalation.objects.filter(problem="no_capable_agent", subject="work_type:demo.noop").exists()

    platform.start_worker("gpu2", queues="default", concurrency=1, env={"SHEPHERD_AGENT_CAPABILITIES": "gpu,mem_gb=8"})
    supervisor_run_once()  # the tick releases what an agent arriving made runnable
    all_done([waiting], platform=platform, timeout=60)


def test_autoscaling_agent_registers_its_maximum_and_grows(platform):
    worker = platform.start_worker("auto", queues="default", concurrency=1, extra_args=["--autoscale=3,1"])
    agent = platform.agent_for(worker)
    assert agent.concurrency == 3
    ids = services.work_items_submit_ids(work_type="demo.sleep", payloads=[{"seconds": 1.5}] * 9)
    all_done(ids, platform=platform, timeout=120)
    intervals = list(Attempt.objects.filter(work_item_id__in=ids).values_list("started_at", "finished_at"))
    assert max_overlap(intervals) >= 2  # the pool grew past its minimum of 1
