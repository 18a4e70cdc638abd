"""The database's clock. Every "older than" and every lease uses it, never a worker's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F
from django.db.models.functions import Coalesce, Now


def now_plus(seconds: float) -> ExpressionWrapper:
    if not seconds:
        # Now() itself: on SQLite `Now() + 0` comes back as text with microseconds
        # ('...27.217000') while Now() has milliseconds ('...27.217'), and the two
        # compare as text, so "due now" was not yet due within the same millisecond.
        return ExpressionWrapper(Now(), output_field=DateTimeField())
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def now_minus(seconds: float) -> ExpressionWrapper:
    return now_plus(-seconds)


def age_of(field: str) -> ExpressionWrapper:
    """Now() minus a datetime column, as a duration."""
    return ExpressionWrapper(Now() - F(field), output_field=DurationField())


def age_of_first(*fields: str) -> ExpressionWrapper:
    """Now() minus the first non-null of several datetime columns."""
    return ExpressionWrapper(Now() - Coalesce(*(F(f) for f in fields)), output_field=DurationField())


def db_now() -> datetime:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
        cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
        return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
