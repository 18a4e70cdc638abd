"""What the supervisor did and why: runs, interventions, and the leader lease."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class SupervisorRun(models.Model):
    holder = models.CharField(max_length=200, help_text="Process that held the leader lease for this tick.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    findings = models.PositiveIntegerField(default=0)
    actions = models.PositiveIntegerField(default=0)
    released = models.PositiveIntegerField(default=0, help_text="Pending items released into queues.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"run {self.pk} at {self.started_at:%H:%M:%S} ({self.actions} actions)"


class Intervention(models.Model):
    class Monitor(models.TextChoices):
        HEALTH = "health", "Health"
        LEASE = "lease", "Lease"
        PROGRESS = "progress", "Progress"
        BUDGET = "budget", "Budget"
        DEADLINE = "deadline", "Deadline"
        DISPATCH = "dispatch", "Dispatch"
        VIOLATION = "violation", "Violation"

    class Action(models.TextChoices):
        MARK_AGENT_LOST = "mark_agent_lost", "Mark agent lost"
        RETRY = "retry", "Retry"
        DEAD_LETTER = "dead_letter", "Dead-letter"
        REVOKE = "revoke", "Revoke"
        REDISPATCH = "redispatch", "Publish again"
        ESCALATE = "escalate", "Escalate to a person"
        CANCEL = "cancel", "Cancel"
        WARN = "warn", "Warn (event only)"
        PAUSE_WORK_TYPE = "pause_work_type", "Pause work type"
        RECORD_VIOLATION = "record_violation", "Record violation"

    class Outcome(models.TextChoices):
        DONE = "done", "Done"
        ALREADY_HANDLED = "already_handled", "Already handled"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(
        SupervisorRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="interventions"
    )
    monitor = models.CharField(max_length=20, choices=Monitor.choices)
    rule = models.CharField(max_length=60, help_text="Which rule fired, e.g. heartbeat_stale.")
    action = models.CharField(max_length=20, choices=Action.choices)
    work_type = models.CharField(max_length=100, blank=True, help_text="For findings about a whole work type.")
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    evidence = models.JSONField(default=dict, help_text="What the monitor saw when it fired.")
    work_item = models.ForeignKey(
        "scheduling.WorkItem", null=True, blank=True, on_delete=models.CASCADE, related_name="interventions"
    )
    attempt = models.PositiveIntegerField(null=True, blank=True)
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="interventions"
    )
    actor = models.CharField(max_length=150, default="supervisor")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # "Was this attempt already escalated / recorded?" lookups by the monitors.
            models.Index(fields=["work_item", "attempt", "rule"], name="intervention_item_rule_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.monitor}/{self.rule}: {self.action} ({self.outcome})"


class Escalation(models.Model):
    """A problem handed to people: open -> acknowledged -> resolved. At most one
    unresolved escalation per subject and problem, so a tick that finds the same
    problem again changes nothing."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    problem = models.CharField(max_length=40, help_text="e.g. stalled, budget_exceeded, deadline_missed.")
    subject = models.CharField(max_length=120, help_text="What it is about: item:<id>, work_type:<name>, agent:<id>.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    summary = models.TextField()
    evidence = models.JSONField(default=dict)
    work_item = models.ForeignKey(
        "scheduling.WorkItem", null=True, blank=True, on_delete=models.CASCADE, related_name="escalations"
    )
    intervention = models.ForeignKey(
        Intervention, null=True, blank=True, on_delete=models.SET_NULL, related_name="escalations"
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True, help_text="When email/webhook were last tried.")
    notify_error = models.TextField(blank=True, help_text="Why a notification failed (the tick carried on).")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject", "problem"],
                condition=Q(status__in=["open", "acknowledged"]),
                name="escalation_one_unresolved_per_problem",
            ),
        ]
        indexes = [models.Index(fields=["status", "-id"], name="escalation_status_idx")]

    def __str__(self) -> str:
        return f"{self.problem} on {self.subject} ({self.status})"


class SupervisorLease(models.Model):
    """One row per lease name; holding it unexpired makes a tick the leader."""

    name = models.CharField(primary_key=True, max_length=50)
    holder = models.CharField(max_length=200, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at}"
