from django.contrib import admin

from project.admin_base import ReadOnlyAdmin, admin_action_run
from scheduling.models import Attempt, Dependency, Request, WorkItem, WorkItemEvent, WorkType
from scheduling.services import work_item_cancel, work_item_requeue, work_item_retry


def run_action(modeladmin, request, queryset, service, verb: str) -> None:
    actor = f"user:{request.user.get_username()}"
    admin_action_run(
        modeladmin,
        request,
        queryset,
        lambda pk: service(work_item_id=pk, actor=actor, reason=f"{verb} from admin"),
        verb,
    )


@admin.register(WorkType)
class WorkTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "queue", "priority", "max_attempts", "budget_seconds", "paused", "in_code"]
    list_filter = ["queue", "paused", "in_code"]
    list_editable = ["paused"]
    readonly_fields = ["name", "queue", "description", "payload_schema", "capabilities", "in_code", "updated_at"]


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = readonly_fields = [
        "number",
        "agent",
        "worker_pid",
        "started_at",
        "finished_at",
        "outcome",
        "cost",
        "late_outcome",
        "error",
    ]

    def has_add_permission(self, request, obj=None):
        return False


class EventInline(admin.TabularInline):
    model = WorkItemEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ["at", "kind", "attempt", "from_status", "to_status", "actor", "reason"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WorkItem)
class WorkItemAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "work_type",
        "status",
        "attempts",
        "priority",
        "queue",
        "agent_name",
        "progress_percent",
        "created_at",
    ]
    list_filter = ["status", "work_type", "queue"]
    search_fields = ["id"]
    list_select_related = ["work_type", "agent"]
    date_hierarchy = "created_at"
    actions = ["retry", "cancel", "requeue"]
    inlines = [AttemptInline, EventInline]
    # State belongs to the services: nothing a transition owns is editable here.
    fieldsets = [
        (None, {"fields": ["work_type", "status", "blocked_reason", "queue", "priority", "submitted_by"]}),
        ("Attempts", {"fields": ["attempt", "max_attempts", "requeue_count", "agent", "error"]}),
        ("Payload and result", {"fields": ["payload", "result", "cost_total"]}),
        ("Budgets (empty: the work type's)", {"fields": ["budget_seconds", "budget_seconds_total", "budget_cost"]}),
        (
            # Three clocks the supervisor keeps apart: the agent's heartbeat (dead
            # agent), the item's lease renewals (wedged process), progress (stall).
            "Progress and liveness",
            {
                "fields": [
                    "progress_percent",
                    "progress_message",
                    "progress_at",
                    "heartbeat_at",
                    "agent_heartbeat_at",
                    "lease_expires_at",
                ]
            },
        ),
        (
            "Times",
            {
                "fields": [
                    "created_at",
                    "not_before",
                    "complete_by",
                    "dispatched_at",
                    "started_at",
                    "finished_at",
                    "updated_at",
                ]
            },
        ),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    @admin.display(description="attempt", ordering="attempt")
    def attempts(self, obj):
        return f"{obj.attempt} of {obj.max_attempts + obj.requeue_count}"

    @admin.display(description="agent", ordering="agent__name")
    def agent_name(self, obj):
        return obj.agent.name if obj.agent else "-"

    @admin.display(description="agent heartbeat")
    def agent_heartbeat_at(self, obj):
        return obj.agent.last_heartbeat_at if obj.agent else "-"

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj):
        return f"{obj.progress:.0%}"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Everything is read-only; changes go through the actions, which call services.
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def has_delete_permission(self, request, obj=None):
        return False  # the event log and attempts are the audit trail

    def has_add_permission(self, request):
        return False  # submit through the forms, API or `manage.py submit`, which validate payloads

    @admin.action(description="Retry now (items waiting to retry)", permissions=["change"])
    def retry(self, request, queryset):
        run_action(self, request, queryset, work_item_retry, "retry")

    @admin.action(description="Cancel", permissions=["change"])
    def cancel(self, request, queryset):
        run_action(self, request, queryset, work_item_cancel, "cancel")

    @admin.action(description="Requeue (dead or cancelled items get a new attempt)", permissions=["change"])
    def requeue(self, request, queryset):
        run_action(self, request, queryset, work_item_requeue, "requeue")


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = ["work_item", "number", "agent", "outcome", "late_outcome", "started_at", "finished_at", "cost"]
    list_filter = ["outcome"]
    list_select_related = ["work_item", "agent"]


@admin.register(WorkItemEvent)
class WorkItemEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "work_item", "kind", "attempt", "from_status", "to_status", "actor", "reason"]
    list_filter = ["kind", "to_status"]
    list_select_related = ["work_item"]


class RequestItemInline(admin.TabularInline):
    model = WorkItem
    fields = ["request_key", "work_type", "status", "progress", "attempt"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Request)
class RequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "submitted_by", "created_at"]
    search_fields = ["name"]
    inlines = [RequestItemInline]


@admin.register(Dependency)
class DependencyAdmin(ReadOnlyAdmin):
    list_display = ["id", "parent", "child"]
    list_select_related = ["parent", "child"]
