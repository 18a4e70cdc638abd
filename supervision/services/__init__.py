"""The supervisor's writes: the leader tick, interventions, escalations."""

from supervision.services.escalations import (
    escalation_acknowledge,
    escalation_notify,
    escalation_open,
    escalation_resolve,
)
from supervision.services.interventions import ACTOR, intervene
from supervision.services.leader import (
    LEASE_NAME,
    SCHEDULE_NAME,
    supervisor_lease_release,
    supervisor_lease_try_acquire,
    supervisor_run_once,
    supervisor_schedule_ensure,
    supervisor_tick,
)

__all__ = [
    "ACTOR",
    "LEASE_NAME",
    "SCHEDULE_NAME",
    "escalation_acknowledge",
    "escalation_notify",
    "escalation_open",
    "escalation_resolve",
    "intervene",
    "supervisor_lease_release",
    "supervisor_lease_try_acquire",
    "supervisor_run_once",
    "supervisor_schedule_ensure",
    "supervisor_tick",
]
