"""The routing table: work type -> named queue. Celery's queues are built from it.

Every work item runs through one task (EXECUTE_TASK); the scheduler picks the
queue per message from this table, and agents subscribe with `-Q`. No queue
name is written anywhere else.
"""

from __future__ import annotations

from kombu import Exchange, Queue

# Named queues for work, with what each is for. Agents are started per queue group.
WORK_QUEUES: dict[str, str] = {
    "default": "General work: short and I/O-bound items.",
    "cpu": "CPU-bound items; run agents with about one process per core.",
}
# Supervisor ticks run on their own queue so a backlog of work never delays them.
SUPERVISOR_QUEUE = "supervisor"

EXECUTE_TASK = "shepherd.execute"
TICK_TASK = "shepherd.supervisor.tick"


def routing_table() -> dict[str, str]:
    from scheduling.registry import work_type_specs

    table = {name: spec.queue for name, spec in work_type_specs().items()}
    unknown = {queue for queue in table.values() if queue not in WORK_QUEUES}
    if unknown:
        raise LookupError(f"work types route to undeclared queues: {sorted(unknown)}")
    return table


def queue_for(work_type: str) -> str:
    return routing_table()[work_type]


def work_queue_names() -> list[str]:
    return list(WORK_QUEUES)


def celery_task_queues() -> tuple[Queue, ...]:
    exchange = Exchange("shepherd", type="direct")
    names = [*WORK_QUEUES, SUPERVISOR_QUEUE]
    return tuple(Queue(name, exchange, routing_key=name) for name in names)


def celery_task_routes() -> dict[str, dict[str, str]]:
    # EXECUTE_TASK is routed per message (queue=...), so only the tick is listed.
    return {TICK_TASK: {"queue": SUPERVISOR_QUEUE, "routing_key": SUPERVISOR_QUEUE}}
