from __future__ import annotations

from django.contrib import admin

from availability.models import AvailabilitySnapshot

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


class AvailabilitySnapshotInline(admin.StackedInline):
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


@admin.register(AvailabilitySnapshot)
class AvailabilitySnapshotAdmin(admin.ModelAdmin):
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

    @admin.action(description="Refresh availability now (in the background)")
    def refresh_now(self, request, queryset):
        from availability.tasks import availability_refresh_workspace

        ids = list(queryset.values_list("workspace_id", flat=True))
        for workspace_id in ids:
            availability_refresh_workspace.delay(workspace_id)
        self.message_user(request, f"Refresh enqueued for {len(ids)} workspace(s).")
