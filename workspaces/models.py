from __future__ import annotations

import secrets
import zoneinfo

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.fields import EncryptedTextField
from core.timeparse import safe_zoneinfo

SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and dashes, not starting or ending with a dash.",
)


def generate_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


# Encrypted credentials: write-only in admin, masked in every output.
SECRET_FIELDS = ("webhook_secret", "ghl_token", "emailbison_token", "calendly_token")


class BookingProvider(models.TextChoices):
    GHL = "ghl", "GoHighLevel calendar"
    CALENDLY = "calendly", "Calendly"


class Workspace(models.Model):
    """A tenant: one sales team with its own integrations and AI persona."""

    slug = models.SlugField(max_length=50, unique=True, validators=[SLUG_VALIDATOR])
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    is_active = models.BooleanField(default=True)

    webhook_secret = EncryptedTextField(default=generate_webhook_secret)
    verify_ghl_signatures = models.BooleanField(
        default=False, help_text="Require valid GHL signature headers when they are present."
    )

    ghl_location_id = models.CharField(max_length=64, blank=True, default="")
    ghl_token = EncryptedTextField(blank=True, default="")
    emailbison_base_url = models.URLField(blank=True, default="")
    emailbison_token = EncryptedTextField(blank=True, default="")
    calendly_token = EncryptedTextField(blank=True, default="")

    booking_provider = models.CharField(max_length=16, choices=BookingProvider.choices, blank=True, default="")
    ghl_calendar_id = models.CharField(max_length=64, blank=True, default="")
    ghl_booking_url = models.URLField(blank=True, default="", max_length=500)
    calendly_event_type_uri = models.URLField(blank=True, default="", max_length=500)
    calendly_booking_url = models.URLField(blank=True, default="", max_length=500)

    # AI persona used by draft generation.
    persona_name = models.CharField(max_length=100, blank=True, default="")
    persona_tone = models.CharField(max_length=200, blank=True, default="friendly, concise, professional")
    company_name = models.CharField(max_length=200, blank=True, default="")
    offer_description = models.TextField(blank=True, default="")
    signature = models.TextField(blank=True, default="")
    slots_to_offer = models.PositiveSmallIntegerField(default=3)

    # Business hours (workspace timezone) for meeting slots.
    business_hours_start = models.TimeField(default="09:00")
    business_hours_end = models.TimeField(default="17:00")
    business_days = models.CharField(
        max_length=20, default="0,1,2,3,4", help_text="Comma-separated weekdays, Monday=0."
    )

    # SMS send window in the lead's local time (US rule: no texts before 08:00 or after 21:00).
    sms_send_start = models.TimeField(default="08:00")
    sms_send_end = models.TimeField(default="21:00")

    # Speed to lead: how long (business minutes) a lead may wait for our answer, per channel.
    sla_sms_minutes = models.PositiveIntegerField(default=5)
    sla_email_minutes = models.PositiveIntegerField(default=30)
    sla_notify_email = models.EmailField(blank=True, default="", help_text="Told when a lead waits past the SLA.")
    sla_notify_webhook_url = models.URLField(
        blank=True, default="", max_length=500, help_text="POSTed a JSON note when a lead waits past the SLA."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["ghl_location_id"],
                condition=~Q(ghl_location_id=""),
                name="workspace_unique_ghl_location_id",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return safe_zoneinfo(self.timezone) or zoneinfo.ZoneInfo("UTC")

    @property
    def business_weekdays(self) -> set[int]:
        return {int(d) for d in self.business_days.split(",") if d.strip().isdigit()}


class IntegrationError(models.Model):
    """A problem with an integration, surfaced per workspace to operators.

    One open row per (workspace, source, code); repeats bump ``count`` and
    ``last_seen``. ``resolved_at`` is set automatically when the same
    operation next succeeds (``integration_error_resolve``).
    """

    class Source(models.TextChoices):
        GHL = "ghl", "GoHighLevel"
        EMAILBISON = "emailbison", "EmailBison"
        CALENDLY = "calendly", "Calendly"
        OPENAI = "openai", "OpenAI"
        AVAILABILITY = "availability", "Availability"
        WEBHOOK = "webhook", "Webhook"
        BROKER = "broker", "Task broker"
        DRAFTS = "drafts", "Drafts"
        SPEED_TO_LEAD = "speed_to_lead", "Speed to lead"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="integration_errors")
    source = models.CharField(max_length=32, choices=Source.choices)
    code = models.CharField(max_length=64)
    message = models.TextField(blank=True, default="")
    context = models.JSONField(blank=True, default=dict)
    count = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "source", "code"],
                condition=Q(resolved_at__isnull=True),
                name="integrationerror_one_open_per_code",
            ),
        ]
        indexes = [models.Index(fields=["workspace", "resolved_at", "-last_seen"])]

    def __str__(self) -> str:
        return f"{self.workspace_id}:{self.source}/{self.code} x{self.count}"

    @property
    def is_resolved(self) -> bool:
        return self.resolved_at is not None


class Role(models.TextChoices):
    OPERATOR = "operator", "Operator"  # reviews, edits, approves, sends, resolves errors
    VIEWER = "viewer", "Viewer"  # reads only


class Membership(models.Model):
    """A staff user's access to one workspace. Non-superusers see only their memberships' workspaces."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OPERATOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace__slug", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="membership_unique_user_workspace"),
            models.CheckConstraint(condition=Q(role__in=["operator", "viewer"]), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.workspace_id} ({self.role})"


class AuditEvent(models.Model):
    """Who did what, when, in which workspace: one row per operator action on one object.

    ``action`` is the admin action's name (``approve_and_send``, ``reject``,
    ``regenerate_drafts``, ``reprocess``, ``mark_resolved``, a sync action...) or
    ``add`` / ``change`` / ``delete`` for forms. ``detail`` holds field names and
    counts, never secrets or message text.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_username = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=100, blank=True, default="")  # "<app_label>.<model>"
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_repr = models.CharField(max_length=200, blank=True, default="")
    detail = models.JSONField(blank=True, default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.actor_username or '-'} {self.action} {self.target_type}#{self.target_id}"
