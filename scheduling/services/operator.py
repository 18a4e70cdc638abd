"""People's actions on one item (API, dashboard): cancel, retry, requeue, with a
clear refusal naming the current state when the action does not apply."""

from __future__ import annotations

from collections.abc import Callable

from project.exceptions import IllegalTransition, NotFound
from scheduling.models import NON_TERMINAL_STATUSES, WorkItem, WorkItemStatus
from scheduling.services.transitions import work_item_cancel, work_item_requeue, work_item_retry

S = WorkItemStatus

# action -> (service, the states it applies to). The services are the authority
# (each is a fenced transition); this table only words the refusal.
OPERATOR_ACTIONS: dict[str, tuple[Callable[..., bool], frozenset[str]]] = {
    "cancel": (work_item_cancel, NON_TERMINAL_STATUSES),
    "retry": (work_item_retry, frozenset({S.RETRY_WAIT})),
    "requeue": (work_item_requeue, frozenset({S.DEAD, S.CANCELLED})),
}


class ActionRefused(IllegalTransition):
    def __init__(self, *, action: str, work_item_id: int, status: str) -> None:
        allowed = ", ".join(sorted(OPERATOR_ACTIONS[action][1]))
        super().__init__(f"cannot {action} work item {work_item_id}: it is {status} (allowed from: {allowed})")
        self.status = status


def work_item_operator_action(*, work_item_id: int, action: str, actor: str, reason: str = "") -> str:
    """Apply `action` through its service; returns the item's new status.
    Raises ActionRefused (with the current status) when the item is in a state the
    action does not apply to, including when another actor changed it first."""
    service, applies_to = OPERATOR_ACTIONS[action]
    status = WorkItem.objects.filter(pk=work_item_id).values_list("status", flat=True).first()
    if status is None:
        raise NotFound(f"no work item with id {work_item_id!r}")
    if status not in applies_to or not service(
        work_item_id=work_item_id, actor=actor, reason=reason or f"{action} requested by {actor}"
    ):
        current = WorkItem.objects.filter(pk=work_item_id).values_list("status", flat=True).get()
        raise ActionRefused(action=action, work_item_id=work_item_id, status=current)
    return WorkItem.objects.filter(pk=work_item_id).values_list("status", flat=True).get()
