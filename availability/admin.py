from __future__ import annotations

import logging

from django.contrib import admin, messages

from availability.models import AvailabilitySnapshot
from workspaces.admin import workspace_inline_register
from workspaces.admin_scoping import WorkspaceScopedAdmin, WorkspaceScopedInline

logger = logging.getLogger(__name__)

_DISPLAY_FIELDS = (
    "provider",
    "slot_count",
    "fetched_at",
    "stale",
    "stale_at",
    "last_error",
    "fallback_used",
    "fallback_reason",
    "consecutive_failures",
    "next_attempt_at",
)


class AvailabilitySnapshotInline(WorkspaceScopedInline, admin.StackedInline):
    """Read-only availability state on the Workspace admin page."""

    model = AvailabilitySnapshot
    verbose_name_plural = "Availability"
    fields = _DISPLAY_FIELDS
    readonly_fields = _DISPLAY_FIELDS
    extra = 0
    max_num = 1
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(boolean=True, description="stale")
    def stale(self, obj):
        return obj.is_stale

    @admin.display(description="slots")
    def slot_count(self, obj):
        return obj.slot_count


workspace_inline_register(AvailabilitySnapshotInline)


@admin.register(AvailabilitySnapshot)
class AvailabilitySnapshotAdmin(WorkspaceScopedAdmin):
    operator_permissions = ("view", "change")  # refresh now
    list_display = ("workspace", "provider", "slot_count", "fetched_at", "stale", "fallback_used", "short_error")
    list_filter = ("provider", "fallback_used")
    search_fields = ("workspace__slug", "workspace__name")
    list_select_related = ("workspace",)
    readonly_fields = (
        "workspace",
        *_DISPLAY_FIELDS,
        "resolved_ids",
        "slots_utc",
        "range_start",
        "range_end",
        "last_attempt_at",
        "last_duration_ms",
        "refresh_lease_until",
        "updated_at",
    )
    fields = readonly_fields
    actions = ("refresh_now",)

    def has_add_permission(self, request):
        return False

    @admin.display(boolean=True, description="stale")
    def stale(self, obj):
        return obj.is_stale

    @admin.display(description="slots")
    def slot_count(self, obj):
        return obj.slot_count

    @admin.display(description="last error")
    def short_error(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    @admin.action(
        description="Refresh availability now (in the background, ignoring the failure backoff)",
        permissions=("change",),
    )
    def refresh_now(self, request, queryset):
        """Enqueue a forced refresh per selected workspace; never fails the admin page if the broker is down."""
        from availability.tasks import enqueue_refresh

        ids = list(queryset.order_by("workspace_id").values_list("workspace_id", flat=True))
        enqueued = 0
        for workspace_id in ids:
            try:
                enqueue_refresh(workspace_id, force=True)
            except Exception as exc:  # noqa: BLE001 - broker down/unreachable: tell the operator, no 500
                logger.warning("availability refresh_now: enqueue failed: %s", exc.__class__.__name__)
                self.message_user(
                    request,
                    f"Could not enqueue the refresh ({exc.__class__.__name__}: the task broker is unreachable); "
                    f"{enqueued} of {len(ids)} workspace(s) enqueued. Try again, or run "
                    "`manage.py refresh_availability --workspace <slug>`.",
                    level=messages.ERROR,
                )
                return
            enqueued += 1
        self.message_user(request, f"Refresh enqueued for {enqueued} workspace(s).")
