from celery import shared_task
from django.db import InterfaceError, OperationalError, connection

from agents import services
from scheduling.routing import EXECUTE_TASK


@shared_task(name=EXECUTE_TASK, bind=True, max_retries=None)
def execute(self, work_item_id: int, attempt: int) -> str:
    try:
        return services.work_item_execute(work_item_id=work_item_id, attempt=attempt, task_id=self.request.id)
    except (OperationalError, InterfaceError):
        # The database restarted under this process. Celery's Django fixup keeps
        # connections for CELERY_DB_REUSE_MAX tasks, so drop the dead one here and
        # run the message again (the fenced claim makes the repeat harmless).
        connection.close()
        raise self.retry(countdown=1) from None
