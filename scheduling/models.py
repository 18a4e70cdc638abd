"""Work types, work items, attempts and the event log, with the one transitions table."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class WorkItemStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    RETRY_WAIT = "retry_wait", "Waiting to retry"
    SUCCEEDED = "succeeded", "Succeeded"
    DEAD = "dead", "Dead"
    CANCELLED = "cancelled", "Cancelled"


S = WorkItemStatus
TERMINAL_STATUSES: frozenset[str] = frozenset({S.SUCCEEDED, S.DEAD, S.CANCELLED})
NON_TERMINAL_STATUSES: frozenset[str] = frozenset(set(S.values) - TERMINAL_STATUSES)
IN_FLIGHT_STATUSES: frozenset[str] = frozenset({S.QUEUED, S.RUNNING})

# The one allowed-transitions table (DESIGN.md §3). Services check every
# transition against it; the admin, forms and tests read it.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    # Any non-terminal item may be given up on (dead): budget spent, poison, stalls.
    S.PENDING: frozenset({S.QUEUED, S.CANCELLED, S.DEAD}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.DEAD}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.RETRY_WAIT, S.DEAD, S.CANCELLED}),
    S.RETRY_WAIT: frozenset({S.PENDING, S.CANCELLED, S.DEAD}),
    # Terminal states are absorbing, except an operator's audited requeue.
    S.SUCCEEDED: frozenset(),
    S.DEAD: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
}


def transition_allowed(from_status: str, to_status: str) -> bool:
    return to_status in ALLOWED_TRANSITIONS.get(from_status, frozenset())


def statuses_from(to_status: str) -> list[str]:
    """Every status that may move to `to_status`."""
    return [status for status, targets in ALLOWED_TRANSITIONS.items() if to_status in targets]


class WorkType(models.Model):
    """DB mirror of a @work_type declared in code; operators tune the tunables."""

    name = models.CharField(primary_key=True, max_length=100, help_text="Dotted name used to submit work.")
    queue = models.CharField(max_length=50, help_text="Named queue from scheduling.routing (set in code).")
    description = models.TextField(blank=True, help_text="What the handler does (from code).")
    payload_schema = models.JSONField(default=dict, help_text="JSON Schema that payloads must satisfy (from code).")
    capabilities = models.JSONField(default=list, help_text="Capabilities an agent needs (from code).")
    priority = models.PositiveSmallIntegerField(default=5, help_text="Default priority 0-9 for new items (9 first).")
    max_attempts = models.PositiveSmallIntegerField(default=3, help_text="Attempts before an item is dead-lettered.")
    budget_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Run time allowed per attempt; the handler gets a soft time limit."
    )
    budget_seconds_total = models.PositiveIntegerField(
        null=True, blank=True, help_text="Run time allowed across all attempts of an item."
    )
    budget_cost = models.FloatField(
        null=True, blank=True, help_text="Cost (ctx.charge) allowed across all attempts of an item."
    )
    stall_after = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds without progress before a running item counts as stalled (empty: never).",
    )
    max_stalls = models.PositiveSmallIntegerField(
        default=2, help_text="Stalled attempts before the item is dead-lettered instead of retried."
    )
    deadline_action = models.CharField(
        max_length=10,
        choices=[("escalate", "Escalate to a person"), ("cancel", "Cancel the item")],
        default="escalate",
        help_text="What the supervisor does with an item not finished by its complete_by.",
    )
    paused = models.BooleanField(default=False, help_text="Paused work types keep new items pending.")
    max_concurrency = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Items of this type in flight (queued + running) at once, across all agents (empty: no limit).",
    )
    rate_limit = models.FloatField(
        null=True,
        blank=True,
        help_text="Items started per second, across all agents (empty: no limit). 0.5 means one every 2 s.",
    )
    # The next free start slot of a rate-limited type (DB clock); the release hands
    # out slots 1/rate_limit apart and publishes each item with its slot as ETA.
    rate_next_slot = models.DateTimeField(null=True, blank=True, editable=False)
    typical_run_seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="Typical run time of one attempt, refreshed by the supervisor from recent successes; "
        "deadline urgency is complete_by minus this.",
    )
    in_code = models.BooleanField(default=True, help_text="False when the code no longer declares this type.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(priority__lte=9), name="work_type_priority_0_9"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="work_type_max_attempts_positive"),
            models.CheckConstraint(
                condition=Q(max_concurrency__isnull=True) | Q(max_concurrency__gte=1),
                name="work_type_max_concurrency_positive",
            ),
            models.CheckConstraint(
                condition=Q(rate_limit__isnull=True) | Q(rate_limit__gt=0), name="work_type_rate_limit_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Queue(models.Model):
    """A named queue of scheduling.routing, with what operators and the release keep per queue."""

    name = models.CharField(primary_key=True, max_length=50)
    paused = models.BooleanField(default=False, help_text="A paused queue keeps its pending items in the database.")
    # Fair share: the fair_seq of the latest item released. A submitter's new items
    # start at max(this, their own last fair_seq) + 1, so submitters alternate.
    virtual_clock = models.BigIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SubmitterClock(models.Model):
    """The last fair_seq handed to one submitter's items in one queue (0: anonymous)."""

    queue = models.CharField(max_length=50)
    submitter_key = models.BigIntegerField()
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "submitter_key"], name="submitter_clock_unique")]

    def __str__(self) -> str:
        return f"{self.queue}/{self.submitter_key}: {self.last_seq}"


class Request(models.Model):
    """Many items submitted together, with dependencies between them (a DAG)."""

    name = models.CharField(max_length=200, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["submitted_by", "-id"], name="request_submitter_idx")]

    def __str__(self) -> str:
        return f"request #{self.pk} {self.name}".strip()


class WorkItem(models.Model):
    work_type = models.ForeignKey(WorkType, on_delete=models.PROTECT, related_name="items")
    request = models.ForeignKey(Request, null=True, blank=True, on_delete=models.CASCADE, related_name="items")
    request_key = models.CharField(max_length=100, blank=True, help_text="The item's key within its request.")
    queue = models.CharField(max_length=50, help_text="Queue this item routes to (from the routing table).")
    payload = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=WorkItemStatus.choices, default=S.PENDING)
    blocked_reason = models.CharField(max_length=40, blank=True, help_text="Why a pending item waits.")
    priority = models.PositiveSmallIntegerField(default=5, help_text="0-9, higher runs first.")
    effective_priority = models.PositiveSmallIntegerField(
        default=5,
        db_default=5,
        help_text="Priority after aging: one level more per SHEPHERD_PRIORITY_AGING_SECONDS waited.",
    )
    # Release order after effective priority: deadline urgency (complete_by minus the
    # type's typical run time; empty sorts last), then fair share, then age (id).
    urgent_at = models.DateTimeField(null=True, blank=True, help_text="Latest start that meets complete_by.")
    aging_due_at = models.DateTimeField(
        null=True, blank=True, help_text="When a pending item's effective priority next rises (empty: at 9)."
    )
    fair_seq = models.BigIntegerField(
        default=0, db_default=0, help_text="Fair-share turn among submitters of the queue."
    )
    requirements = models.CharField(
        max_length=500,
        blank=True,
        default="",
        db_default="",
        help_text="Capabilities an agent needs (work type's and item's), comma-separated.",
    )
    attempt = models.PositiveIntegerField(default=0, help_text="Number of the latest dispatched attempt.")
    max_attempts = models.PositiveSmallIntegerField(default=3)
    requeue_count = models.PositiveSmallIntegerField(default=0, help_text="Operator requeues; each grants one attempt.")
    not_before = models.DateTimeField(null=True, blank=True, help_text="Do not dispatch before this time.")
    complete_by = models.DateTimeField(null=True, blank=True, help_text="Deadline.")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="work_items"
    )
    idempotency_key = models.CharField(
        max_length=200, blank=True, help_text="Resubmitting with the same key (per submitter) returns this item."
    )
    agent = models.ForeignKey(
        "agents.Agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="work_items",
        help_text="Agent holding the current attempt.",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last lease renewal by the running attempt.")
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    cost_total = models.FloatField(default=0.0, help_text="Cost charged by handlers, summed across attempts.")
    # Per-item budgets; empty means the work type's.
    budget_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Run time per attempt.")
    budget_seconds_total = models.PositiveIntegerField(null=True, blank=True, help_text="Run time, all attempts.")
    budget_cost = models.FloatField(null=True, blank=True, help_text="Charged cost, all attempts.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="Last publish of the current attempt.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=S.values), name="work_item_status_valid"),
            models.CheckConstraint(condition=Q(priority__lte=9), name="work_item_priority_0_9"),
            models.CheckConstraint(condition=Q(effective_priority__lte=9), name="work_item_effective_priority_0_9"),
            models.CheckConstraint(
                condition=~Q(status=S.RUNNING) | (Q(agent__isnull=False) & Q(lease_expires_at__isnull=False)),
                name="work_item_running_has_lease",
            ),
            models.CheckConstraint(
                condition=Q(attempt__lte=models.F("max_attempts") + models.F("requeue_count")),
                name="work_item_attempts_within_limit",
            ),
            # One item per idempotency key and submitter; keys of anonymous
            # submissions (commands, Python) share one namespace.
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=~Q(idempotency_key="") & Q(submitted_by__isnull=False),
                name="work_item_idempotency_per_user",
            ),
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=~Q(idempotency_key="") & Q(submitted_by__isnull=True),
                name="work_item_idempotency_anonymous",
            ),
        ]
        indexes = [
            # Release scan: next pending items of a queue in release order.
            models.Index(
                fields=["queue", "status", "-effective_priority", "urgent_at", "fair_seq", "id"],
                name="work_item_release_order_idx",
            ),
            # Aging: pending items whose effective priority is due to rise; and the few
            # pending items that need capabilities.
            models.Index(fields=["aging_due_at"], name="work_item_aging_due_idx", condition=Q(status=S.PENDING)),
            models.Index(
                fields=["queue"],
                name="work_item_pending_needs_idx",
                condition=Q(status=S.PENDING) & ~Q(requirements=""),
            ),
            # Supervisor scans touch only live rows, so they stay cheap as history grows.
            models.Index(
                fields=["lease_expires_at"], name="work_item_running_lease_idx", condition=Q(status=S.RUNNING)
            ),
            models.Index(fields=["dispatched_at"], name="work_item_queued_idx", condition=Q(status=S.QUEUED)),
            models.Index(fields=["not_before"], name="work_item_retry_due_idx", condition=Q(status=S.RETRY_WAIT)),
            # Counts per state (status, dashboard, /metrics) read this index alone, not
            # the wide table rows: COUNT(*) over an index-only scan.
            models.Index(fields=["status", "work_type", "queue"], name="work_item_state_type_queue_idx"),
            # The tick's census and its deadline and dependency passes: rows that are
            # usually few, so they cost the same with a million finished items stored.
            models.Index(
                fields=["complete_by"],
                name="work_item_deadline_idx",
                condition=Q(complete_by__isnull=False, status__in=sorted(NON_TERMINAL_STATUSES)),
            ),
            models.Index(
                fields=["id"],
                name="work_item_blocked_idx",
                condition=Q(status=S.PENDING, blocked_reason="dependencies"),  # requests.BLOCKED_BY_DEPENDENCIES
            ),
            # "My items" lists for users of the API and dashboard.
            models.Index(fields=["submitted_by", "-id"], name="work_item_submitter_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.work_type_id} ({self.status})"

    @property
    def celery_task_id(self) -> str:
        return celery_task_id(self.pk, self.attempt)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def celery_task_id(work_item_id: int, attempt: int) -> str:
    # Deterministic per attempt, so a revoke reaches every copy the outbox published.
    return f"wi-{work_item_id}-a{attempt}"


class Dependency(models.Model):
    """`child` runs only after `parent` succeeded; a parent that ends dead or
    cancelled cancels its dependants."""

    child = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="parent_links")
    parent = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="child_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["child", "parent"], name="dependency_unique"),
            models.CheckConstraint(condition=~Q(child=models.F("parent")), name="dependency_not_self"),
        ]

    def __str__(self) -> str:
        return f"#{self.child_id} after #{self.parent_id}"


class AttemptOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    LOST = "lost", "Lost (agent or process died)"
    TIMED_OUT = "timed_out", "Lease expired"
    STALLED = "stalled", "Stalled (no progress)"
    CANCELLED = "cancelled", "Cancelled"


class Attempt(models.Model):
    work_item = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts")
    celery_task_id = models.CharField(max_length=100, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True, help_text="Pool process that ran the handler.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices, default=AttemptOutcome.RUNNING)
    error = models.TextField(blank=True)
    cost = models.FloatField(default=0.0)
    late_outcome = models.CharField(
        max_length=20, blank=True, help_text="What this attempt reported after it had been superseded (rejected)."
    )

    class Meta:
        ordering = ["work_item_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["work_item", "number"], name="attempt_unique_number"),
            models.CheckConstraint(condition=Q(outcome__in=AttemptOutcome.values), name="attempt_outcome_valid"),
            # I2: at most one committed completion per item.
            models.UniqueConstraint(
                fields=["work_item"], condition=Q(outcome=AttemptOutcome.SUCCEEDED), name="attempt_one_success"
            ),
            # I4: at most one live attempt per item.
            models.UniqueConstraint(
                fields=["work_item"], condition=Q(outcome=AttemptOutcome.RUNNING), name="attempt_one_running"
            ),
        ]
        indexes = [
            # The violation monitor's failure rate reads the last few minutes of finishes.
            models.Index(fields=["finished_at"], name="attempt_finished_idx"),
            # Poison: lost attempts are rare, so finding items with several is cheap.
            models.Index(fields=["work_item"], name="attempt_lost_idx", condition=Q(outcome=AttemptOutcome.LOST)),
        ]

    def __str__(self) -> str:
        return f"#{self.work_item_id} attempt {self.number} ({self.outcome})"


class EventKind(models.TextChoices):
    TRANSITION = "transition", "Transition"
    FINISH_REJECTED = "finish_rejected", "Late finish rejected"
    REDISPATCHED = "redispatched", "Published again"
    BUDGET_WARNING = "budget_warning", "Budget 80% used"


class WorkItemEvent(models.Model):
    work_item = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=EventKind.choices, default=EventKind.TRANSITION)
    attempt = models.PositiveIntegerField()
    from_status = models.CharField(max_length=20, choices=WorkItemStatus.choices)
    to_status = models.CharField(max_length=20, choices=WorkItemStatus.choices)
    actor = models.CharField(max_length=150, help_text="scheduler, agent:<name>, supervisor, user:<name>.")
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["work_item_id", "id"]
        indexes = [models.Index(fields=["work_item", "id"], name="work_item_event_item_idx")]

    def __str__(self) -> str:
        return f"#{self.work_item_id} {self.from_status}->{self.to_status} ({self.kind})"
