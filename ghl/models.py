from __future__ import annotations

from django.db import models
from django.db.models import Q

from workspaces.models import Workspace


class SyncRun(models.Model):
    """One ``sync_all`` of a workspace with GHL: its progress, its counts and its per-lead errors.

    At most one runs per workspace at a time: a partial unique constraint on
    (workspace) where status is ``running`` (a second start fails in the
    database, whatever process asks).
    """

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"  # every lead synced or skipped
        PARTIAL = "partial"  # finished, some leads failed
        FAILED = "failed"  # the sync as a whole could not run (bad token, forbidden location...)

    class Mode(models.TextChoices):
        FULL = "full"
        INCREMENTAL = "incremental"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sync_runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.FULL)
    trigger = models.CharField(max_length=32, blank=True, default="", help_text="command, admin, beat")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # The run's lead work is split into this many shards (one per worker process that takes part).
    shards = models.PositiveSmallIntegerField(default=1)
    shards_done = models.PositiveSmallIntegerField(default=0)
    leads_total = models.PositiveIntegerField(default=0)
    leads_ok = models.PositiveIntegerField(default=0)
    leads_skipped = models.PositiveIntegerField(default=0)
    leads_failed = models.PositiveIntegerField(default=0)
    messages_imported = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    rate_limited = models.PositiveIntegerField(default=0, help_text="429 answers seen")
    # {code: {"count": n, "message": redacted text of the last one, "leads": [lead ids, at most 20]}}
    errors = models.JSONField(blank=True, default=dict)
    error = models.TextField(blank=True, default="", help_text="Why the sync as a whole failed (redacted).")

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace"], condition=Q(status="running"), name="syncrun_one_running_per_workspace"
            ),
        ]
        indexes = [models.Index(fields=["workspace", "-started_at"], name="syncrun_ws_started")]

    def __str__(self) -> str:
        return f"sync {self.workspace_id} #{self.pk} ({self.status})"
