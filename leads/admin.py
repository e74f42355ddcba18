from __future__ import annotations

from django.contrib import admin

from leads.models import Lead
from workspaces.admin_scoping import WorkspaceScopedAdmin


@admin.register(Lead)
class LeadAdmin(WorkspaceScopedAdmin):
    operator_permissions = ("view", "change")
    list_display = (
        "id",
        "workspace",
        "__str__",
        "email",
        "phone_e164",
        "sentiment",
        "status",
        "last_inbound_at",
        "last_message_at",
    )
    list_filter = ("workspace", "sentiment", "status", "sms_dnd")
    search_fields = (
        "email",
        "phone_e164",
        "phone_raw",
        "ghl_contact_id",
        "emailbison_lead_id",
        "first_name",
        "last_name",
    )
    list_select_related = ("workspace",)
    readonly_fields = ("created_at", "updated_at", "last_inbound_at", "last_outbound_at", "last_message_at")
