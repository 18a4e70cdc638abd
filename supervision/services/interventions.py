"""Interventions: carry out a policy's decision through the scheduler's services and
record one Intervention row for each action that took effect."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings

from agents.services import agent_mark_lost
from scheduling import services as scheduling
from scheduling.models import AttemptOutcome, WorkItemStatus
from supervision import policies
from supervision.models import Intervention, SupervisorRun
from supervision.monitors import Finding
from supervision.services.escalations import escalation_open

logger = logging.getLogger("shepherd.supervisor")
ACTOR = "supervisor"
A = Intervention.Action


class Effect:
    """What an action did: whether it took effect, which Intervention action to record
    (it can differ from the decision: a retry with no attempts left dead-letters)."""

    def __init__(self, done: bool, action: str, outcome: str = Intervention.Outcome.DONE) -> None:
        self.done, self.action, self.outcome = done, action, outcome


def _mark_agent_lost(finding: Finding, decision: policies.Decision) -> Effect:
    return Effect(agent_mark_lost(agent_id=finding.agent_id, dead_after=settings.AGENT_DEAD_AFTER), A.MARK_AGENT_LOST)


def _fail_attempt(finding: Finding, decision: policies.Decision, *, revoke: bool) -> Effect:
    default = AttemptOutcome.TIMED_OUT if revoke else AttemptOutcome.LOST
    status = scheduling.work_item_fail(
        work_item_id=finding.work_item_id,
        attempt=finding.attempt,
        actor=ACTOR,
        outcome=decision.outcome or default,
        error=f"{decision.reason}: {finding.evidence}",
        retry_delay=decision.retry_delay,
        release=False,  # the tick releases once, after every monitor has acted
    )
    if status is not None and revoke:
        scheduling.attempt_revoke(work_item_id=finding.work_item_id, attempt=finding.attempt)
    return Effect(status is not None, A.DEAD_LETTER if status == WorkItemStatus.DEAD else A.RETRY)


def _dead_letter(finding: Finding, decision: policies.Decision) -> Effect:
    done = scheduling.work_item_dead_letter(
        work_item_id=finding.work_item_id,
        attempt=finding.attempt,
        actor=ACTOR,
        reason=f"{decision.reason}: {finding.evidence}",
    )
    return Effect(done, A.DEAD_LETTER)


def _redispatch(finding: Finding, decision: policies.Decision) -> Effect:
    done = scheduling.work_item_redispatch(
        work_item_id=finding.work_item_id,
        attempt=finding.attempt,
        actor=ACTOR,
        reason=f"unclaimed for {finding.evidence.get('unclaimed_s')}s",
    )
    return Effect(done, A.REDISPATCH)


def _cancel(finding: Finding, decision: policies.Decision) -> Effect:
    done = scheduling.work_item_cancel(
        work_item_id=finding.work_item_id, actor=ACTOR, reason=f"{decision.reason}: {finding.evidence}"
    )
    return Effect(done, A.CANCEL)


def _warn(finding: Finding, decision: policies.Decision) -> Effect:
    near = finding.evidence["near"]
    done = False
    for budget in near:
        done |= scheduling.work_item_budget_warn(
            work_item_id=finding.work_item_id,
            attempt=finding.attempt,
            actor=ACTOR,
            budget=budget["budget"],
            reason=f"{budget['used']} of {budget['limit']} used",
        )
    return Effect(done, A.WARN)


def _pause_work_type(finding: Finding, decision: policies.Decision) -> Effect:
    return Effect(scheduling.work_type_pause(name=finding.evidence["work_type"]), A.PAUSE_WORK_TYPE)


def _record(finding: Finding, decision: policies.Decision) -> Effect:
    return Effect(True, A.RECORD_VIOLATION)


def _escalate_only(finding: Finding, decision: policies.Decision) -> Effect:
    # Recorded even when the problem is already open: the row is what tells the
    # next tick that this attempt was escalated.
    return Effect(True, A.ESCALATE)


_ACTIONS: dict[str, Callable[[Finding, policies.Decision], Effect]] = {
    "mark_agent_lost": _mark_agent_lost,
    "retry": lambda f, d: _fail_attempt(f, d, revoke=False),
    "revoke_retry": lambda f, d: _fail_attempt(f, d, revoke=True),
    "dead_letter": _dead_letter,
    "redispatch": _redispatch,
    "cancel": _cancel,
    "warn": _warn,
    "pause_work_type": _pause_work_type,
    "record_violation": _record,
    "escalate": _escalate_only,
}


def _subject(finding: Finding) -> str:
    if finding.work_item_id is not None:
        return f"item:{finding.work_item_id}"
    if "work_type" in finding.evidence:
        return f"work_type:{finding.evidence['work_type']}"
    return f"agent:{finding.agent_id}"


def intervene(*, run: SupervisorRun | None, finding: Finding) -> bool:
    """Act on one finding through the scheduler's services; record it if it took effect."""
    decision = policies.decide(finding)
    act = _ACTIONS.get(decision.action)
    if act is None:
        return False
    effect = act(finding, decision)
    if not effect.done:
        logger.info(
            "%s/%s on item %s agent %s: already handled",
            finding.monitor,
            finding.rule,
            finding.work_item_id,
            finding.agent_id,
        )
        return False
    intervention = Intervention.objects.create(
        run=run,
        monitor=finding.monitor,
        rule=finding.rule,
        action=effect.action,
        outcome=effect.outcome,
        evidence=finding.evidence,
        work_item_id=finding.work_item_id,
        attempt=finding.attempt,
        agent_id=finding.agent_id,
        work_type=finding.evidence.get("work_type", "") if finding.work_item_id is None else "",
        actor=ACTOR,
    )
    if decision.escalate or decision.action == "escalate":
        _, created = escalation_open(
            problem=decision.reason,
            subject=_subject(finding),
            summary=_summary(finding, decision, effect),
            evidence=finding.evidence,
            work_item_id=finding.work_item_id,
            intervention=intervention,
        )
        if not created and decision.action == "escalate":
            Intervention.objects.filter(pk=intervention.pk).update(outcome=Intervention.Outcome.ALREADY_HANDLED)
    logger.info(
        "%s/%s -> %s (item %s, agent %s) %s",
        finding.monitor,
        finding.rule,
        effect.action,
        finding.work_item_id,
        finding.agent_id,
        finding.evidence,
    )
    return True


def _summary(finding: Finding, decision: policies.Decision, effect: Effect) -> str:
    what = _subject(finding).replace(":", " ")
    done = "" if effect.action == A.ESCALATE else f"; the supervisor's action: {effect.action}"
    return f"{decision.reason} on {what} ({finding.monitor} monitor){done}. Evidence: {finding.evidence}"
