from django import forms
from django.contrib import admin, messages

from api.models import ApiToken
from api.services import api_token_create, api_tokens_revoke


class ApiTokenCreateForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name", "rate_limit_per_minute"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "active"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at", "window_started_at", "window_count"]
    actions = ["revoke"]

    @admin.display(boolean=True)
    def active(self, obj: ApiToken) -> bool:
        return obj.active

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        # The owner of an existing token never changes; revoke and create instead.
        return [*self.readonly_fields, "user"] if obj else self.readonly_fields

    def get_fields(self, request, obj=None):
        return ["user", "name", "rate_limit_per_minute"] if obj is None else super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = api_token_create(
            user=form.cleaned_data["user"],
            name=form.cleaned_data["name"],
            rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"],
        )
        obj.pk = token.pk
        self.message_user(
            request, f"Token for {token.user}: {raw} — copy it now, it is not shown again.", messages.WARNING
        )

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead, so last_used_at and the owner stay on record

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        done = 0
        for user_id, ids in _ids_by_user(queryset).items():
            done += api_tokens_revoke(user=user_id, token_ids=ids)
        self.message_user(request, f"revoke: {done} done, {queryset.count() - done} already revoked")


def _ids_by_user(queryset) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for pk, user_id in queryset.values_list("pk", "user_id"):
        grouped.setdefault(user_id, []).append(pk)
    return grouped
