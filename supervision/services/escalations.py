"""Escalations: problems handed to people (open -> acknowledged -> resolved), with
email and webhook notification that never breaks a tick."""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from supervision.models import Escalation, Intervention

logger = logging.getLogger("shepherd.supervisor")
UNRESOLVED = (Escalation.Status.OPEN, Escalation.Status.ACKNOWLEDGED)


def escalation_open(
    *,
    problem: str,
    subject: str,
    summary: str,
    evidence: dict[str, Any] | None = None,
    work_item_id: int | None = None,
    intervention: Intervention | None = None,
) -> tuple[Escalation, bool]:
    """Open an escalation unless one for this subject and problem is unresolved.
    Returns (escalation, created); people are notified only when it is new."""
    existing = Escalation.objects.filter(subject=subject, problem=problem, status__in=UNRESOLVED).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            escalation = Escalation.objects.create(
                problem=problem,
                subject=subject,
                summary=summary[:5000],
                evidence=evidence or {},
                work_item_id=work_item_id,
                intervention=intervention,
            )
    except IntegrityError:  # a concurrent opener won; the partial unique index decides
        return Escalation.objects.get(subject=subject, problem=problem, status__in=UNRESOLVED), False
    escalation_notify(escalation)
    return escalation, True


def _move(escalation_id: int, *, to: str, from_statuses: tuple[str, ...], by: str, field: str) -> bool:
    return bool(
        Escalation.objects.filter(pk=escalation_id, status__in=from_statuses).update(
            status=to, **{f"{field}_at": Now(), f"{field}_by": by[:150]}
        )
    )


def escalation_acknowledge(*, escalation_id: int, by: str) -> bool:
    """open -> acknowledged: someone is on it. False if it was not open."""
    return _move(escalation_id, to=Escalation.Status.ACKNOWLEDGED, from_statuses=("open",), by=by, field="acknowledged")


def escalation_resolve(*, escalation_id: int, by: str) -> bool:
    """open/acknowledged -> resolved. False if it was already resolved."""
    return _move(escalation_id, to=Escalation.Status.RESOLVED, from_statuses=UNRESOLVED, by=by, field="resolved")


def escalation_payload(escalation: Escalation) -> dict[str, Any]:
    return {
        "id": escalation.pk,
        "problem": escalation.problem,
        "subject": escalation.subject,
        "status": escalation.status,
        "summary": escalation.summary,
        "evidence": escalation.evidence,
        "work_item_id": escalation.work_item_id,
        "opened_at": escalation.opened_at.isoformat() if escalation.opened_at else None,
    }


def escalation_notify(escalation: Escalation) -> None:
    """Email SHEPHERD_ESCALATION_EMAILS and POST to SHEPHERD_ESCALATION_WEBHOOK_URL.
    Every failure is logged and kept on the row; none propagates, so a broken
    mail server or webhook never stops the supervisor."""
    errors = []
    if settings.SHEPHERD_ESCALATION_EMAILS:
        try:
            send_mail(
                subject=f"[Shepherd] {escalation.problem}: {escalation.subject}",
                message=f"{escalation.summary}\n\nEvidence: {json.dumps(escalation.evidence, indent=2, default=str)}",
                from_email=None,
                recipient_list=settings.SHEPHERD_ESCALATION_EMAILS,
            )
        except Exception as error:
            errors.append(f"email: {error}")
    url = settings.SHEPHERD_ESCALATION_WEBHOOK_URL
    if url and not url.startswith(("http://", "https://")):
        errors.append(f"webhook: {url!r} is not an http(s) URL")
    elif url:
        body = json.dumps({"escalation": escalation_payload(escalation)}, default=str).encode()
        # The scheme is checked above, so urlopen can only speak http(s) here.
        request = urllib.request.Request(  # noqa: S310
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            timeout = settings.SHEPHERD_ESCALATION_WEBHOOK_TIMEOUT
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read()
        except Exception as error:
            errors.append(f"webhook: {error}")
    if errors:
        logger.warning("escalation %s: notification failed: %s", escalation.pk, "; ".join(errors))
    if settings.SHEPHERD_ESCALATION_EMAILS or settings.SHEPHERD_ESCALATION_WEBHOOK_URL:
        Escalation.objects.filter(pk=escalation.pk).update(notified_at=Now(), notify_error="; ".join(errors)[:2000])
