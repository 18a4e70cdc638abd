"""Policies: pure functions from a finding to the action to take. No database here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from supervision.monitors import Finding


@dataclass(frozen=True)
class Decision:
    # mark_agent_lost, retry, revoke_retry, dead_letter, redispatch, escalate, cancel,
    # warn, pause_work_type, record_violation, none
    action: str
    retry_delay: float | None = None  # None: the scheduler's backoff
    reason: str = ""
    escalate: bool = False  # also hand the problem to people
    outcome: str = ""  # how a revoked attempt ends (attempt outcome); "" = the action's default


def _stalled(finding: Finding) -> Decision:
    """Fish or cut bait: escalate first; if the item is still stalled a full
    stall_after later, revoke it and retry elsewhere; after max_stalls stalled
    attempts, dead-letter it."""
    evidence = finding.evidence
    if not evidence["escalated"]:
        return Decision("escalate", reason="stalled")
    if evidence["progress_age_s"] < 2 * evidence["stall_after_s"]:
        return Decision("none", reason="escalated; waiting one more stall_after before acting")
    if evidence["stalls_before"] + 1 >= evidence["max_stalls"]:
        return Decision("dead_letter", reason="stalled", escalate=True)
    return Decision("revoke_retry", retry_delay=0, reason="stalled", outcome="stalled")


def _deadline(finding: Finding) -> Decision:
    if finding.evidence.get("deadline_action") == "cancel":
        return Decision("cancel", reason="deadline_missed")
    return Decision("escalate", reason="deadline_missed")


# (monitor, rule) -> decision, or a function of the finding when its evidence
# decides. A lost agent or a wedged child says nothing about the item itself, so
# those retry at once; the attempt limit still applies.
_TABLE: dict[tuple[str, str], Decision | Callable[[Finding], Decision]] = {
    ("health", "heartbeat_stale"): Decision("mark_agent_lost", reason="heartbeat older than AGENT_DEAD_AFTER"),
    ("health", "agent_lost"): Decision("retry", retry_delay=0, reason="agent_lost"),
    ("lease", "lease_expired"): Decision("revoke_retry", retry_delay=0, reason="lease_expired"),
    ("progress", "stalled"): _stalled,
    ("budget", "budget_warning"): Decision("warn", reason="budget 80% used"),
    ("budget", "over_budget"): Decision("dead_letter", reason="budget_exceeded", escalate=True),
    ("deadline", "deadline_missed"): _deadline,
    ("dispatch", "unclaimed"): Decision("redispatch", reason="queued message not claimed"),
    ("dispatch", "no_capable_agent"): Decision("escalate", reason="no_capable_agent"),
    ("violation", "poison"): Decision("dead_letter", reason="poison"),
    ("violation", "failure_rate"): Decision("pause_work_type", reason="failure_rate", escalate=True),
    ("violation", "capability"): Decision("record_violation", reason="capability"),
}


def decide(finding: Finding) -> Decision:
    rule = _TABLE.get((finding.monitor, finding.rule))
    if rule is None:
        return Decision("none", reason="no rule")
    return rule(finding) if callable(rule) else rule
