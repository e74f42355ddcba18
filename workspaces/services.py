from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.redaction import redact_data, redact_text
from core.timeparse import safe_zoneinfo
from workspaces.models import SECRET_FIELDS, SLUG_VALIDATOR, BookingProvider, IntegrationError, Workspace

# --- Workspaces --------------------------------------------------------------

CONFIGURABLE_FIELDS = (
    "name",
    "timezone",
    "is_active",
    "webhook_secret",
    "ghl_location_id",
    "ghl_token",
    "emailbison_base_url",
    "emailbison_token",
    "calendly_token",
    "booking_provider",
    "ghl_calendar_id",
    "ghl_booking_url",
    "calendly_event_type_uri",
    "calendly_booking_url",
    "persona_name",
    "persona_tone",
    "company_name",
    "offer_description",
    "signature",
    "slots_to_offer",
    "sms_send_window",  # "HH:MM-HH:MM", stored as sms_send_start / sms_send_end
    "sla_sms_minutes",
    "sla_email_minutes",
    "sla_notify_email",
    "sla_notify_webhook_url",
)
URL_FIELDS = (
    "emailbison_base_url",
    "ghl_booking_url",
    "calendly_event_type_uri",
    "calendly_booking_url",
    "sla_notify_webhook_url",
)


def workspace_validate_changes(*, slug: str, changes: dict[str, Any]) -> None:
    """Raise ValidationError({field: message}) for the first problems found."""
    errors: dict[str, str] = {}
    try:
        SLUG_VALIDATOR(slug)
    except ValidationError as exc:
        errors["slug"] = exc.messages[0]
    unknown = set(changes) - set(CONFIGURABLE_FIELDS)
    for field in sorted(unknown):
        errors[field] = "is not a configurable field"
    tz = changes.get("timezone")
    if tz is not None and safe_zoneinfo(tz) is None:
        errors["timezone"] = f"unknown IANA timezone {tz!r}"
    provider = changes.get("booking_provider")
    if provider not in (None, "") and provider not in BookingProvider.values:
        errors["booking_provider"] = f"must be one of {', '.join(BookingProvider.values)}"
    url_validator = URLValidator(schemes=["https", "http"])
    for field in URL_FIELDS:
        value = changes.get(field)
        if value:
            try:
                url_validator(value)
            except ValidationError:
                errors[field] = f"is not a valid http(s) URL: {value!r}"
    secret = changes.get("webhook_secret")
    if secret is not None and len(secret) < 16:
        errors["webhook_secret"] = "must be at least 16 characters"
    window = changes.get("sms_send_window")
    if window is not None and sms_send_window_parse(window) is None:
        errors["sms_send_window"] = f"must be HH:MM-HH:MM with the start before the end, got {window!r}"
    for field in ("sla_sms_minutes", "sla_email_minutes"):
        value = changes.get(field)
        if value is not None and not (1 <= int(value) <= 10080):
            errors[field] = "must be between 1 and 10080 minutes"
    slots = changes.get("slots_to_offer")
    if slots is not None and not (0 <= int(slots) <= 10):
        errors["slots_to_offer"] = "must be between 0 and 10"
    if errors:
        raise ValidationError(errors)


def sms_send_window_parse(value: str) -> tuple[dt.time, dt.time] | None:
    """``"08:00-21:00"`` → (08:00, 21:00); None when malformed or not start < end."""
    try:
        start, end = (dt.time.fromisoformat(part.strip()) for part in str(value).split("-"))
    except ValueError:
        return None
    return (start, end) if start < end else None


@transaction.atomic
def workspace_configure(*, slug: str, changes: dict[str, Any]) -> tuple[Workspace, bool]:
    """Create or update a workspace. Validates everything before writing anything."""
    changes = {k: v for k, v in changes.items() if v is not None}
    workspace_validate_changes(slug=slug, changes=changes)
    workspace = Workspace.objects.select_for_update().filter(slug=slug).first()
    created = workspace is None
    if created:
        workspace = Workspace(slug=slug, name=changes.get("name") or slug)
    window = changes.pop("sms_send_window", None)
    if window is not None:
        workspace.sms_send_start, workspace.sms_send_end = sms_send_window_parse(window)
    for field, value in changes.items():
        setattr(workspace, field, value)
    location = changes.get("ghl_location_id")
    if location and Workspace.objects.filter(ghl_location_id=location).exclude(pk=workspace.pk).exists():
        raise ValidationError({"ghl_location_id": "is already used by another workspace"})
    workspace.full_clean(exclude=["webhook_secret", "ghl_token", "emailbison_token", "calendly_token"])
    workspace.save()
    return workspace, created


# --- Integration errors ------------------------------------------------------


def integration_error_record(
    *,
    workspace: Workspace | int,
    source: str,
    code: str,
    message: str = "",
    context: dict[str, Any] | None = None,
    secrets: Iterable[str] = (),
) -> IntegrationError:
    """Record (or bump) the open error for (workspace, source, code).

    The message and context are redacted (known secret shapes, the given
    ``secrets``, and message bodies) before anything is stored. Safe under
    concurrency: insert-first inside an inner atomic block, update on conflict.
    """
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    now = timezone.now()
    message = redact_text(str(message), extra_secrets=secrets)[:2000]
    context = redact_data(context or {}, drop_bodies=True)
    for _ in range(3):
        updated = IntegrationError.objects.filter(
            workspace_id=workspace_id, source=source, code=code, resolved_at__isnull=True
        ).update(count=F("count") + 1, last_seen=now, message=message, context=context)
        if updated:
            return IntegrationError.objects.get(
                workspace_id=workspace_id, source=source, code=code, resolved_at__isnull=True
            )
        try:
            with transaction.atomic():
                return IntegrationError.objects.create(
                    workspace_id=workspace_id,
                    source=source,
                    code=code,
                    message=message,
                    context=context,
                    first_seen=now,
                    last_seen=now,
                )
        except IntegrityError:
            continue  # another process inserted it first: bump that row
    raise RuntimeError("integration_error_record could not settle after concurrent inserts")


def integration_error_resolve(
    *, workspace: Workspace | int, source: str, codes: Iterable[str] | None = None, code_prefix: str = ""
) -> int:
    """Mark open errors of ``source`` resolved: all of them, or only ``codes``, or only the codes
    starting with ``code_prefix`` (e.g. ``"draft_"``: whatever went wrong while drafting).
    Returns how many."""
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    qs = IntegrationError.objects.filter(workspace_id=workspace_id, source=source, resolved_at__isnull=True)
    if codes is not None:
        qs = qs.filter(code__in=list(codes))
    if code_prefix:
        qs = qs.filter(code__startswith=code_prefix)
    return qs.update(resolved_at=timezone.now())


@transaction.atomic
def workspace_credentials_reencrypt() -> int:
    """Rewrite every workspace's credentials with the primary encryption key (key rotation)."""
    count = 0
    for workspace in Workspace.objects.select_for_update().order_by("pk"):
        # Reading decrypted with any key of the MultiFernet; saving encrypts with the first.
        workspace.save(update_fields=[*SECRET_FIELDS, "updated_at"])
        count += 1
    return count
