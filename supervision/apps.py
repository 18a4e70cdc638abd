from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SupervisionConfig(AppConfig):
    name = "supervision"
    verbose_name = "Supervision"

    def ready(self) -> None:
        post_migrate.connect(_ensure_schedule, sender=self)


def _ensure_schedule(**kwargs) -> None:
    from supervision.services import supervisor_schedule_ensure

    supervisor_schedule_ensure()
