from django.conf import settings
from django.contrib import admin

from project.admin_base import ReadOnlyAdmin
from supervision.models import Intervention, SupervisorLease, SupervisorRun


@admin.register(SupervisorRun)
class SupervisorRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "started_at", "finished_at", "findings", "actions", "released", "holder", "has_error"]

    @admin.display(boolean=True, description="error")
    def has_error(self, obj):
        return bool(obj.error)

    def changelist_view(self, request, extra_context=None):
        from django.contrib import messages

        from supervision.selectors import supervisor_last_run

        last = supervisor_last_run()
        if last is None or last["silent"]:
            age = "never run" if last is None else f"last ran {last['age_seconds']}s ago"
            messages.warning(
                request,
                f"The supervisor is silent ({age}; interval "
                f"{settings.SUPERVISOR_INTERVAL_SECONDS:g}s). Is celery beat running?",
            )
        return super().changelist_view(request, extra_context)


@admin.register(Intervention)
class InterventionAdmin(ReadOnlyAdmin):
    list_display = ["at", "monitor", "rule", "action", "outcome", "work_item", "attempt", "agent"]
    list_filter = ["monitor", "rule", "action", "outcome"]
    list_select_related = ["work_item", "agent"]


@admin.register(SupervisorLease)
class SupervisorLeaseAdmin(ReadOnlyAdmin):
    list_display = ["name", "holder", "acquired_at", "expires_at"]
