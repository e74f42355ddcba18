from __future__ import annotations

from django.db import models
from django.db.models import Q

from leads.models import Lead, Sentiment
from workspaces.models import Workspace


class Channel(models.TextChoices):
    SMS = "sms"
    EMAIL = "email"


class Direction(models.TextChoices):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Origin(models.TextChoices):
    """How a message reached Leadline: decides whether it may still start draft work."""

    WEBHOOK = "webhook", "webhook (live)"
    SYNC = "sync", "imported by a sync"
    SENT = "sent", "sent by Leadline"


class Delivery(models.TextChoices):
    """Where an outbound message Leadline sends stands with the provider."""

    NONE = "", "-"  # inbound, or an outbound message Leadline did not send
    SENDING = "sending", "sending"  # written before the provider call
    SENT = "sent", "sent"  # the provider accepted it
    FAILED = "failed", "failed"  # the provider refused it: nothing went out
    UNCONFIRMED = "unconfirmed", "unconfirmed"  # may or may not have gone out: never sent again


# Deliveries that claim a draft's one send (the ``message_one_send_per_draft`` constraint).
SEND_CLAIMED_DELIVERIES = (Delivery.SENDING, Delivery.SENT, Delivery.UNCONFIRMED)


class Message(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="messages")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="messages")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    body = models.TextField(blank=True, default="")
    subject = models.CharField(max_length=998, blank=True, default="")
    body_hash = models.CharField(max_length=64, blank=True, default="", help_text="sha256 of the normalised body")
    sent_at = models.DateTimeField()
    ghl_message_id = models.CharField(max_length=64, blank=True, default="")
    ghl_conversation_id = models.CharField(max_length=64, blank=True, default="")
    emailbison_reply_id = models.CharField(max_length=64, blank=True, default="")
    sentiment = models.CharField(max_length=32, choices=Sentiment.choices, blank=True, default="")
    classified_at = models.DateTimeField(null=True, blank=True)
    provider_interested = models.BooleanField(
        null=True, blank=True, help_text="The provider's own interest flag (EmailBison reply.interested)."
    )
    draft_source = models.ForeignKey("drafts.Draft", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Set when the classify+draft task was enqueued (and again by the sweeper).
    work_enqueued_at = models.DateTimeField(null=True, blank=True)
    # How many times the work was enqueued (webhook + sweeper); the sweeper gives up after a few.
    work_enqueue_count = models.PositiveSmallIntegerField(default=0)
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.WEBHOOK)
    delivery = models.CharField(max_length=12, choices=Delivery.choices, blank=True, default=Delivery.NONE)
    # When Leadline stored it (its own clock): the sweeper's window counts from here.
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "ghl_message_id"],
                condition=~Q(ghl_message_id=""),
                name="message_unique_ghl_id_per_workspace",
            ),
            models.UniqueConstraint(
                fields=["workspace", "emailbison_reply_id"],
                condition=~Q(emailbison_reply_id=""),
                name="message_unique_emailbison_reply_per_workspace",
            ),
            # A draft goes out at most once: one outbound row per draft that is (or may be) sent.
            models.UniqueConstraint(
                fields=["draft_source"],
                condition=Q(draft_source__isnull=False, delivery__in=SEND_CLAIMED_DELIVERIES),
                name="message_one_send_per_draft",
            ),
        ]
        indexes = [
            models.Index(fields=["lead", "direction", "body_hash", "sent_at"], name="message_dedupe"),
            models.Index(fields=["workspace", "direction", "classified_at"], name="message_ws_unclassified"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.channel} #{self.pk}"


class WebhookEvent(models.Model):
    class Provider(models.TextChoices):
        GHL = "ghl"
        EMAILBISON = "emailbison"

    class Status(models.TextChoices):
        ACCEPTED = "accepted"
        DUPLICATE = "duplicate"
        IGNORED = "ignored"
        REJECTED = "rejected"
        PROCESSED = "processed"
        FAILED = "failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="webhook_events")
    provider = models.CharField(max_length=16, choices=Provider.choices)
    event_type = models.CharField(max_length=64, blank=True, default="")
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    body = models.JSONField(null=True, blank=True)
    headers = models.JSONField(blank=True, default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    error = models.TextField(blank=True, default="")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lead = models.ForeignKey(Lead, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    reprocessable = models.BooleanField(
        default=True,
        help_text="False for deliveries refused by signature checks (signature, timestamp, webhookId): "
        "they were never verified, so admin never applies them.",
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "provider", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="webhookevent_unique_idempotency_key",
            ),
        ]
        indexes = [models.Index(fields=["workspace", "status", "-received_at"], name="webhookevent_ws_status")]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} #{self.pk} ({self.status})"
