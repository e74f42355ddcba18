from __future__ import annotations

from django.db import models

from workspaces.models import Workspace


class AvailabilitySnapshot(models.Model):
    """The workspace's cached free meeting slots (one row per workspace)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="availability")
    provider = models.CharField(max_length=16, blank=True, default="")
    resolved_ids = models.JSONField(blank=True, default=dict)
    slots_utc = models.JSONField(blank=True, default=list, help_text="ISO-8601 UTC start times")
    range_start = models.DateTimeField(null=True, blank=True)
    range_end = models.DateTimeField(null=True, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    stale_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    fallback_used = models.CharField(max_length=64, blank=True, default="")
    fallback_reason = models.TextField(blank=True, default="")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # Claimed by the refresh in progress, so overlapping runs (beat + command,
    # a redelivered task) never fetch the same workspace twice at once.
    refresh_lease_until = models.DateTimeField(null=True, blank=True)
    # Set by the beat dispatcher when it enqueues this workspace's task (cleared
    # when the task runs), so a workspace whose task still waits in the queue
    # is not enqueued again. Lapses with the task's expiry if it never runs.
    refresh_queued_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["next_attempt_at"], name="availability_next_attempt")]

    def __str__(self) -> str:
        return f"availability of {self.workspace_id}"

    @property
    def slot_count(self) -> int:
        return len(self.slots_utc or [])

    @property
    def is_stale(self) -> bool:
        from django.utils import timezone

        return self.stale_at is None or self.stale_at <= timezone.now()
