from django.contrib import admin

from agents.models import Agent
from agents.services import agent_drain, agent_resume
from project.admin_base import admin_action_run


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
        admin_action_run(self, request, queryset, lambda pk: agent_drain(agent_id=pk), "drain")

    @admin.action(description="Resume taking work")
    def resume(self, request, queryset):
        admin_action_run(self, request, queryset, lambda pk: agent_resume(agent_id=pk), "resume")
