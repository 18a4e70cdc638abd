"""Policies: pure functions from a finding to the action to take. No database here."""

from __future__ import annotations

from dataclasses import dataclass

from supervision.monitors import Finding


@dataclass(frozen=True)
class Decision:
    action: str  # mark_agent_lost, retry, revoke_retry, redispatch, none
    retry_delay: float | None = None  # None: the scheduler's backoff
    reason: str = ""


# (monitor, rule) -> decision. A lost agent or a wedged child says nothing about
# the item itself, so those retry at once; the attempt limit still applies.
_TABLE: dict[tuple[str, str], Decision] = {
    ("health", "heartbeat_stale"): Decision("mark_agent_lost", reason="heartbeat older than AGENT_DEAD_AFTER"),
    ("health", "agent_lost"): Decision("retry", retry_delay=0, reason="agent_lost"),
    ("lease", "lease_expired"): Decision("revoke_retry", retry_delay=0, reason="lease_expired"),
    ("dispatch", "unclaimed"): Decision("redispatch", reason="queued message not claimed"),
}


def decide(finding: Finding) -> Decision:
    return _TABLE.get((finding.monitor, finding.rule), Decision("none", reason="no rule"))
