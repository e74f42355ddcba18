from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from workspaces.models import Workspace


class Sentiment(models.TextChoices):
    MEETING_REQUESTED = "Meeting Requested"
    CALL_REQUESTED = "Call Requested"
    INFORMATION_REQUESTED = "Information Requested"
    INTERESTED = "Interested"
    FOLLOW_UP = "Follow Up"
    NOT_INTERESTED = "Not Interested"
    BLACKLIST = "Blacklist"
    OUT_OF_OFFICE = "Out of Office"
    AUTOMATED_REPLY = "Automated Reply"
    NEUTRAL = "Neutral"
    MEETING_BOOKED = "Meeting Booked"
    SNOOZED = "Snoozed"
    NEW = "New"


POSITIVE_SENTIMENTS = frozenset(
    {
        Sentiment.MEETING_REQUESTED,
        Sentiment.CALL_REQUESTED,
        Sentiment.INFORMATION_REQUESTED,
        Sentiment.INTERESTED,
    }
)
# Tags that get an AI reply draft.
DRAFTABLE_SENTIMENTS = POSITIVE_SENTIMENTS | {Sentiment.FOLLOW_UP}
# Replies an auto-responder writes: they say nothing about the conversation, so a newer one does
# not make an older message's draft stale nor replace a tag a person's message gave the lead.
MACHINE_REPLY_SENTIMENTS = (Sentiment.OUT_OF_OFFICE, Sentiment.AUTOMATED_REPLY)
# The lead tags a machine reply may replace (nothing a person said).
MACHINE_REPLACEABLE_SENTIMENTS = (Sentiment.NEW, Sentiment.NEUTRAL, *MACHINE_REPLY_SENTIMENTS)


class LeadStatus(models.TextChoices):
    OPEN = "open"
    BLACKLISTED = "blacklisted"
    CLOSED = "closed"


class Lead(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="leads")
    ghl_contact_id = models.CharField(max_length=64, blank=True, default="")
    emailbison_lead_id = models.CharField(max_length=64, blank=True, default="")
    first_name = models.CharField(max_length=200, blank=True, default="")
    last_name = models.CharField(max_length=200, blank=True, default="")
    email = models.EmailField(max_length=320, blank=True, default="")
    phone_e164 = models.CharField(max_length=20, blank=True, default="")
    phone_raw = models.CharField(max_length=64, blank=True, default="")
    timezone = models.CharField(max_length=64, blank=True, default="")
    sentiment = models.CharField(max_length=32, choices=Sentiment.choices, default=Sentiment.NEW)
    status = models.CharField(max_length=16, choices=LeadStatus.choices, default=LeadStatus.OPEN)
    sms_dnd = models.BooleanField(default=False)
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    last_outbound_at = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_message_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "ghl_contact_id"],
                condition=~Q(ghl_contact_id=""),
                name="lead_unique_ghl_contact_per_workspace",
            ),
            models.UniqueConstraint(
                fields=["workspace", "emailbison_lead_id"],
                condition=~Q(emailbison_lead_id=""),
                name="lead_unique_emailbison_lead_per_workspace",
            ),
        ]
        indexes = [
            models.Index(Lower("email"), "workspace", name="lead_ws_email_ci"),
            models.Index(fields=["workspace", "phone_e164"], name="lead_ws_phone"),
            models.Index(fields=["workspace", "sentiment"], name="lead_ws_sentiment"),
        ]

    def __str__(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or self.phone_e164 or f"lead {self.pk}"

    @property
    def is_blacklisted(self) -> bool:
        return self.status == LeadStatus.BLACKLISTED or self.sentiment == Sentiment.BLACKLIST
