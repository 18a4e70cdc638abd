"""API tokens: create, revoke, authenticate, and the per-token rate limit."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Now

from api.models import ApiToken
from project.dbclock import age_of, now_minus
from project.exceptions import NotFound, ValidationError

TOKEN_PREFIX = "shp_"  # noqa: S105 - a marker that tells tokens apart, not a secret
RATE_WINDOW_SECONDS = 60


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def user_by_username(username: str) -> Any:
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise NotFound(f"no user named {username!r}") from None


def api_token_create(*, user: Any, name: str, rate_limit_per_minute: int | None = None) -> tuple[ApiToken, str]:
    """A new token for `user`. Returns the row and the token itself, which is not
    stored anywhere (only its digest) and so can be shown only now."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError("a token needs a name of 1 to 100 characters")
    if not user.is_active:
        raise ValidationError(f"user {user.username!r} is inactive")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=raw[: len(TOKEN_PREFIX) + 6],
        digest=_digest(raw),
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return token, raw


def api_tokens_revoke(*, user: Any, name: str | None = None, token_ids: list[int] | None = None) -> int:
    """Revoke the user's active tokens (all, one name, or the given ids); returns how many."""
    tokens = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
    if name is not None:
        tokens = tokens.filter(name=name)
    if token_ids is not None:
        tokens = tokens.filter(pk__in=token_ids)
    return tokens.update(revoked_at=Now())


def api_token_authenticate(raw: str) -> ApiToken | None:
    """The active token for this secret, with an active user; None otherwise."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    return (
        ApiToken.objects.select_related("user")
        .filter(digest=_digest(raw), revoked_at__isnull=True, user__is_active=True)
        .first()
    )


class RateDecision(NamedTuple):
    allowed: bool
    limit: int
    retry_after_seconds: int


def api_token_rate_charge(*, token: ApiToken) -> RateDecision:
    """Count one request against the token's fixed one-minute window, in one UPDATE,
    so concurrent requests in any web process are all counted."""
    limit = token.rate_limit_per_minute or settings.SHEPHERD_API_RATE_LIMIT_PER_MINUTE
    window_over = Q(window_started_at__isnull=True) | Q(window_started_at__lte=now_minus(RATE_WINDOW_SECONDS))
    ApiToken.objects.filter(pk=token.pk).update(
        window_count=Case(When(window_over, then=Value(1)), default=F("window_count") + 1),
        window_started_at=Case(When(window_over, then=Now()), default=F("window_started_at")),
        last_used_at=Now(),
    )
    row = ApiToken.objects.filter(pk=token.pk).values("window_count", age=age_of("window_started_at")).get()
    retry_after = max(1, int(RATE_WINDOW_SECONDS - row["age"].total_seconds()) + 1)
    return RateDecision(row["window_count"] <= limit, limit, retry_after)
