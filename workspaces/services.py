from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.http import OutboundAddressRefused, check_outbound_url
from core.redaction import redact_data, redact_text
from core.timeparse import safe_zoneinfo
from workspaces.models import (
    SECRET_FIELDS,
    SLUG_VALIDATOR,
    AuditEvent,
    BookingProvider,
    IntegrationError,
    Membership,
    Role,
    Workspace,
)

# --- Workspaces --------------------------------------------------------------


def _flag_bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class ConfigurableField:
    """A workspace setting ``workspace_configure`` takes: ``configure_workspace --<name>`` (its
    value read by ``parse``; no flag when ``flag`` is False) and the admin form's fields
    (``form_fields``, the field itself by default) in the fieldset ``section``."""

    name: str
    section: str
    parse: Callable[[str], Any] = str
    flag: bool = True
    form_fields: tuple[str, ...] = ()

    @property
    def admin_fields(self) -> tuple[str, ...]:
        return self.form_fields or (self.name,)


GENERAL, CREDENTIALS, BOOKING, PERSONA, SENDING, SPEED = (
    "General",
    "Credentials (write-only)",
    "Booking",
    "AI persona",
    "Sending",
    "Speed to lead",
)
# The one list of configurable workspace settings: the command's flags, the admin form and
# ``workspace_validate_changes`` all read it.
CONFIGURABLE = (
    ConfigurableField("name", GENERAL),
    ConfigurableField("timezone", GENERAL),
    ConfigurableField("is_active", GENERAL, flag=False),  # --active / --inactive
    ConfigurableField("webhook_secret", CREDENTIALS),
    ConfigurableField("verify_ghl_signatures", CREDENTIALS, parse=_flag_bool),
    ConfigurableField("ghl_location_id", CREDENTIALS),
    ConfigurableField("ghl_token", CREDENTIALS),
    ConfigurableField("emailbison_base_url", CREDENTIALS),
    ConfigurableField("emailbison_token", CREDENTIALS),
    ConfigurableField("calendly_token", CREDENTIALS),
    ConfigurableField("booking_provider", BOOKING),
    ConfigurableField("ghl_calendar_id", BOOKING),
    ConfigurableField("ghl_booking_url", BOOKING),
    ConfigurableField("calendly_event_type_uri", BOOKING),
    ConfigurableField("calendly_booking_url", BOOKING),
    ConfigurableField("business_hours_start", BOOKING, parse=dt.time.fromisoformat),
    ConfigurableField("business_hours_end", BOOKING, parse=dt.time.fromisoformat),
    ConfigurableField("business_days", BOOKING),
    ConfigurableField("persona_name", PERSONA),
    ConfigurableField("persona_tone", PERSONA),
    ConfigurableField("company_name", PERSONA),
    ConfigurableField("offer_description", PERSONA),
    ConfigurableField("signature", PERSONA),
    ConfigurableField("slots_to_offer", PERSONA, parse=int),
    # "HH:MM-HH:MM", stored as sms_send_start / sms_send_end (the admin shows both).
    ConfigurableField("sms_send_window", SENDING, form_fields=("sms_send_start", "sms_send_end")),
    ConfigurableField("sla_sms_minutes", SPEED, parse=int),
    ConfigurableField("sla_email_minutes", SPEED, parse=int),
    ConfigurableField("sla_notify_email", SPEED),
    ConfigurableField("sla_notify_webhook_url", SPEED),
)
CONFIGURABLE_FIELDS = tuple(field.name for field in CONFIGURABLE)
URL_FIELDS = (
    "emailbison_base_url",
    "ghl_booking_url",
    "calendly_event_type_uri",
    "calendly_booking_url",
    "sla_notify_webhook_url",
)
# A provider's base URL and the token sent to it: changing the URL requires the token again,
# or the stored token would go to whatever host the new URL names.
TOKEN_BOUND_URLS = {"emailbison_base_url": "emailbison_token"}


def outbound_url_error(value: str) -> str | None:
    """Why a URL from workspace settings may not be fetched (loopback, private, link-local,
    cloud metadata; on its host or on what the name resolves to now), or None."""
    try:
        check_outbound_url(value)
    except OutboundAddressRefused as exc:
        return str(exc)
    return None


def token_reentry_errors(*, stored: Workspace | None, changes: dict[str, Any]) -> dict[str, str]:
    """{token field: message} for each token-bound URL that changes while a token is stored
    and the token is neither given again nor cleared (``""`` in ``changes``)."""
    errors = {}
    if stored is None:
        return errors
    for url_field, token_field in TOKEN_BOUND_URLS.items():
        new_url = changes.get(url_field)
        if new_url is None or (new_url or "") == (getattr(stored, url_field) or ""):
            continue
        if getattr(stored, token_field) and changes.get(token_field) is None:
            errors[token_field] = (
                f"enter the {token_field.replace('_', ' ')} again: {url_field.replace('_', ' ')} changes, "
                "and the stored token is never sent to a new host"
            )
    return errors


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
                continue
            if refused := outbound_url_error(value):
                errors[field] = refused
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
    if errors := token_reentry_errors(stored=workspace, changes=changes):
        raise ValidationError(errors)
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
    *,
    workspace: Workspace | int,
    source: str | tuple[str, ...],
    codes: Iterable[str] | None = None,
    code_prefix: str = "",
    keep_codes: Iterable[str] = (),
) -> int:
    """Mark open errors of ``source`` (one, or a tuple of sources: one statement) resolved: all
    of them, or only ``codes``, or only the codes starting with ``code_prefix`` (e.g.
    ``"draft_"``: whatever went wrong while drafting); never ``keep_codes`` (problems a later
    success does not disprove). Returns how many."""
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    sources = (source,) if isinstance(source, str) else tuple(source)
    qs = IntegrationError.objects.filter(workspace_id=workspace_id, source__in=sources, resolved_at__isnull=True)
    if codes is not None:
        qs = qs.filter(code__in=list(codes))
    if code_prefix:
        qs = qs.filter(code__startswith=code_prefix)
    if keep_codes:
        qs = qs.exclude(code__in=list(keep_codes))
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


# --- Audit trail ---------------------------------------------------------------


def audit_record_many(
    *,
    actor,
    action: str,
    targets: Iterable[tuple[int | None, Any]],
    detail: dict[str, Any] | None = None,
) -> list[AuditEvent]:
    """One AuditEvent per (workspace id, object) in ``targets``: who did ``action`` to what, when.

    ``detail`` must hold names and counts only (it is redacted anyway, bodies dropped).
    Objects without a workspace are skipped (nothing workspace-scoped was touched).
    """
    now = timezone.now()
    actor_id = actor.pk if actor is not None and actor.is_authenticated else None
    username = actor.get_username() if actor_id else ""
    detail = redact_data(detail or {}, drop_bodies=True)
    events = [
        AuditEvent(
            workspace_id=workspace_id,
            actor_id=actor_id,
            actor_username=username,
            action=action[:64],
            target_type=obj._meta.label_lower if obj is not None else "",
            target_id=str(obj.pk) if obj is not None else "",
            target_repr=str(obj)[:200] if obj is not None else "",
            detail=detail,
            created_at=now,
        )
        for workspace_id, obj in targets
        if workspace_id is not None
    ]
    return AuditEvent.objects.bulk_create(events)


def audit_record(*, workspace: Workspace | int, actor, action: str, target=None, detail=None) -> AuditEvent:
    """Record one operator action (for callers outside the admin: the inbox, commands)."""
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    return audit_record_many(actor=actor, action=action, targets=[(workspace_id, target)], detail=detail)[0]


# --- Operators -----------------------------------------------------------------


@transaction.atomic
def operator_configure(
    *,
    username: str,
    workspace_slugs: Iterable[str],
    role: str = Role.OPERATOR,
    password: str | None = None,
    remove: bool = False,
    role_groups: Callable[[], dict[str, Any]],
) -> tuple[Any, bool]:
    """Create or update a staff user (never a superuser) and their memberships.

    ``remove``: drop the memberships of ``workspace_slugs`` (the user stays, without access there).
    ``role_groups()``: {role: auth Group} whose model permissions fit each role, called once the
    input is valid (``admin_scoping.role_groups_sync`` creates or refreshes them).
    Everything is validated before anything is written; ValidationError({flag field: message}).
    Returns (user, created).
    """
    user_model = get_user_model()
    slugs = list(dict.fromkeys(workspace_slugs))
    errors: dict[str, str] = {}
    if not username or not username.strip():
        errors["username"] = "is required"
    if role not in Role.values:
        errors["role"] = f"unknown role {role!r}: use one of {', '.join(Role.values)}"
    if not slugs:
        errors["workspace"] = "give at least one workspace slug"
    workspaces = {w.slug: w for w in Workspace.objects.filter(slug__in=slugs)}
    unknown = [s for s in slugs if s not in workspaces]
    if unknown:
        errors["workspace"] = f"unknown workspace(s): {', '.join(unknown)}"
    user = user_model.objects.select_for_update().filter(username=username).first()
    if user is not None and user.is_superuser:
        errors["username"] = f"{username!r} is a superuser: configure_operator never changes superusers"
    if remove and user is None:
        errors["username"] = f"no user {username!r} to remove memberships from"
    if password is not None and not remove and not password:
        errors["password"] = "the password read from stdin is empty"
    if errors:
        raise ValidationError(errors)

    created = user is None
    if created:
        user = user_model(username=username, is_staff=True, is_superuser=False)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save()
    if remove:
        Membership.objects.filter(user=user, workspace__slug__in=slugs).delete()
    else:
        user.is_staff = True
        user.is_superuser = False
        if password:
            user.set_password(password)
        user.save()
        for slug in slugs:
            Membership.objects.update_or_create(user=user, workspace=workspaces[slug], defaults={"role": role})
    # Groups follow the roles the user holds now (operator somewhere: the operator group).
    roles = set(Membership.objects.filter(user=user).values_list("role", flat=True))
    for group_role, group in role_groups().items():
        if group_role in roles:
            user.groups.add(group)
        else:
            user.groups.remove(group)
    return user, created
