"""Reads about supervision for status, admin and dashboard."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Count

from project.dbclock import age_of
from supervision.models import Escalation, Intervention, SupervisorRun


def supervisor_last_run() -> dict[str, Any] | None:
    """The latest SupervisorRun with its age (DB clock) and whether it is overdue
    (older than three intervals)."""
    row = (
        SupervisorRun.objects.annotate(age=age_of("started_at"))
        .values("id", "started_at", "finished_at", "findings", "actions", "released", "error", "age")
        .first()
    )
    if row is None:
        return None
    age = row.pop("age").total_seconds()
    row["age_seconds"] = round(age, 1)
    row["silent"] = age > 3 * settings.SUPERVISOR_INTERVAL_SECONDS
    row["error"] = bool(row["error"])
    finished = row["finished_at"]
    row["duration_seconds"] = round((finished - row["started_at"]).total_seconds(), 3) if finished else None
    return row


def intervention_counts() -> list[dict[str, Any]]:
    """Interventions per monitor, action and outcome (rows are appended only)."""
    return list(Intervention.objects.order_by().values("monitor", "action", "outcome").annotate(n=Count("id")))


def supervisor_ticks_count() -> int:
    return SupervisorRun.objects.count()


def escalations_list(*, include_resolved: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    rows = Escalation.objects.all() if include_resolved else Escalation.objects.exclude(status="resolved")
    return list(
        rows.order_by("-id").values(
            "id",
            "problem",
            "subject",
            "status",
            "summary",
            "work_item_id",
            "opened_at",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "resolved_by",
            "notify_error",
        )[:limit]
    )


def escalations_open_by_problem() -> dict[str, int]:
    rows = Escalation.objects.exclude(status="resolved").order_by().values("problem").annotate(n=Count("id"))
    return {row["problem"]: row["n"] for row in rows}
