"""Admin base classes shared by the apps."""

from collections.abc import Callable

from django.contrib import admin, messages


class ReadOnlyAdmin(admin.ModelAdmin):
    """For audit rows (events, attempts, interventions, runs): written only by services."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def admin_action_run(modeladmin, request, queryset, act: Callable[[int], bool], verb: str) -> None:
    """Apply `act` (a service call that says whether it took effect) to each selected
    row and report "N done, M already handled"."""
    done = sum(1 for pk in queryset.values_list("pk", flat=True) if act(pk))
    handled = queryset.count() - done
    level = messages.SUCCESS if done else messages.WARNING
    modeladmin.message_user(request, f"{verb}: {done} done, {handled} already handled or not allowed", level)
