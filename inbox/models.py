from __future__ import annotations

from django.db import models

from leads.models import Lead
from messaging.models import Channel, Message
from workspaces.models import Workspace


class SlaBreach(models.Model):
    """A lead waited longer than the workspace's speed-to-lead SLA for an answer.

    One per clock (the inbound message that started it). Resolved when we reply (or when
    the message turns out to be a machine reply, which starts no clock).
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sla_breaches")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="sla_breaches")
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="sla_breach")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    clock_started_at = models.DateTimeField(help_text="When Leadline received the lead's message.")
    sla_seconds = models.PositiveIntegerField(help_text="The SLA in business seconds when it was breached.")
    due_at = models.DateTimeField(help_text="When the SLA ran out (business hours counted).")
    detected_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    notify_attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-detected_at"]
        indexes = [models.Index(fields=["workspace", "resolved_at", "-detected_at"], name="slabreach_ws_open")]

    def __str__(self) -> str:
        return f"SLA breach #{self.pk} (lead {self.lead_id})"
