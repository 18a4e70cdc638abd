"""Reads about work items for status, admin and the commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum

from project.exceptions import NotFound
from scheduling.models import NON_TERMINAL_STATUSES, Attempt, AttemptOutcome, WorkItem, WorkItemStatus
from scheduling.routing import work_queue_names


def request_visible_to(user: Any, request_id: Any) -> Any:
    """The request if this user may see it (staff: any); NotFound otherwise."""
    from scheduling.models import Request

    requests = Request.objects.all() if user.is_staff else Request.objects.filter(submitted_by=user)
    try:
        return requests.get(pk=int(request_id))
    except (ValueError, TypeError, Request.DoesNotExist):
        raise NotFound(f"no request with id {request_id!r}") from None


def work_item_counts(user: Any = None) -> dict[str, int]:
    """Items per state, every state present (zero when empty); only the items
    `user` may see when a user is given."""
    items = WorkItem.objects.all() if user is None else work_items_visible_to(user)
    counts = dict.fromkeys(WorkItemStatus.values, 0)
    # COUNT(*), not COUNT(id): with no column outside the state index to read,
    # PostgreSQL counts from the index alone (a third of the time at 1M rows).
    for row in items.order_by().values("status").annotate(n=Count("*")):
        counts[row["status"]] = row["n"]
    return counts


def queue_depths() -> dict[str, dict[str, int]]:
    """Per queue: non-terminal items by state (pending is the DB backlog; queued +
    running is what the broker window holds)."""
    depths = {queue: dict.fromkeys(sorted(NON_TERMINAL_STATUSES), 0) for queue in work_queue_names()}
    rows = (
        WorkItem.objects.filter(status__in=NON_TERMINAL_STATUSES)
        .order_by()
        .values("queue", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        depths.setdefault(row["queue"], dict.fromkeys(sorted(NON_TERMINAL_STATUSES), 0))[row["status"]] = row["n"]
    return depths


def work_items_non_terminal_count() -> int:
    return WorkItem.objects.filter(status__in=NON_TERMINAL_STATUSES).count()


def work_items_visible_to(user: Any) -> QuerySet[WorkItem]:
    """Staff see every item; everyone else only what they submitted."""
    items = WorkItem.objects.all()
    return items if user.is_staff else items.filter(submitted_by=user)


def work_item_visible_to(user: Any, work_item_id: Any) -> WorkItem:
    """The item if this user may see it; NotFound otherwise (never says it exists)."""
    try:
        return work_items_visible_to(user).select_related("work_type", "agent").get(pk=int(work_item_id))
    except (ValueError, TypeError, WorkItem.DoesNotExist):
        raise NotFound(f"no work item with id {work_item_id!r}") from None


def work_item_counts_by_queue_type_state() -> list[dict[str, Any]]:
    """(queue, work_type, status, n) for every combination that has items: one
    grouped scan that metrics turn into per-queue and per-work-type figures. The
    columns are those of work_item_state_type_queue_idx, in its order, so the
    count reads that index alone instead of the table."""
    return list(WorkItem.objects.order_by().values("status", "work_type_id", "queue").annotate(n=Count("*")))


def attempt_counts_by_type_outcome() -> list[dict[str, Any]]:
    """Attempts per work type and outcome (attempts are appended, never rewritten
    once finished, so finished outcomes only grow)."""
    return list(Attempt.objects.order_by().values("work_item__work_type_id", "outcome").annotate(n=Count("id")))


def _bucket_counts(rows: QuerySet, span: Any, bounds: tuple[float, ...]) -> dict[str, Any]:
    """Cumulative counts of `span` (a duration expression) at or under each bound,
    with the total count and sum in seconds: a Prometheus histogram in one scan."""
    rows = rows.annotate(span=ExpressionWrapper(span, output_field=DurationField()))
    aggregates = {f"le_{i}": Count("pk", filter=Q(span__lte=timedelta(seconds=b))) for i, b in enumerate(bounds)}
    found = rows.aggregate(count=Count("pk"), total=Sum("span"), **aggregates)
    return {
        "buckets": [(bound, found[f"le_{i}"]) for i, bound in enumerate(bounds)],
        "count": found["count"],
        "sum_seconds": found["total"].total_seconds() if found["total"] else 0.0,
    }


def attempt_run_time_histogram(bounds: tuple[float, ...]) -> dict[str, Any]:
    """Run time of every finished attempt (claim to finish)."""
    return _bucket_counts(Attempt.objects.filter(finished_at__isnull=False), F("finished_at") - F("started_at"), bounds)


def queue_wait_histogram(bounds: tuple[float, ...]) -> dict[str, Any]:
    """Submit to first start, for every item that has started."""
    first_attempts = Attempt.objects.filter(number=1)
    return _bucket_counts(first_attempts, F("started_at") - F("work_item__created_at"), bounds)


def throughput_last_hour(user: Any = None, *, bucket_minutes: int = 5) -> list[dict[str, Any]]:
    """Finished attempts in the last hour per `bucket_minutes` (oldest first), split
    into succeeded and failed; only attempts of items `user` may see, if given."""
    from django.db.models.functions import TruncMinute

    from project.dbclock import db_now, now_minus

    attempts = Attempt.objects.filter(finished_at__gte=now_minus(3600)).exclude(outcome=AttemptOutcome.CANCELLED)
    if user is not None and not user.is_staff:
        attempts = attempts.filter(work_item__submitted_by=user)
    now = db_now().replace(second=0, microsecond=0)
    start = now - timedelta(minutes=60 - bucket_minutes)
    start = start - timedelta(minutes=start.minute % bucket_minutes)
    buckets = [
        {"at": start + timedelta(minutes=bucket_minutes * i), "succeeded": 0, "failed": 0}
        for i in range(60 // bucket_minutes + 1)
    ]
    rows = (
        attempts.annotate(minute=TruncMinute("finished_at"))
        .order_by()
        .values("minute", "outcome")
        .annotate(n=Count("id"))
    )
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // (60 * bucket_minutes))
        if 0 <= index < len(buckets):
            key = "succeeded" if row["outcome"] == AttemptOutcome.SUCCEEDED else "failed"
            buckets[index][key] += row["n"]
    return buckets


def work_item_timeline(item: WorkItem) -> list[dict[str, Any]]:
    """The item's events and the supervisor's interventions on it, in time order."""
    from supervision.models import Intervention

    entries = [
        {
            "at": event.at,
            "kind": event.kind,
            "title": f"{event.from_status} → {event.to_status}"
            if event.from_status != event.to_status
            else event.get_kind_display(),
            "attempt": event.attempt,
            "actor": event.actor,
            "detail": event.reason,
        }
        for event in item.events.all()
    ]
    entries += [
        {
            "at": intervention.at,
            "kind": "intervention",
            "title": f"supervisor: {intervention.monitor}/{intervention.rule} → {intervention.action}",
            "attempt": intervention.attempt,
            "actor": intervention.actor,
            "detail": intervention.evidence,
        }
        for intervention in Intervention.objects.filter(work_item=item)
    ]
    return sorted(entries, key=lambda entry: entry["at"])


def request_rollups(requests: list[Any]) -> dict[int, dict[str, Any]]:
    """Per request: counts per state, mean progress and one overall state, for a
    whole page of requests in one grouped query."""
    from django.db.models import Sum

    S = WorkItemStatus
    found: dict[int, dict[str, Any]] = {
        r.pk: {"counts": dict.fromkeys(S.values, 0), "progress_sum": 0.0} for r in requests
    }
    rows = (
        WorkItem.objects.filter(request_id__in=list(found))
        .order_by()
        .values("request_id", "status")
        .annotate(n=Count("id"), progress=Sum("progress"))
    )
    for row in rows:
        found[row["request_id"]]["counts"][row["status"]] = row["n"]
        found[row["request_id"]]["progress_sum"] += row["progress"] or 0.0
    for rollup in found.values():
        counts = rollup["counts"]
        total = sum(counts.values())
        rollup["total"] = total
        rollup["progress"] = round(rollup.pop("progress_sum") / total, 3) if total else 0.0
        unfinished = any(counts[s] for s in NON_TERMINAL_STATUSES)
        if total and counts[S.SUCCEEDED] == total:
            rollup["state"] = "succeeded"
        elif counts[S.DEAD] or counts[S.CANCELLED]:
            failed = "failed" if counts[S.DEAD] else "cancelled"
            rollup["state"] = failed + (" (items still running)" if unfinished else "")
        elif counts[S.PENDING] == total:
            rollup["state"] = "pending"
        else:
            rollup["state"] = "running"
    return found


def request_rollup(request: Any) -> dict[str, Any]:
    return request_rollups([request])[request.pk]


def request_graph(request: Any) -> dict[str, Any]:
    """Nodes (items with state) and edges, laid out in layers by dependency depth
    for drawing: a node's layer is one more than its deepest parent's."""
    from scheduling.models import Dependency

    nodes = list(request.items.order_by("id").values("id", "request_key", "work_type_id", "status", "progress"))
    edges = list(Dependency.objects.filter(child__request=request).values_list("parent_id", "child_id").order_by("id"))
    parents: dict[int, list[int]] = {node["id"]: [] for node in nodes}
    for parent, child in edges:
        parents[child].append(parent)
    depth: dict[int, int] = {}

    def layer_of(node_id: int) -> int:
        if node_id not in depth:
            depth[node_id] = 1 + max((layer_of(p) for p in parents[node_id]), default=-1)
        return depth[node_id]

    layers: dict[int, list[dict[str, Any]]] = {}
    for node in nodes:
        layers.setdefault(layer_of(node["id"]), []).append(node)
    return {"nodes": nodes, "edges": edges, "layers": [layers[i] for i in sorted(layers)]}
