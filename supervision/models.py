"""What the supervisor did and why: runs, interventions, and the leader lease."""

from __future__ import annotations

from django.db import models


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
        DISPATCH = "dispatch", "Dispatch"

    class Action(models.TextChoices):
        MARK_AGENT_LOST = "mark_agent_lost", "Mark agent lost"
        RETRY = "retry", "Retry"
        DEAD_LETTER = "dead_letter", "Dead-letter"
        REVOKE = "revoke", "Revoke"
        REDISPATCH = "redispatch", "Publish again"

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

    def __str__(self) -> str:
        return f"{self.monitor}/{self.rule}: {self.action} ({self.outcome})"


class SupervisorLease(models.Model):
    """One row per lease name; holding it unexpired makes a tick the leader."""

    name = models.CharField(primary_key=True, max_length=50)
    holder = models.CharField(max_length=200, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at}"
