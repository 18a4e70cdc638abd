import pytest

from scheduling.models import (
    ALLOWED_TRANSITIONS,
    NON_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    WorkItemStatus,
    statuses_from,
    transition_allowed,
)

S = WorkItemStatus


def test_every_status_has_a_row():
    assert set(ALLOWED_TRANSITIONS) == set(S.values)


def test_terminal_states_only_leave_by_operator_requeue():
    assert ALLOWED_TRANSITIONS[S.SUCCEEDED] == frozenset()
    assert ALLOWED_TRANSITIONS[S.DEAD] == {S.PENDING}
    assert ALLOWED_TRANSITIONS[S.CANCELLED] == {S.PENDING}


def test_every_non_terminal_state_can_be_cancelled():
    assert set(statuses_from(S.CANCELLED)) == set(NON_TERMINAL_STATUSES)


@pytest.mark.parametrize(
    ("from_status", "to_status", "allowed"),
    [
        (S.PENDING, S.QUEUED, True),
        (S.QUEUED, S.RUNNING, True),
        (S.RUNNING, S.SUCCEEDED, True),
        (S.RUNNING, S.RETRY_WAIT, True),
        (S.RETRY_WAIT, S.PENDING, True),
        (S.PENDING, S.RUNNING, False),  # must be dispatched first
        (S.QUEUED, S.SUCCEEDED, False),  # must be claimed first
        (S.SUCCEEDED, S.PENDING, False),  # success is final
        (S.RETRY_WAIT, S.RUNNING, False),
        (S.DEAD, S.RUNNING, False),
    ],
)
def test_transition_allowed(from_status, to_status, allowed):
    assert transition_allowed(from_status, to_status) is allowed


def test_terminal_and_non_terminal_partition_the_states():
    assert set(S.values) == TERMINAL_STATUSES | NON_TERMINAL_STATUSES
    assert not TERMINAL_STATUSES & NON_TERMINAL_STATUSES
