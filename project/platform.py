"""The platform at a glance, from all three roles: `status --json`, the API and the dashboard share it."""

from __future__ import annotations

from typing import Any

from agents.selectors import agents_overview
from scheduling.blocking import pending_reason_counts
from scheduling.selectors import queue_depths, work_item_counts
from supervision.selectors import supervisor_last_run


def platform_status(user: Any = None) -> dict[str, Any]:
    """Counts per state (only `user`'s items unless staff or no user), depth per
    queue with why its pending items wait, agents with heartbeat age, and the
    last supervisor run."""
    return {
        "counts": work_item_counts(None if user is None or user.is_staff else user),
        "queues": queue_depths(),
        "waiting": pending_reason_counts(),
        "agents": agents_overview(),
        "supervisor": supervisor_last_run(),
    }
