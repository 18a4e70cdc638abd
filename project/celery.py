"""The one Celery app. Queues and routes come from scheduling.routing."""

import os

from celery import Celery

from project.kombu_fixes import redis_qos_tolerate_closed_channel
from scheduling import routing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("shepherd")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = routing.celery_task_queues()
app.conf.task_routes = routing.celery_task_routes()
app.conf.task_default_queue = "default"
app.conf.task_default_exchange = "shepherd"
app.conf.task_default_routing_key = "default"
app.autodiscover_tasks()
redis_qos_tolerate_closed_channel()

# Worker lifecycle handlers must be connected before the worker sends worker_init.
import agents.signals  # noqa: E402,F401
