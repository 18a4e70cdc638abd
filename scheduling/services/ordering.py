"""What a new item carries for the release order: fair-share turn, deadline urgency, requirements.

The release takes pending items of a queue by (effective priority desc, urgent_at
asc with no deadline last, fair_seq, id), all stored columns, so one index scan
gives the order however large the backlog is:

- **Effective priority** starts at the priority; the supervisor ages it (one level
  per SHEPHERD_PRIORITY_AGING_SECONDS waited, up to 9), so low priority work is not
  starved by a stream of higher priority work.
- **Deadline urgency**: `urgent_at` is complete_by minus the work type's typical run
  time, the latest start that still meets the deadline; earliest first.
- **Fair share** (start-time fair queueing): each queue keeps a virtual clock, the
  fair_seq of the latest item released. A submitter's new items take the turns
  after max(that clock, their own last turn), so a submitter arriving behind a large
  backlog of someone else's alternates with it instead of waiting for all of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Avg, Case, F, Value, When
from django.db.models.functions import Least, Now
from django.utils import timezone

from project.dbclock import now_minus
from project.exceptions import ValidationError
from scheduling.capabilities import requirement_parse
from scheduling.models import Attempt, AttemptOutcome, WorkItem, WorkItemStatus, WorkType
from scheduling.services import statements

S = WorkItemStatus


def fair_seq_start(*, queue: str, submitted_by_id: int | None, count: int) -> int:
    """Reserve `count` consecutive fair-share turns for one submitter in `queue`;
    returns the first. One upsert, so concurrent submissions by the same submitter
    take disjoint turns."""
    sql, params = statements.fair_seq_upsert(queue=queue, submitter_key=submitted_by_id or 0, count=count)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        last = cursor.fetchone()[0]
    return last - count + 1


def urgent_at(*, complete_by: datetime | None, typical_run_seconds: float | None) -> datetime | None:
    """The latest start that still meets `complete_by`, given the type's typical run time."""
    if complete_by is None:
        return None
    return complete_by - timedelta(seconds=typical_run_seconds or 0)


def aging_due_at(*, effective_priority: int) -> datetime | None:
    """When an item submitted now first ages a level (empty at 9 or with aging off)."""
    aging = settings.SHEPHERD_PRIORITY_AGING_SECONDS
    if aging <= 0 or effective_priority >= 9:
        return None
    return timezone.now() + timedelta(seconds=aging)


def work_items_age(*, limit: int = 5000) -> int:
    """Raise the effective priority of pending items that waited another aging step
    (the supervisor calls this each tick). Reads only the due rows, by index."""
    aging = settings.SHEPHERD_PRIORITY_AGING_SECONDS
    if aging <= 0:
        return 0
    with transaction.atomic():
        due = list(
            WorkItem.objects.filter(status=S.PENDING, aging_due_at__lte=Now()).values_list("id", flat=True)[:limit]
        )
        if not due:
            return 0
        return WorkItem.objects.filter(pk__in=due, status=S.PENDING).update(
            effective_priority=Least(F("effective_priority") + 1, Value(9)),
            aging_due_at=Case(
                When(effective_priority__gte=8, then=Value(None)),
                default=F("aging_due_at") + timedelta(seconds=aging),
            ),
        )


_typical_refreshed: list[float] = [0.0]


def work_types_typical_refresh(*, every_seconds: float = 60, window_seconds: float = 900) -> int:
    """Refresh each work type's typical run time (mean of successful attempts that
    finished in the last `window_seconds`) at most once per `every_seconds` per
    process; deadline urgency of new items uses it. Returns the types updated."""
    now = time.monotonic()
    if _typical_refreshed[0] > now:
        return 0
    _typical_refreshed[0] = now + every_seconds
    rows = (
        Attempt.objects.filter(
            finished_at__gte=now_minus(window_seconds), outcome=AttemptOutcome.SUCCEEDED, started_at__isnull=False
        )
        .values("work_item__work_type_id")
        .annotate(mean=Avg(F("finished_at") - F("started_at")))
    )
    updated = 0
    for row in rows:
        seconds = row["mean"].total_seconds() if row["mean"] is not None else None
        if seconds is not None:
            updated += WorkType.objects.filter(name=row["work_item__work_type_id"]).update(
                typical_run_seconds=round(seconds, 3)
            )
    return updated


def requirements_text(*declared: Iterable[str]) -> str:
    """One canonical text of requirements (sorted, unique, comma-separated), as stored on items."""
    return ",".join(sorted({tag.strip() for tags in declared for tag in tags if tag.strip()}))


def requirements_split(text: str) -> list[str]:
    return [tag for tag in text.split(",") if tag]


def requirements_clean(value: Any) -> list[str]:
    """Validate item requirements given by a user: a list of `name` or `name=value` tags."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(tag, str) for tag in value):
        raise ValidationError("requirements must be a list of capability tags such as 'gpu' or 'mem_gb=16'")
    cleaned = []
    for tag in value:
        try:
            name, wanted = requirement_parse(tag)
        except ValueError as error:
            raise ValidationError(f"requirement {tag!r}: {error}") from None
        cleaned.append(name if wanted is None else f"{name}={wanted}")
    if len(requirements_text(cleaned)) > 400:
        raise ValidationError("requirements are too long (at most 400 characters together)")
    return cleaned
