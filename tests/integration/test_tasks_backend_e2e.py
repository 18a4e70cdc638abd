"""django.tasks through Shepherd with a real celery worker: enqueue with Django's
API, observe the outcome through Django's API."""

import pytest
from django.tasks import TaskResultStatus

from scheduling.models import WorkItem
from tests import django_tasks
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_django_tasks_run_as_supervised_work_items(platform):
    platform.start_worker("tasks", queues="default,cpu", concurrency=2)
    platform.start_supervisor_loop()  # promotes the failing task's retries
    added = django_tasks.add.enqueue(20, 22)
    shouted = django_tasks.shout.enqueue("hey", times=3)
    refused = django_tasks.refuse.enqueue("no thanks")
    contextual = django_tasks.whoami.enqueue("ctx")
    results = [added, shouted, refused, contextual]

    def all_finished():
        for result in results:
            result.refresh()
        return all(result.is_finished for result in results)

    wait_until(all_finished, timeout=120, what="every task to finish", logs=platform)

    assert added.status == TaskResultStatus.SUCCESSFUL and added.return_value == 42
    assert shouted.return_value == {"word": "HEYHEYHEY"}
    assert contextual.return_value == {"label": "ctx", "attempt": 1, "result_id": contextual.id}
    assert added.worker_ids and added.worker_ids[0].startswith("tasks@")
    assert WorkItem.objects.get(pk=int(shouted.id)).queue == "cpu"

    # A raising task is retried like any item (3 attempts), then reads as FAILED
    # with one error per attempt naming the exception class.
    assert refused.status == TaskResultStatus.FAILED
    assert refused.attempts == 3 and len(refused.errors) == 3
    assert {error.exception_class_path for error in refused.errors} == {"tests.django_tasks.Refused"}
    assert refused.errors[0].exception_class is django_tasks.Refused
    assert "no thanks" in refused.errors[0].traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = refused.return_value
