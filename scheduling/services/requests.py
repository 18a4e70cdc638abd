"""Requests: many items with dependencies, validated whole and created all or none;
dependants are released when every parent succeeded and cancelled when one fails."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, Q

from project.exceptions import ValidationError
from scheduling import registry
from scheduling.models import Dependency, Request, WorkItem, WorkItemStatus
from scheduling.services import ordering
from scheduling.services.release import work_items_release
from scheduling.services.submission import _priority_check, _work_type_row
from scheduling.services.transitions import work_item_cancel

logger = logging.getLogger("scheduling.services")
S = WorkItemStatus
BLOCKED_BY_DEPENDENCIES = "dependencies"
MAX_REQUEST_ITEMS = 10_000


def _items_checked(spec: Any) -> list[dict[str, Any]]:
    """Every problem with a request spec, as one ValidationError naming the item."""
    if not isinstance(spec, dict):
        raise ValidationError("a request must be a JSON object with an 'items' list")
    registry.text_without_nul({k: v for k, v in spec.items() if k != "items"}, "the request")
    unknown = set(spec) - {"name", "items"}
    if unknown:
        raise ValidationError(f"unknown request field(s): {', '.join(sorted(unknown))}")
    items = spec.get("items")
    if not isinstance(items, list) or not items:
        raise ValidationError("a request needs a non-empty 'items' list")
    if len(items) > MAX_REQUEST_ITEMS:
        raise ValidationError(f"a request holds at most {MAX_REQUEST_ITEMS} items, not {len(items)}")
    checked, keys = [], set()
    for index, item in enumerate(items, start=1):
        where = f"item {index}"
        if not isinstance(item, dict):
            raise ValidationError(f"{where}: must be an object")
        extra = set(item) - {"key", "work_type", "payload", "priority", "depends_on"}
        if extra:
            raise ValidationError(f"{where}: unknown field(s): {', '.join(sorted(extra))}")
        key = item.get("key")
        if not isinstance(key, str) or not key.strip() or len(key) > 100:
            raise ValidationError(f"{where}: 'key' must be a non-empty string of at most 100 characters")
        registry.text_without_nul(key, f"{where}: 'key'")
        where = f"item {key!r}"
        if key in keys:
            raise ValidationError(f"{where}: the key is used twice")
        keys.add(key)
        spec_ = registry.work_type_spec(item.get("work_type", ""))
        if spec_.internal:
            raise ValidationError(f"{where}: work type {spec_.name!r} is internal and cannot be submitted")
        try:
            payload = registry.payload_validate(spec_, item.get("payload", {}))
        except ValidationError as error:
            raise ValidationError(f"{where}: {error}") from None
        priority = item.get("priority")
        if priority is not None:
            try:
                _priority_check(priority)
            except ValidationError as error:
                raise ValidationError(f"{where}: {error}") from None
        parents = item.get("depends_on", [])
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise ValidationError(f"{where}: 'depends_on' must be a list of item keys")
        if key in parents:
            raise ValidationError(f"{where}: an item cannot depend on itself")
        checked.append({"key": key, "spec": spec_, "payload": payload, "priority": priority, "parents": parents})
    for item in checked:
        missing = [p for p in item["parents"] if p not in keys]
        if missing:
            raise ValidationError(f"item {item['key']!r}: depends on unknown key(s): {', '.join(missing)}")
    _acyclic_check(checked)
    return checked


def _acyclic_check(items: list[dict[str, Any]]) -> None:
    """Kahn's algorithm: what never reaches in-degree zero sits on a cycle."""
    children: dict[str, list[str]] = {item["key"]: [] for item in items}
    waiting = {item["key"]: len(set(item["parents"])) for item in items}
    for item in items:
        for parent in set(item["parents"]):
            children[parent].append(item["key"])
    ready = [key for key, n in waiting.items() if n == 0]
    while ready:
        for child in children[ready.pop()]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    cyclic = sorted(key for key, n in waiting.items() if n > 0)
    if cyclic:
        raise ValidationError(f"the dependencies form a cycle through: {', '.join(cyclic)}")


def request_submit(
    *, spec: Any, submitted_by: Any = None, not_before: datetime | None = None, complete_by: datetime | None = None
) -> Request:
    """Validate a whole request ({"name", "items": [{"key", "work_type", "payload",
    "priority", "depends_on": [keys]}]}), then create its items and edges in one
    transaction. Any error rejects the whole request and creates nothing."""
    checked = _items_checked(spec)
    name = spec.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise ValidationError("'name' must be a string of at most 200 characters")
    rows = {item["spec"].name: _work_type_row(item["spec"].name) for item in checked}
    user_id = submitted_by.pk if getattr(submitted_by, "pk", None) else None
    with transaction.atomic():
        request = Request.objects.create(name=name, submitted_by_id=user_id)
        per_queue = Counter(item["spec"].queue for item in checked)
        turns = {
            queue: iter(range(ordering.fair_seq_start(queue=queue, submitted_by_id=user_id, count=n), 2**62))
            for queue, n in per_queue.items()
        }
        items = []
        for item in checked:
            row = rows[item["spec"].name]
            priority = row.priority if item["priority"] is None else item["priority"]
            items.append(
                WorkItem(
                    request=request,
                    request_key=item["key"],
                    work_type_id=item["spec"].name,
                    queue=item["spec"].queue,
                    payload=item["payload"],
                    priority=priority,
                    effective_priority=priority,
                    aging_due_at=ordering.aging_due_at(effective_priority=priority),
                    urgent_at=ordering.urgent_at(complete_by=complete_by, typical_run_seconds=row.typical_run_seconds),
                    fair_seq=next(turns[item["spec"].queue]),
                    requirements=ordering.requirements_text(row.capabilities or []),
                    max_attempts=row.max_attempts,
                    submitted_by_id=user_id,
                    not_before=not_before,
                    complete_by=complete_by,
                    blocked_reason=BLOCKED_BY_DEPENDENCIES if item["parents"] else "",
                )
            )
        created = WorkItem.objects.bulk_create(items)
        ids = {item["key"]: row.pk for item, row in zip(checked, created, strict=True)}
        Dependency.objects.bulk_create(
            Dependency(child_id=ids[item["key"]], parent_id=ids[parent])
            for item in checked
            for parent in set(item["parents"])
        )
        queues = sorted({item["spec"].queue for item in checked})
        transaction.on_commit(lambda: work_items_release(queues=queues, retries_due=False))
    return request


def dependants_advance(*, parent_ids: Iterable[int] | None = None, actor: str = "scheduler") -> int:
    """Unblock dependants whose parents all succeeded; cancel the dependants of a
    parent that ended dead or cancelled (their own dependants follow on the next
    pass). Called after finishes and by every tick; returns how many items moved."""
    blocked = WorkItem.objects.filter(status=S.PENDING, blocked_reason=BLOCKED_BY_DEPENDENCIES)
    if parent_ids is not None:
        # Narrow by id first: filtering and counting over the same relation in one
        # queryset would count only the links the filter matched.
        children = Dependency.objects.filter(parent_id__in=list(parent_ids)).values("child_id")
        blocked = blocked.filter(pk__in=children)
    candidates = list(
        blocked.annotate(
            parents=Count("parent_links", distinct=True),
            done=Count("parent_links", filter=Q(parent_links__parent__status=S.SUCCEEDED), distinct=True),
            failed=Count(
                "parent_links",
                filter=Q(parent_links__parent__status__in=[S.DEAD, S.CANCELLED]),
                distinct=True,
            ),
        ).values("id", "queue", "parents", "done", "failed")[:1000]
    )
    moved, queues = 0, set()
    for row in candidates:
        if row["failed"]:
            failed_parent = (
                Dependency.objects.filter(child_id=row["id"], parent__status__in=[S.DEAD, S.CANCELLED])
                .values_list("parent_id", "parent__status")
                .first()
            )
            reason = (
                f"dependency #{failed_parent[0]} ended {failed_parent[1]}" if failed_parent else "dependency failed"
            )
            moved += work_item_cancel(work_item_id=row["id"], actor=actor, reason=reason)
        elif row["done"] == row["parents"]:
            moved += WorkItem.objects.filter(
                pk=row["id"], status=S.PENDING, blocked_reason=BLOCKED_BY_DEPENDENCIES
            ).update(blocked_reason="")
            queues.add(row["queue"])
    if queues:
        transaction.on_commit(lambda: work_items_release(queues=sorted(queues), retries_due=False))
    # A cancellation can unblock nothing but may cancel grandchildren: follow it now.
    if moved and any(row["failed"] for row in candidates):
        moved += dependants_advance(parent_ids=[row["id"] for row in candidates if row["failed"]], actor=actor)
    return moved
