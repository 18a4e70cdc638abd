"""Reads about agents."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Q

from agents.models import LIVE_AGENT_STATUSES, Agent, AgentStatus
from project.dbclock import age_of, now_minus


def agents_overview(*, stopped_within_seconds: float = 3600) -> list[dict[str, Any]]:
    """Live agents plus those that stopped recently, with heartbeat age from the DB clock."""
    rows = (
        Agent.objects.filter(Q(status__in=LIVE_AGENT_STATUSES) | Q(stopped_at__gte=now_minus(stopped_within_seconds)))
        .annotate(heartbeat_age=age_of("last_heartbeat_at"))
        .order_by("name", "-id")
        .values("id", "name", "status", "pid", "hostname", "queues", "concurrency", "capabilities", "heartbeat_age")
    )
    result = []
    for row in rows:
        age = row.pop("heartbeat_age")
        row["heartbeat_age_seconds"] = round(age.total_seconds(), 1)
        result.append(row)
    return result


def agents_capacity_by_queue(queues: Iterable[str]) -> dict[str, int]:
    """Pool processes of online agents per queue (agents are few; summed in Python)."""
    wanted = set(queues)
    capacity = dict.fromkeys(wanted, 0)
    for agent_queues, concurrency in Agent.objects.filter(status=AgentStatus.ONLINE).values_list(
        "queues", "concurrency"
    ):
        for queue in set(agent_queues) & wanted:
            capacity[queue] += concurrency
    return capacity


def agent_work_counts(agent_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per agent: items running now, attempts succeeded and failed."""
    from django.db.models import Count

    from scheduling.models import Attempt, AttemptOutcome

    counts = {pk: {"running": 0, "succeeded": 0, "failed": 0} for pk in agent_ids}
    rows = (
        Attempt.objects.filter(agent_id__in=agent_ids)
        .order_by()
        .values("agent_id")
        .annotate(
            running=Count("id", filter=Q(outcome=AttemptOutcome.RUNNING)),
            succeeded=Count("id", filter=Q(outcome=AttemptOutcome.SUCCEEDED)),
            failed=Count("id", filter=~Q(outcome__in=[AttemptOutcome.RUNNING, AttemptOutcome.SUCCEEDED])),
        )
    )
    for row in rows:
        counts[row.pop("agent_id")] = row
    return counts
