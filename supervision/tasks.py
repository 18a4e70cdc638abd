from celery import shared_task

from scheduling.routing import TICK_TASK
from supervision import services


@shared_task(name=TICK_TASK, ignore_result=True)
def tick() -> None:
    services.supervisor_tick()
