from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages

from ghl.models import SyncRun
from ghl.services import SyncAlreadyRunning, sync_run_start_queued
from workspaces.admin import WorkspaceAdmin
from workspaces.admin_scoping import WorkspaceScopedAdmin


@admin.register(SyncRun)
class SyncRunAdmin(WorkspaceScopedAdmin):
    list_display = (
        "workspace",
        "status",
        "mode",
        "trigger",
        "started_at",
        "finished_at",
        "leads_total",
        "leads_ok",
        "leads_skipped",
        "leads_failed",
        "messages_imported",
        "requests",
        "rate_limited",
    )
    list_filter = ("status", "mode", "workspace")
    readonly_fields = [f.name for f in SyncRun._meta.fields]
    ordering = ("-started_at",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.action(description="Sync all now (GHL)", permissions=("change",))
def sync_all_now(modeladmin, request, queryset):
    """Queue a full GHL sync of each selected workspace (a Celery task under soft/hard limits)."""
    for workspace in queryset:
        if not (workspace.ghl_location_id and workspace.ghl_token):
            modeladmin.message_user(
                request, f"{workspace.slug}: no GHL location id and token configured.", messages.ERROR
            )
            continue
        try:
            run = sync_run_start_queued(workspace=workspace, trigger="admin", shards=max(1, settings.GHL_SYNC_SHARDS))
        except SyncAlreadyRunning:
            modeladmin.message_user(
                request, f"{workspace.slug}: a sync is already running; try again when it ends.", messages.WARNING
            )
            continue
        modeladmin.message_user(request, f"{workspace.slug}: sync #{run.pk} queued.", messages.SUCCESS)


# The action belongs to this app (above workspaces): it joins the workspace admin from here.
WorkspaceAdmin.actions = [*(WorkspaceAdmin.actions or []), sync_all_now]
