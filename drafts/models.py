from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from leads.models import Lead
from messaging.models import Channel, Message
from workspaces.models import Workspace


class DraftStatus(models.TextChoices):
    PENDING = "pending"
    GENERATING = "generating"
    READY = "ready"
    FAILED = "failed"
    SKIPPED = "skipped"
    APPROVED = "approved"
    SCHEDULED = "scheduled"  # approved, waiting for the lead's send window (quiet hours)
    SENT = "sent"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


class Draft(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="drafts")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="drafts")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="drafts")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=DraftStatus.choices, default=DraftStatus.PENDING)
    content = models.TextField(blank=True, default="")
    subject = models.CharField(max_length=998, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    incomplete_reason = models.CharField(max_length=64, blank=True, default="")
    usage = models.JSONField(blank=True, default=dict)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Short machine code when failed/skipped/superseded: timeout, max_output_tokens, empty_output,
    # server_error, rate_limited, connection_error, bad_request, auth, config, too_long, stale, blacklisted...
    failure_reason = models.CharField(max_length=32, blank=True, default="")
    generation_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    offered_slots = models.JSONField(blank=True, default=list)
    prompt_version = models.CharField(max_length=32, blank=True, default="")
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    sent_message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # When a scheduled send may go (the opening of the lead's send window), UTC.
    send_after = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message"],
                condition=~Q(status="superseded"),
                name="draft_one_live_per_message",
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "status", "-created_at"], name="draft_ws_status"),
            models.Index(fields=["status", "send_after"], name="draft_status_send_after"),
        ]

    def __str__(self) -> str:
        return f"draft #{self.pk} ({self.status})"


class MessageWorkClaim(models.Model):
    """A lease on one inbound message's classify-and-draft work (``drafts.claims``).

    A row exists only while a task works on the message (or until its lease expires, when the
    task died): two deliveries of the task never work on it at once, and no database connection
    is held meanwhile (the LLM calls take seconds). No foreign key: the row is short-lived and
    its message may be deleted under it.
    """

    message_id = models.BigIntegerField(primary_key=True)
    token = models.CharField(max_length=32)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"claim on message #{self.message_id}"
