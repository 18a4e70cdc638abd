"""API tokens: stored as SHA-256 digests; the token itself is shown once at creation."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'ci-pipeline'.")
    # The first characters of the token, shown so people can tell tokens apart.
    prefix = models.CharField(max_length=16, editable=False)
    # Tokens are 256 random bits, so a fast digest is enough: nothing to brute-force.
    digest = models.CharField(max_length=64, unique=True, editable=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; empty uses SHEPHERD_API_RATE_LIMIT_PER_MINUTE."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Fixed one-minute window for the rate limit, counted in the database so every
    # web process agrees.
    window_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    window_count = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["user_id", "-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name}, {self.user})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None
