"""Draining a real agent: it finishes what it runs and takes nothing new until resumed."""

import time

import pytest

from agents.models import Agent
from agents.services import agent_drain, agent_resume
from scheduling import services
from scheduling.models import WorkItem
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_a_drained_agent_finishes_its_item_and_takes_no_more_until_resumed(platform):
    worker = platform.start_worker("drainee", queues="default", concurrency=1)
    agent = platform.agent_for(worker)
    running = services.work_item_submit(work_type="demo.sleep", payload={"seconds": 2})
    wait_until(lambda: WorkItem.objects.filter(pk=running.pk, status="running").exists(), timeout=30, what="start")
    # Give the broadcast time to reach the worker before new messages are published.
    assert agent_drain(agent_id=agent.pk)
    time.sleep(2)
    waiting = [i.pk for i in services.work_items_submit(work_type="demo.noop", payloads=[{}] * 3)]
    wait_until(
        lambda: WorkItem.objects.filter(pk=running.pk, status="succeeded").exists(),
        timeout=30,
        what="the running item to finish while draining",
        logs=platform,
    )
    time.sleep(3)
    assert not WorkItem.objects.filter(pk__in=waiting, status__in=["running", "succeeded"]).exists()
    assert Agent.objects.get(pk=agent.pk).status == "draining"

    assert agent_resume(agent_id=agent.pk)
    wait_until(
        lambda: WorkItem.objects.filter(pk__in=waiting, status="succeeded").count() == 3,
        timeout=60,
        what="the waiting items to run after resume",
        logs=platform,
    )
