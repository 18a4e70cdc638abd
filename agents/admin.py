from django.contrib import admin, messages

from agents.models import Agent
from agents.services import agent_drain, agent_resume


def _agents_act(modeladmin, request, queryset, service, verb: str) -> None:
    done = sum(1 for pk in queryset.values_list("pk", flat=True) if service(agent_id=pk))
    level = messages.SUCCESS if done else messages.WARNING
    modeladmin.message_user(request, f"{verb}: {done} done, {queryset.count() - done} already handled", level)


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "pid", "hostname", "concurrency", "queues", "last_heartbeat_at", "started_at"]
    list_filter = ["status", "hostname"]
    search_fields = ["name", "hostname"]
    readonly_fields = [f.name for f in Agent._meta.fields]
    actions = ["drain", "resume"]

    def has_add_permission(self, request):
        return False  # agents register themselves when their worker starts

    @admin.action(description="Drain: finish current work, take no more")
    def drain(self, request, queryset):
        _agents_act(self, request, queryset, agent_drain, "drain")

    @admin.action(description="Resume taking work")
    def resume(self, request, queryset):
        _agents_act(self, request, queryset, agent_resume, "resume")
