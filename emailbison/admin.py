from __future__ import annotations

from django.contrib import admin

from emailbison.models import SenderEmail
from workspaces.admin_scoping import WorkspaceScopedAdmin


@admin.register(SenderEmail)
class SenderEmailAdmin(WorkspaceScopedAdmin):
    """The EmailBison sender snapshot per workspace: read-only (EmailBison is the source)."""

    list_display = (
        "email",
        "workspace",
        "sender_id",
        "status",
        "is_sendable",
        "is_default",
        "sends_today",
        "last_checked_at",
    )
    list_filter = ("workspace", "is_sendable", "listed")
    search_fields = ("email", "sender_id")
    list_select_related = ("workspace",)
    readonly_fields = [field.name for field in SenderEmail._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
