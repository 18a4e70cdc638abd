import threading

from django.contrib import admin

from project.admin_base import ReadOnlyAdmin, admin_action_run
from scheduling.blocking import EXPLANATIONS, BlockingFacts
from scheduling.models import Attempt, Dependency, Queue, Request, SubmitterClock, WorkItem, WorkItemEvent, WorkType
from scheduling.selectors import queue_depths
from scheduling.services import queue_pause, work_item_cancel, work_item_requeue, work_item_retry, work_type_pause


def run_action(modeladmin, request, queryset, service, verb: str) -> None:
    actor = f"user:{request.user.get_username()}"
    admin_action_run(
        modeladmin,
        request,
        queryset,
        lambda pk: service(work_item_id=pk, actor=actor, reason=f"{verb} from admin"),
        verb,
    )


def _pause_action(modeladmin, request, queryset, service, *, paused: bool) -> None:
    verb = "pause" if paused else "resume"
    admin_action_run(modeladmin, request, queryset, lambda pk: service(name=pk, paused=paused), verb)


@admin.register(WorkType)
class WorkTypeAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "queue",
        "priority",
        "max_attempts",
        "max_concurrency",
        "rate_limit",
        "budget_seconds",
        "paused",
        "in_code",
    ]
    list_filter = ["queue", "paused", "in_code"]
    # Pausing goes through the actions (services): resuming releases what waited.
    readonly_fields = [
        "name",
        "queue",
        "description",
        "payload_schema",
        "capabilities",
        "paused",
        "typical_run_seconds",
        "in_code",
        "updated_at",
    ]
    actions = ["pause", "resume"]

    @admin.action(description="Pause (new items wait in the database)", permissions=["change"])
    def pause(self, request, queryset):
        _pause_action(self, request, queryset, work_type_pause, paused=True)

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request, queryset):
        _pause_action(self, request, queryset, work_type_pause, paused=False)


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ["name", "paused", "pending", "queued", "running", "updated_at"]
    fields = readonly_fields = ["name", "paused", "updated_at"]
    actions = ["pause", "resume"]

    def changelist_view(self, request, extra_context=None):
        _local.depths = queue_depths()
        return super().changelist_view(request, extra_context)

    def _depth(self, obj, state: str) -> int:
        return getattr(_local, "depths", {}).get(obj.name, {}).get(state, 0)

    @admin.display(description="pending")
    def pending(self, obj):
        return self._depth(obj, "pending")

    @admin.display(description="queued")
    def queued(self, obj):
        return self._depth(obj, "queued")

    @admin.display(description="running")
    def running(self, obj):
        return self._depth(obj, "running")

    def has_add_permission(self, request):
        return False  # queues come from scheduling.routing

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Pause (release nothing more; running items finish)", permissions=["change"])
    def pause(self, request, queryset):
        _pause_action(self, request, queryset, queue_pause, paused=True)

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request, queryset):
        _pause_action(self, request, queryset, queue_pause, paused=False)


# Per-request facts for computed columns; the admin instance is shared by threads.
_local = threading.local()


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
        "waiting_because",
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
        (
            None,
            {
                "fields": [
                    "work_type",
                    "status",
                    "waiting_because",
                    "queue",
                    "priority",
                    "effective_priority",
                    "requirements",
                    "submitted_by",
                ]
            },
        ),
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

    def changelist_view(self, request, extra_context=None):
        _local.facts = BlockingFacts()
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        _local.facts = BlockingFacts()
        # Everything is read-only; changes go through the actions, which call services.
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="blocked reason")
    def waiting_because(self, obj):
        """Why a pending item waits (scheduling.blocking); empty otherwise."""
        facts = getattr(_local, "facts", None) or BlockingFacts()
        reason = facts.item_reason(obj)
        return f"{reason}: {EXPLANATIONS[reason]}" if reason in EXPLANATIONS else (reason or "-")

    @admin.display(description="agent", ordering="agent__name")
    def agent_name(self, obj):
        return obj.agent.name if obj.agent else "-"

    @admin.display(description="agent heartbeat")
    def agent_heartbeat_at(self, obj):
        return obj.agent.last_heartbeat_at if obj.agent else "-"

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj):
        return f"{obj.progress:.0%}"

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


@admin.register(SubmitterClock)
class SubmitterClockAdmin(ReadOnlyAdmin):
    """Fair-share turns handed out per queue and submitter (0: anonymous submissions)."""

    list_display = ["queue", "submitter_key", "last_seq"]
    list_filter = ["queue"]
