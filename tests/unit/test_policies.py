import pytest

from supervision.monitors import Finding
from supervision.policies import decide


@pytest.mark.parametrize(
    ("monitor", "rule", "action", "delay"),
    [
        ("health", "heartbeat_stale", "mark_agent_lost", None),
        ("health", "agent_lost", "retry", 0),
        ("lease", "lease_expired", "revoke_retry", 0),
        ("dispatch", "unclaimed", "redispatch", None),
        ("health", "something_new", "none", None),
    ],
)
def test_decisions(monitor, rule, action, delay):
    decision = decide(Finding(monitor=monitor, rule=rule))
    assert decision.action == action
    assert decision.retry_delay == delay
