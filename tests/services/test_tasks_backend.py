"""The django.tasks backend without a worker: enqueue, validation, get_result."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.tasks import TaskResultStatus, default_task_backend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone

from scheduling import services
from scheduling.models import WorkItem
from scheduling.tasks_backend import ShepherdBackend, shepherd_priority
from tests import django_tasks
from tests.factories import agent_create, item_claim

pytestmark = pytest.mark.django_db


def test_the_default_backend_is_shepherd():
    assert isinstance(django_tasks.add.get_backend(), ShepherdBackend)


def test_enqueue_stores_a_work_item():
    result = django_tasks.add.enqueue(2, 3)
    item = WorkItem.objects.get(pk=int(result.id))
    assert (item.work_type_id, item.queue, item.priority) == ("django.task", "default", 5)
    assert item.payload == {"task": "tests.django_tasks.add", "args": [2, 3], "kwargs": {}}
    assert result.status == TaskResultStatus.READY and result.args == [2, 3]
    assert result.enqueued_at == item.created_at and result.started_at is None


def test_queue_priority_and_run_after_map_onto_the_item():
    later = timezone.now() + timedelta(hours=1)
    result = django_tasks.shout.using(run_after=later).enqueue("hey", times=3)
    item = WorkItem.objects.get(pk=int(result.id))
    assert (item.queue, item.priority, item.not_before) == ("cpu", shepherd_priority(50), later)
    services.work_items_release()
    item.refresh_from_db()
    assert item.status == "pending"  # not before run_after
    assert result.task.run_after == later


def test_priority_mapping_keeps_order_and_ends():
    mapped = [shepherd_priority(p) for p in range(-100, 101)]
    assert mapped[0] == 0 and mapped[-1] == 9 and shepherd_priority(0) == 5
    assert mapped == sorted(mapped)


def test_invalid_tasks_are_refused_before_anything_is_stored():
    with pytest.raises(InvalidTask, match=r"Queue 'gpu' is not valid"):
        django_tasks.add.using(queue_name="gpu")
    with pytest.raises(InvalidTask, match="aware"):
        django_tasks.add.using(run_after=timezone.now().replace(tzinfo=None))
    with pytest.raises(TypeError):
        django_tasks.add.enqueue(object(), 1)  # not JSON
    assert WorkItem.objects.count() == 0


def test_get_result_follows_the_item():
    result = django_tasks.add.enqueue(1, 1)
    agent = agent_create()
    item = WorkItem.objects.get(pk=int(result.id))
    services.work_items_release()
    item.refresh_from_db()
    assert item_claim(item, agent)
    result.refresh()
    assert result.status == TaskResultStatus.RUNNING and result.worker_ids == [agent.name]
    services.work_item_succeed(work_item_id=item.pk, attempt=1, actor="agent:a", result=2)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2 and result.finished_at


def test_get_result_of_unknown_or_foreign_ids():
    other = services.work_item_submit(work_type="demo.noop")
    for result_id in ("999999", "abc", str(other.pk)):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)


def test_cancelled_items_read_as_failed():
    result = django_tasks.add.enqueue(1, 2)
    services.work_item_cancel(work_item_id=int(result.id), actor="user:x", reason="not needed")
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class_path == "project.exceptions.Cancelled"
