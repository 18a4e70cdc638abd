"""Django's task API on Shepherd: `TASKS = {"default": {"BACKEND": "scheduling.tasks_backend.ShepherdBackend"}}`.

Each `@task` enqueue becomes a work item of the internal `django.task` work type,
so it is stored, prioritised, released, claimed, retried and supervised like any
other item; `get_result` reads the item back. The result id is the item id.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from project import exceptions
from project.exceptions import Cancelled, PermanentError
from scheduling import routing
from scheduling.models import AttemptOutcome, WorkItem, WorkItemStatus
from scheduling.registry import work_type

WORK_TYPE = "django.task"
S = WorkItemStatus

_STATUS = {
    S.PENDING: TaskResultStatus.READY,
    S.QUEUED: TaskResultStatus.READY,
    S.RETRY_WAIT: TaskResultStatus.READY,
    S.RUNNING: TaskResultStatus.RUNNING,
    S.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    S.DEAD: TaskResultStatus.FAILED,
    S.CANCELLED: TaskResultStatus.FAILED,
}


def shepherd_priority(django_priority: int) -> int:
    """Django's -100..100 (default 0) onto Shepherd's 0..9 (default 5), order kept."""
    if django_priority >= 0:
        return 5 + round(django_priority * 4 / TASK_MAX_PRIORITY)
    return 5 - round(django_priority * 5 / TASK_MIN_PRIORITY)


def _task_load(module_path: str) -> Task:
    task = import_string(module_path)
    if not isinstance(task, Task):
        # Only functions decorated with @task run: a payload can never name an arbitrary callable.
        raise PermanentError(f"{module_path} is not a django.tasks Task")
    return task


@work_type(
    WORK_TYPE,
    queue=DEFAULT_TASK_QUEUE_NAME,
    internal=True,
    description="A function decorated with django.tasks' @task, enqueued through ShepherdBackend.",
    payload_schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["task", "args", "kwargs"],
        "properties": {
            "task": {"type": "string", "description": "Module path of the @task function."},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
        },
    },
)
def django_task_run(ctx: Any, payload: dict) -> Any:
    task = _task_load(payload["task"])
    args, kwargs = payload["args"], payload["kwargs"]
    if task.takes_context:
        result = ShepherdBackend.task_result_build(
            task=task, item=WorkItem.objects.get(pk=ctx.work_item_id), attempts=None
        )
        return normalize_json(task.call(TaskContext(task_result=result), *args, **kwargs))
    return normalize_json(task.call(*args, **kwargs))


class ShepherdBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        # Django's queue names are Shepherd's work queues unless QUEUES narrows them.
        self.queues = set(params.get("QUEUES") or routing.work_queue_names())

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if task.queue_name not in routing.work_queue_names():
            raise InvalidTask(f"Queue {task.queue_name!r} is not a Shepherd work queue (scheduling.routing).")

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        from scheduling.services import work_items_submit_batch

        self.validate_task(task)
        payload = {"task": task.module_path, "args": normalize_json(list(args)), "kwargs": normalize_json(kwargs)}
        ids = work_items_submit_batch(
            work_type=WORK_TYPE,
            payloads=[payload],
            priority=shepherd_priority(task.priority),
            not_before=task.run_after,
            queue=task.queue_name,
            allow_internal=True,
        ).ids
        return self.get_result(str(ids[0]))

    def get_result(self, result_id: str) -> TaskResult:
        try:
            item = WorkItem.objects.get(pk=int(result_id), work_type_id=WORK_TYPE)
        except (ValueError, TypeError, WorkItem.DoesNotExist):
            raise TaskResultDoesNotExist(result_id) from None
        attempts = list(item.attempts.select_related("agent").order_by("number"))
        return self.task_result_build(task=_task_load(item.payload["task"]), item=item, attempts=attempts)

    @staticmethod
    def task_result_build(*, task: Task, item: WorkItem, attempts: list | None) -> TaskResult:
        attempts = attempts if attempts is not None else list(item.attempts.select_related("agent"))
        run_after: datetime | None = item.not_before if item.status == S.PENDING else None
        result = TaskResult(
            task=task.using(queue_name=item.queue, run_after=run_after),
            id=str(item.pk),
            status=_STATUS[item.status],
            enqueued_at=item.created_at,
            started_at=attempts[0].started_at if attempts else None,
            finished_at=item.finished_at,
            last_attempted_at=attempts[-1].started_at if attempts else None,
            args=item.payload["args"],
            kwargs=item.payload["kwargs"],
            backend=task.backend,
            errors=[_task_error(a.error) for a in attempts if a.outcome != AttemptOutcome.SUCCEEDED and a.error],
            worker_ids=[a.agent.name if a.agent else "" for a in attempts],
        )
        if item.status == S.CANCELLED:
            result.errors.append(TaskError(exception_class_path=_class_path(Cancelled), traceback=item.error))
        if item.status == S.SUCCEEDED:
            object.__setattr__(result, "_return_value", item.result)
        return result


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _task_error(error: str) -> TaskError:
    """Agents store `Name: message`, then the traceback, whose last line names the
    exception with its module (Python prints builtins bare)."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    name = (lines[-1] if lines else error).split(":", 1)[0].strip()
    if "." in name and " " not in name:
        return TaskError(exception_class_path=name, traceback=error)
    for module in (builtins, exceptions):
        if isinstance(getattr(module, name, None), type):
            return TaskError(exception_class_path=f"{module.__name__}.{name}", traceback=error)
    return TaskError(exception_class_path="builtins.Exception", traceback=error)
