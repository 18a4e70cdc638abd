from django.contrib import admin

from agents.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "pid", "hostname", "concurrency", "queues", "last_heartbeat_at", "started_at"]
    list_filter = ["status", "hostname"]
    search_fields = ["name", "hostname"]
    readonly_fields = [f.name for f in Agent._meta.fields]

    def has_add_permission(self, request):
        return False  # agents register themselves when their worker starts
