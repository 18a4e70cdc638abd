from django.conf import settings
from django.contrib import admin, messages

from project.admin_base import ReadOnlyAdmin, admin_action_run
from supervision.models import Escalation, Intervention, SupervisorLease, SupervisorRun
from supervision.services import escalation_acknowledge, escalation_resolve


@admin.register(SupervisorRun)
class SupervisorRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "started_at", "finished_at", "findings", "actions", "released", "holder", "has_error"]

    @admin.display(boolean=True, description="error")
    def has_error(self, obj):
        return bool(obj.error)

    def changelist_view(self, request, extra_context=None):

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
    list_display = ["at", "monitor", "rule", "action", "outcome", "work_item", "attempt", "agent", "work_type"]
    list_filter = ["monitor", "rule", "action", "outcome"]
    list_select_related = ["work_item", "agent"]


def _escalations_move(modeladmin, request, queryset, service, verb: str) -> None:
    by = request.user.get_username()
    admin_action_run(modeladmin, request, queryset, lambda pk: service(escalation_id=pk, by=by), verb)


@admin.register(Escalation)
class EscalationAdmin(ReadOnlyAdmin):
    list_display = ["id", "opened_at", "status", "problem", "subject", "work_item", "acknowledged_by", "resolved_by"]
    list_filter = ["status", "problem"]
    search_fields = ["subject", "summary"]
    list_select_related = ["work_item"]
    actions = ["acknowledge", "resolve"]

    def has_change_permission(self, request, obj=None):
        # The list offers the actions (they need change permission); a single
        # escalation opens read-only, since only the actions move its state.
        return obj is None and request.user.has_perm("supervision.change_escalation")

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    @admin.action(description="Acknowledge selected escalations", permissions=["change"])
    def acknowledge(self, request, queryset):
        _escalations_move(self, request, queryset, escalation_acknowledge, "acknowledge")

    @admin.action(description="Resolve selected escalations", permissions=["change"])
    def resolve(self, request, queryset):
        _escalations_move(self, request, queryset, escalation_resolve, "resolve")


@admin.register(SupervisorLease)
class SupervisorLeaseAdmin(ReadOnlyAdmin):
    list_display = ["name", "holder", "acquired_at", "expires_at"]
