"""Every write to work items: submission, release into queues, and each state transition.

A transition is one conditional UPDATE fenced by status and attempt; it reports
whether it won. The loser changes nothing. Each winning transition appends a
WorkItemEvent in the same transaction.
"""

from scheduling.services.operator import OPERATOR_ACTIONS, ActionRefused, work_item_operator_action
from scheduling.services.ordering import work_items_age, work_types_typical_refresh
from scheduling.services.release import queue_pause, queue_window, work_item_redispatch, work_items_release
from scheduling.services.requests import BLOCKED_BY_DEPENDENCIES, dependants_advance, request_submit
from scheduling.services.submission import (
    Submission,
    work_item_get,
    work_item_submit,
    work_items_submit,
    work_items_submit_batch,
    work_items_submit_ids,
    work_types_sync,
)
from scheduling.services.transitions import (
    ClaimedItem,
    attempt_revoke,
    work_item_budget_warn,
    work_item_cancel,
    work_item_charge,
    work_item_claim,
    work_item_dead_letter,
    work_item_fail,
    work_item_finish_rejected,
    work_item_lease_renew,
    work_item_progress_report,
    work_item_requeue,
    work_item_retry,
    work_item_succeed,
    work_type_pause,
)

__all__ = [
    "BLOCKED_BY_DEPENDENCIES",
    "OPERATOR_ACTIONS",
    "ActionRefused",
    "ClaimedItem",
    "Submission",
    "attempt_revoke",
    "dependants_advance",
    "queue_pause",
    "queue_window",
    "request_submit",
    "work_item_budget_warn",
    "work_item_cancel",
    "work_item_charge",
    "work_item_claim",
    "work_item_dead_letter",
    "work_item_fail",
    "work_item_finish_rejected",
    "work_item_get",
    "work_item_lease_renew",
    "work_item_operator_action",
    "work_item_progress_report",
    "work_item_redispatch",
    "work_item_requeue",
    "work_item_retry",
    "work_item_submit",
    "work_item_succeed",
    "work_items_age",
    "work_items_release",
    "work_items_submit",
    "work_items_submit_batch",
    "work_items_submit_ids",
    "work_type_pause",
    "work_types_sync",
    "work_types_typical_refresh",
]
