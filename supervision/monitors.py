"""Monitors: reads that return findings. They decide nothing and write nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, Max, OuterRef, Q
from django.db.models.functions import Now

from agents.models import GONE_AGENT_STATUSES, LIVE_AGENT_STATUSES, Agent
from agents.selectors import agents_capacity_by_queue
from project.dbclock import age_of, age_of_first, db_now, now_minus
from scheduling.capabilities import capabilities_missing
from scheduling.models import NON_TERMINAL_STATUSES, Attempt, AttemptOutcome, WorkItem, WorkItemStatus, WorkType
from scheduling.services.ordering import requirements_split
from scheduling.services.release import CapableAgents, capable_agents_loader
from supervision.models import Intervention, SupervisorRun

SCAN_LIMIT = 500  # per monitor per tick, so one tick stays short however much is wrong


@dataclass(frozen=True)
class Finding:
    monitor: str
    rule: str
    evidence: dict[str, Any] = field(default_factory=dict)
    work_item_id: int | None = None
    attempt: int | None = None
    agent_id: int | None = None


@dataclass(frozen=True)
class Live:
    """What exists at the start of a tick, so the tick skips the monitors that
    cannot find anything (most of them, on a quiet platform)."""

    running: bool = True
    retry_wait: bool = True
    queued: bool = True
    pending: bool = True
    blocked: bool = True  # pending on dependencies
    deadline: bool = True  # unfinished with a complete_by
    stall_types: bool = True  # a work type with stall_after
    capability_types: bool = True  # a work type that needs capabilities
    needs_capabilities: bool = True  # a pending item that needs capabilities
    aging_due: bool = True  # a pending item whose effective priority is due to rise


def live_census(*, run_id: int) -> Live:
    """One query of EXISTS probes, each answered from a partial or leading-column
    index in about the same time at 1,000 or 1,000,000 stored items. An item that
    becomes live just after the census is seen by the next tick, as it would be
    if it had changed just after its monitor's query."""
    from scheduling.services.requests import BLOCKED_BY_DEPENDENCIES

    items = WorkItem.objects.all()
    probes = {
        "running": items.filter(status=WorkItemStatus.RUNNING),
        "retry_wait": items.filter(status=WorkItemStatus.RETRY_WAIT),
        "queued": items.filter(status=WorkItemStatus.QUEUED),
        "pending": items.filter(status=WorkItemStatus.PENDING),
        "blocked": items.filter(status=WorkItemStatus.PENDING, blocked_reason=BLOCKED_BY_DEPENDENCIES),
        "deadline": items.filter(status__in=NON_TERMINAL_STATUSES, complete_by__isnull=False),
        "stall_types": WorkType.objects.filter(stall_after__isnull=False),
        "capability_types": WorkType.objects.exclude(capabilities=[]),
        "needs_capabilities": items.filter(status=WorkItemStatus.PENDING).exclude(requirements=""),
        "aging_due": items.filter(status=WorkItemStatus.PENDING, aging_due_at__lte=Now()),
    }
    # Hung on this tick's own SupervisorRun row: Django has no FROM-less SELECT.
    row = (
        SupervisorRun.objects.filter(pk=run_id)
        .annotate(**{name: Exists(query.order_by().values("pk")) for name, query in probes.items()})
        .values(*probes)
        .first()
    )
    return Live() if row is None else Live(**row)


def _seconds(duration) -> float | None:
    return None if duration is None else round(duration.total_seconds(), 3)


def agents_stale(*, older_than: float) -> list[Finding]:
    """Live agents whose heartbeat is older than `older_than` seconds (DB clock)."""
    rows = (
        Agent.objects.filter(status__in=LIVE_AGENT_STATUSES, last_heartbeat_at__lt=now_minus(older_than))
        .annotate(age=age_of("last_heartbeat_at"))
        .values("id", "name", "pid", "age")[:SCAN_LIMIT]
    )
    return [
        Finding(
            monitor="health",
            rule="heartbeat_stale",
            agent_id=row["id"],
            evidence={
                "agent": row["name"],
                "pid": row["pid"],
                "heartbeat_age_s": _seconds(row["age"]),
                "dead_after_s": older_than,
            },
        )
        for row in rows
    ]


def work_items_orphaned() -> list[Finding]:
    """Running items whose agent is lost or went offline while holding them."""
    rows = WorkItem.objects.filter(status=WorkItemStatus.RUNNING, agent__status__in=GONE_AGENT_STATUSES).values(
        "id", "attempt", "agent_id", "agent__name", "agent__status"
    )[:SCAN_LIMIT]
    return [
        Finding(
            monitor="health",
            rule="agent_lost",
            work_item_id=row["id"],
            attempt=row["attempt"],
            agent_id=row["agent_id"],
            evidence={"agent": row["agent__name"], "agent_status": row["agent__status"]},
        )
        for row in rows
    ]


def work_items_lease_expired() -> list[Finding]:
    """Running items whose lease lapsed while their agent still beats: a wedged process."""
    rows = (
        WorkItem.objects.filter(
            status=WorkItemStatus.RUNNING, lease_expires_at__lt=Now(), agent__status__in=LIVE_AGENT_STATUSES
        )
        .annotate(overdue=age_of("lease_expires_at"), since_beat=age_of("heartbeat_at"))
        .values("id", "attempt", "agent_id", "agent__name", "overdue", "since_beat")[:SCAN_LIMIT]
    )
    return [
        Finding(
            monitor="lease",
            rule="lease_expired",
            work_item_id=row["id"],
            attempt=row["attempt"],
            agent_id=row["agent_id"],
            evidence={
                "agent": row["agent__name"],
                "lease_overdue_s": _seconds(row["overdue"]),
                "item_heartbeat_age_s": _seconds(row["since_beat"]),
            },
        )
        for row in rows
    ]


def work_items_unclaimed(*, older_than: float) -> list[Finding]:
    """Queued items whose message looks lost: unclaimed for `older_than` seconds *and*
    either the queue's live agents have a free process, or an item dispatched later
    to the same queue is already running. An item merely waiting its turn behind
    busy agents is neither, so it is not published again."""
    candidates = list(
        WorkItem.objects.filter(status=WorkItemStatus.QUEUED, dispatched_at__lt=now_minus(older_than))
        .annotate(waiting=age_of("dispatched_at"))
        .order_by("dispatched_at")
        .values("id", "attempt", "queue", "dispatched_at", "waiting")[:SCAN_LIMIT]
    )
    if not candidates:
        return []
    queues = {row["queue"] for row in candidates}
    running = {
        row["queue"]: row
        for row in WorkItem.objects.filter(status=WorkItemStatus.RUNNING, queue__in=queues)
        .order_by()
        .values("queue")
        .annotate(n=Count("id"), newest=Max("dispatched_at"))
    }
    capacity = agents_capacity_by_queue(queues)
    findings = []
    for row in candidates:
        busy = running.get(row["queue"], {"n": 0, "newest": None})
        idle = capacity[row["queue"]] - busy["n"]
        overtaken = busy["newest"] is not None and busy["newest"] > row["dispatched_at"]
        if idle <= 0 and not overtaken:
            continue
        findings.append(
            Finding(
                monitor="dispatch",
                rule="unclaimed",
                work_item_id=row["id"],
                attempt=row["attempt"],
                evidence={
                    "queue": row["queue"],
                    "unclaimed_s": _seconds(row["waiting"]),
                    "redispatch_after_s": older_than,
                    "idle_processes": max(idle, 0),
                    "overtaken_by_later_item": overtaken,
                },
            )
        )
    return findings


def _escalated_attempts(rule: str, item_ids: list[int]) -> set[tuple[int, int]]:
    """(item, attempt) pairs that already have an Intervention for `rule`."""
    return set(Intervention.objects.filter(work_item_id__in=item_ids, rule=rule).values_list("work_item_id", "attempt"))


def work_items_stalled(*, agent_dead_after: float) -> list[Finding]:
    """Running items whose progress has not changed within their work type's
    stall_after, while both their agent and the item itself still beat: alive but
    not progressing. (A dead agent is the health monitor's; an item that stopped
    renewing its lease is the lease monitor's.) Evidence keeps the three clocks."""
    rows = list(
        WorkItem.objects.filter(
            status=WorkItemStatus.RUNNING,
            work_type__stall_after__isnull=False,
            agent__status__in=LIVE_AGENT_STATUSES,
            agent__last_heartbeat_at__gte=now_minus(agent_dead_after),
            lease_expires_at__gte=Now(),
        )
        .annotate(
            progress_age=age_of_first("progress_at", "started_at"),
            item_beat_age=age_of("heartbeat_at"),
            agent_beat_age=age_of("agent__last_heartbeat_at"),
        )
        .values(
            "id",
            "attempt",
            "agent_id",
            "agent__name",
            "progress",
            "work_type__stall_after",
            "work_type__max_stalls",
            "progress_age",
            "item_beat_age",
            "agent_beat_age",
        )[:SCAN_LIMIT]
    )
    stalled = [row for row in rows if row["progress_age"].total_seconds() > row["work_type__stall_after"]]
    if not stalled:
        return []
    ids = [row["id"] for row in stalled]
    escalated = _escalated_attempts("stalled", ids)
    stalls_before = dict(
        Attempt.objects.filter(work_item_id__in=ids, outcome=AttemptOutcome.STALLED)
        .order_by()
        .values("work_item_id")
        .annotate(n=Count("id"))
        .values_list("work_item_id", "n")
    )
    return [
        Finding(
            monitor="progress",
            rule="stalled",
            work_item_id=row["id"],
            attempt=row["attempt"],
            agent_id=row["agent_id"],
            evidence={
                "agent": row["agent__name"],
                "progress": row["progress"],
                "progress_age_s": _seconds(row["progress_age"]),
                "item_heartbeat_age_s": _seconds(row["item_beat_age"]),
                "agent_heartbeat_age_s": _seconds(row["agent_beat_age"]),
                "stall_after_s": row["work_type__stall_after"],
                "escalated": (row["id"], row["attempt"]) in escalated,
                "stalls_before": stalls_before.get(row["id"], 0),
                "max_stalls": row["work_type__max_stalls"],
            },
        )
        for row in stalled
    ]


def _budget(item: dict, name: str) -> float | None:
    own = item[name]
    return own if own is not None else item[f"work_type__{name}"]


def work_items_over_budget(*, warn_at: float = 0.8) -> list[Finding]:
    """Running and retry-waiting items against their budgets (the item's own, else
    the work type's): run time of this attempt, run time across attempts, and
    charged cost across attempts. Over a budget: `over_budget`; past `warn_at` of
    one: `budget_warning`."""
    names = ("budget_seconds", "budget_seconds_total", "budget_cost")
    has_budget = Q()
    for name in names:
        has_budget |= Q(**{f"{name}__isnull": False}) | Q(**{f"work_type__{name}__isnull": False})
    items = list(
        WorkItem.objects.filter(has_budget, status__in=[WorkItemStatus.RUNNING, WorkItemStatus.RETRY_WAIT]).values(
            "id", "attempt", "status", "cost_total", *names, *(f"work_type__{n}" for n in names)
        )[:SCAN_LIMIT]
    )
    if not items:
        return []
    now = db_now()
    spent: dict[int, float] = {}
    current: dict[int, float] = {}
    for work_item_id, started, finished in Attempt.objects.filter(
        work_item_id__in=[item["id"] for item in items]
    ).values_list("work_item_id", "started_at", "finished_at"):
        seconds = ((finished or now) - started).total_seconds()
        spent[work_item_id] = spent.get(work_item_id, 0.0) + seconds
        if finished is None:
            current[work_item_id] = seconds
    findings = []
    for item in items:
        used = {
            "budget_seconds": current.get(item["id"]),
            "budget_seconds_total": spent.get(item["id"], 0.0),
            "budget_cost": item["cost_total"],
        }
        over, warn = [], []
        for name in names:
            limit, value = _budget(item, name), used[name]
            if limit is None or value is None:
                continue
            if value > limit:
                over.append({"budget": name, "used": round(value, 3), "limit": limit})
            elif value >= warn_at * limit:
                warn.append({"budget": name, "used": round(value, 3), "limit": limit})
        base = {"work_item_id": item["id"], "attempt": item["attempt"]}
        if over:
            findings.append(
                Finding(monitor="budget", rule="over_budget", evidence={"over": over, "status": item["status"]}, **base)
            )
        elif warn:
            findings.append(Finding(monitor="budget", rule="budget_warning", evidence={"near": warn}, **base))
    return findings


def work_items_past_deadline() -> list[Finding]:
    """Unfinished items past their complete_by that the supervisor has not acted on yet."""
    acted = Intervention.objects.filter(work_item_id=OuterRef("pk"), rule="deadline_missed")
    rows = (
        WorkItem.objects.filter(status__in=NON_TERMINAL_STATUSES, complete_by__lt=Now())
        .filter(~Exists(acted))
        .annotate(late=age_of("complete_by"))
        .values("id", "attempt", "status", "complete_by", "late", "work_type__deadline_action")[:SCAN_LIMIT]
    )
    return [
        Finding(
            monitor="deadline",
            rule="deadline_missed",
            work_item_id=row["id"],
            attempt=row["attempt"],
            evidence={
                "status": row["status"],
                "complete_by": row["complete_by"].isoformat(),
                "late_s": _seconds(row["late"]),
                "deadline_action": row["work_type__deadline_action"],
            },
        )
        for row in rows
    ]


def work_items_poison(*, lost_at_least: int) -> list[Finding]:
    """Unfinished, not running items whose agent (or pool process) was lost
    `lost_at_least` times while running them: the item itself is likely what kills it."""
    rows = (
        Attempt.objects.filter(
            outcome=AttemptOutcome.LOST,
            work_item__status__in=[WorkItemStatus.PENDING, WorkItemStatus.QUEUED, WorkItemStatus.RETRY_WAIT],
        )
        .order_by()
        .values("work_item_id", "work_item__attempt")
        .annotate(lost=Count("id"))
        .filter(lost__gte=lost_at_least)[:SCAN_LIMIT]
    )
    return [
        Finding(
            monitor="violation",
            rule="poison",
            work_item_id=row["work_item_id"],
            attempt=row["work_item__attempt"],
            evidence={"lost_attempts": row["lost"], "poison_after_lost": lost_at_least},
        )
        for row in rows
    ]


def work_types_failing(*, window_seconds: float, min_attempts: int, threshold: float) -> list[Finding]:
    """Unpaused work types whose attempts finished in the window failed at `threshold` or more.

    Attempts lost with their whole agent (now lost or offline) are left out: a dead
    host says nothing about the work type, and counting them paused every type that
    had twenty items on one agent when it died (found by bench B4). Attempts whose
    pool process died under a live agent still count; so do poison items."""
    failed = [AttemptOutcome.FAILED, AttemptOutcome.LOST, AttemptOutcome.TIMED_OUT, AttemptOutcome.STALLED]
    rows = (
        Attempt.objects.filter(finished_at__gte=now_minus(window_seconds), work_item__work_type__paused=False)
        .exclude(outcome=AttemptOutcome.CANCELLED)
        .exclude(outcome=AttemptOutcome.LOST, agent__status__in=GONE_AGENT_STATUSES)
        .order_by()
        .values("work_item__work_type_id")
        .annotate(finished=Count("id"), failed=Count("id", filter=Q(outcome__in=failed)))
        .filter(finished__gte=min_attempts)
    )
    return [
        Finding(
            monitor="violation",
            rule="failure_rate",
            evidence={
                "work_type": row["work_item__work_type_id"],
                "finished": row["finished"],
                "failed": row["failed"],
                "failure_rate": round(row["failed"] / row["finished"], 3),
                "threshold": threshold,
                "window_s": window_seconds,
            },
        )
        for row in rows
        if row["failed"] / row["finished"] >= threshold
    ]


def attempts_outside_capabilities() -> list[Finding]:
    """Running attempts whose agent did not declare a capability their work type
    requires, not yet recorded."""
    rows = list(
        WorkItem.objects.filter(status=WorkItemStatus.RUNNING)
        .exclude(work_type__capabilities=[])
        .values("id", "attempt", "agent_id", "agent__name", "agent__capabilities", "work_type__capabilities")[
            :SCAN_LIMIT
        ]
    )
    recorded = _escalated_attempts("capability", [row["id"] for row in rows])
    findings = []
    for row in rows:
        missing = capabilities_missing(row["agent__capabilities"] or [], row["work_type__capabilities"] or [])
        if missing and (row["id"], row["attempt"]) not in recorded:
            findings.append(
                Finding(
                    monitor="violation",
                    rule="capability",
                    work_item_id=row["id"],
                    attempt=row["attempt"],
                    agent_id=row["agent_id"],
                    evidence={"agent": row["agent__name"], "missing": missing},
                )
            )
    return findings


def work_items_without_capable_agent(*, older_than: float) -> list[Finding]:
    """Pending items (waiting over `older_than` s) that need capabilities no online
    agent of their queue has: one finding per work type and requirement set, unless
    that work type's no_capable_agent escalation is still unresolved."""
    from supervision.models import Escalation

    groups = list(
        WorkItem.objects.filter(status=WorkItemStatus.PENDING, created_at__lt=now_minus(older_than), blocked_reason="")
        .exclude(requirements="")
        .order_by()
        .values("queue", "work_type_id", "requirements")
        .annotate(pending=Count("id"))[:SCAN_LIMIT]
    )
    if not groups:
        return []
    agents: dict[str, CapableAgents] = {}  # per queue, read when first needed
    open_types = set(
        Escalation.objects.filter(
            problem="no_capable_agent", status__in=[Escalation.Status.OPEN, Escalation.Status.ACKNOWLEDGED]
        ).values_list("subject", flat=True)
    )
    findings = []
    for group in groups:
        if group["queue"] not in agents:
            agents[group["queue"]] = capable_agents_loader(group["queue"])
        on_queue = agents[group["queue"]]
        if on_queue.names_for(group["requirements"]) or f"work_type:{group['work_type_id']}" in open_types:
            continue
        findings.append(
            Finding(
                monitor="dispatch",
                rule="no_capable_agent",
                evidence={
                    "work_type": group["work_type_id"],
                    "queue": group["queue"],
                    "requirements": requirements_split(group["requirements"]),
                    "pending": group["pending"],
                    "online_agents_on_queue": len(on_queue.agents),
                },
            )
        )
    return findings
