from celery import shared_task

from agents import services
from scheduling.routing import EXECUTE_TASK


@shared_task(name=EXECUTE_TASK, bind=True)
def execute(self, work_item_id: int, attempt: int) -> str:
    return services.work_item_execute(work_item_id=work_item_id, attempt=attempt, task_id=self.request.id)
