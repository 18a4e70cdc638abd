"""One Agent row per worker incarnation: a restarted worker is a new row."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class AgentStatus(models.TextChoices):
    ONLINE = "online", "Online"
    DRAINING = "draining", "Draining"
    OFFLINE = "offline", "Offline (clean shutdown)"
    LOST = "lost", "Lost (heartbeat stopped)"


LIVE_AGENT_STATUSES: frozenset[str] = frozenset({AgentStatus.ONLINE, AgentStatus.DRAINING})
# Gone with whatever it held: declared lost, or stopped.
GONE_AGENT_STATUSES: frozenset[str] = frozenset({AgentStatus.LOST, AgentStatus.OFFLINE})


class Agent(models.Model):
    name = models.CharField(max_length=200, help_text="Celery node name, e.g. default@host.")
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField(help_text="Main process id of the worker.")
    queues = models.JSONField(default=list, help_text="Queues this agent consumes.")
    concurrency = models.PositiveIntegerField(default=1)
    capabilities = models.JSONField(default=list, help_text="Capability tags the agent declared.")
    version = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=20, choices=AgentStatus.choices, default=AgentStatus.ONLINE)
    started_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=AgentStatus.values), name="agent_status_valid"),
        ]
        indexes = [
            models.Index(
                fields=["last_heartbeat_at"],
                name="agent_live_heartbeat_idx",
                condition=Q(status__in=["online", "draining"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}, {self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_AGENT_STATUSES
