from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SchedulingConfig(AppConfig):
    name = "scheduling"
    verbose_name = "Scheduling"

    def ready(self) -> None:
        from scheduling import registry

        registry.load_work_type_modules()
        post_migrate.connect(_sync_work_types, sender=self)


def _sync_work_types(**kwargs) -> None:
    from scheduling.services import work_types_sync

    work_types_sync(using=kwargs.get("using", "default"))
