"""Small builders for test data; they go through the services like production code."""

from __future__ import annotations

from django.db.models.functions import Now

from agents.models import Agent, AgentStatus
from scheduling import services
from scheduling.models import WorkItem


def agent_create(name: str = "agent-a", *, status: str = AgentStatus.ONLINE, pid: int = 4242) -> Agent:
    agent = Agent.objects.create(
        name=name,
        hostname="testhost",
        pid=pid,
        queues=["default", "cpu"],
        concurrency=2,
        status=status,
        last_heartbeat_at=Now(),
    )
    agent.refresh_from_db()
    return agent


def item_queued(work_type: str = "demo.sleep", payload: dict | None = None, **options) -> WorkItem:
    item = services.work_item_submit(work_type=work_type, payload=payload or {}, **options)
    services.work_items_release()
    item.refresh_from_db()
    assert item.status == "queued", item.status
    return item


def item_running(agent: Agent, work_type: str = "demo.sleep", **options) -> WorkItem:
    item = item_queued(work_type, **options)
    assert item_claim(item, agent)
    item.refresh_from_db()
    return item


def item_claim(item: WorkItem, agent: Agent, attempt: int | None = None) -> bool:
    return services.work_item_claim(
        work_item_id=item.pk,
        attempt=item.attempt if attempt is None else attempt,
        agent_id=agent.pk,
        agent_name=agent.name,
        worker_pid=99999,
        task_id=item.celery_task_id,
    )
