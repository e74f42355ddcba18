"""Provider payloads → ``Delivery`` (what the ingestion service needs).

One DRF serializer per provider event shape; GHL workflow bodies, which people
type themselves, get one tolerant reading by aliases instead
(``ghl_workflow_read`` → ``GhlWorkflowReading``). Structural problems (wrong types,
missing required fields) raise ``serializers.ValidationError``; the view turns
the first one into ``400 {"error": "<field.path>: <reason>"}``. Soft problems
that must not lose an inbound message (an invalid contact email, an
unparseable date, an over-long subject) are tolerated: the value is dropped
or truncated, never a reason to refuse the delivery.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.utils import timezone
from django.utils.html import strip_tags
from rest_framework import serializers

from core.redaction import REDACTED, SENSITIVE_KEYS
from core.timeparse import parse_instant
from leads.services import LeadIdentity, phone_normalize
from messaging.models import Channel, Direction

MAX_ID_LENGTH = 64


class DeliveryAction:
    MESSAGE = "message"
    BLACKLIST = "blacklist"
    IGNORE = "ignore"


@dataclass(frozen=True)
class ParsedMessage:
    channel: str
    direction: str
    body: str
    sent_at: datetime
    subject: str = ""
    ghl_message_id: str = ""
    ghl_conversation_id: str = ""
    emailbison_reply_id: str = ""
    provider_interested: bool | None = None
    origin: str = "webhook"  # messaging.models.Origin: "sync" for history a GHL sync imported


@dataclass(frozen=True)
class Delivery:
    """One parsed webhook delivery."""

    event_type: str
    action: str
    idempotency_key: str = ""
    identity: LeadIdentity | None = None
    message: ParsedMessage | None = None
    location_id: str = ""
    note: str = ""


# --- helpers -----------------------------------------------------------------------


def validation_error_text(detail: Any, prefix: str = "") -> str:
    """The first error of a DRF ``ValidationError.detail`` as ``"field.path: reason"``."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            return validation_error_text(value, name)
        return prefix or "payload"
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                return validation_error_text(value, f"{prefix}[{index}]" if isinstance(value, dict) else prefix)
            return f"{prefix}: {value}" if prefix else str(value)
        return prefix or "payload"
    return f"{prefix}: {detail}" if prefix else str(detail)


def _clean_id(value: Any) -> str:
    return "" if value is None else str(value).strip()[:MAX_ID_LENGTH]


def _soft_email(value: Any) -> str:
    """A valid email address from ``value`` ("Name <a@b>" accepted), else ""."""
    if not isinstance(value, str) or not value.strip():
        return ""
    address = email.utils.parseaddr(value.strip())[1] or value.strip()
    try:
        validate_email(address)
    except DjangoValidationError:
        return ""
    return address.lower()[:320]


def _first_email(value: Any) -> str:
    if isinstance(value, list):
        for item in value:
            found = _first_email(item)
            if found:
                return found
        return ""
    if isinstance(value, dict):
        return _soft_email(value.get("email") or value.get("email_address") or value.get("address"))
    return _soft_email(value)


def _sent_at(value: Any) -> datetime:
    # ISO 8601 (naive read as UTC) or epoch s/ms; junk (Unicode digits, huge numbers) gives None.
    return _sent_at_clamped(parse_instant(value, naive_as_utc=True))


def _sent_at_clamped(parsed: datetime | None) -> datetime:
    now = timezone.now()
    # A date far in the future would pin the lead's rollups: clamp to now.
    if parsed is None or parsed > now:
        return now
    return parsed


class LenientCharField(serializers.CharField):
    """A string (numbers accepted and turned into strings), truncated rather than refused."""

    def __init__(self, *, truncate: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("trim_whitespace", True)
        self.truncate = truncate
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        return value[: self.truncate] if self.truncate else value


class BodyField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)


# --- Body ------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _clean_text(text: str) -> str:
    # PostgreSQL text/jsonb refuse NUL; lone surrogates cannot be encoded.
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean_json(value: Any, *, escaped: bool, depth: int = 0) -> Any:
    """Storable JSON: secret-named keys masked; NUL and lone surrogates removed when escapes were used."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if escaped:
                key = _clean_text(key)
            if key.lower() in SENSITIVE_KEYS and item not in (None, ""):
                out[key] = REDACTED
            else:
                out[key] = _clean_json(item, escaped=escaped, depth=depth + 1)
        return out
    if isinstance(value, list):
        return [_clean_json(item, escaped=escaped, depth=depth + 1) for item in value]
    if escaped and isinstance(value, str):
        return _clean_text(value)
    return value


class MalformedBody(Exception):
    """The body is not JSON Leadline accepts; the message is the 400 answer's error."""


def webhook_json_load(raw: bytes) -> Any:
    """A webhook body as storable JSON. Raises ``MalformedBody``."""
    try:
        payload = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise MalformedBody("body: malformed JSON (nested too deeply)") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise MalformedBody(f"body: malformed JSON{where}") from exc
    # Only \u escapes can smuggle NUL or lone surrogates past the UTF-8 decoder.
    return _clean_json(payload, escaped=b"\\u" in raw)


# --- GHL ---------------------------------------------------------------------------

GHL_MESSAGE_EVENTS = {"InboundMessage": Direction.INBOUND, "OutboundMessage": Direction.OUTBOUND}
GHL_CHANNELS = {"sms": Channel.SMS, "email": Channel.EMAIL}


class GhlMarketplaceMessageSerializer(serializers.Serializer):
    """GHL marketplace ``InboundMessage`` / ``OutboundMessage`` (SMS and Email variants)."""

    type = serializers.CharField()
    # Field names are the provider's (camelCase).
    locationId = serializers.CharField(max_length=MAX_ID_LENGTH)
    contactId = serializers.CharField(max_length=MAX_ID_LENGTH)
    messageId = LenientCharField(max_length=MAX_ID_LENGTH)
    conversationId = LenientCharField(max_length=MAX_ID_LENGTH)
    messageType = serializers.CharField(max_length=32)
    body = BodyField(required=False, allow_null=True)
    direction = serializers.ChoiceField(choices=Direction.values, required=False)
    dateAdded = serializers.JSONField(required=False, allow_null=True)
    subject = LenientCharField(truncate=998, trim_whitespace=False)
    webhookId = LenientCharField(max_length=200)
    timestamp = serializers.JSONField(required=False, allow_null=True)
    attachments = serializers.ListField(required=False, allow_null=True)
    phone = LenientCharField(truncate=64)
    email = LenientCharField(truncate=320)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.JSONField(required=False, allow_null=True)
        fields["to"] = serializers.JSONField(required=False, allow_null=True)
        return fields

    def to_delivery(self) -> Delivery:
        data = self.validated_data
        event_type = data["type"]
        direction = GHL_MESSAGE_EVENTS[event_type]
        if data.get("direction") and data["direction"] != direction:
            raise serializers.ValidationError({"direction": f"is {data['direction']!r} on a {event_type} event"})
        channel = GHL_CHANNELS.get(data["messageType"].strip().lower())
        message_id = data.get("messageId") or ""
        webhook_id = data.get("webhookId") or ""
        idempotency_key = f"webhook:{webhook_id}" if webhook_id else (f"message:{message_id}" if message_id else "")
        if channel is None:
            return Delivery(
                event_type=event_type,
                action=DeliveryAction.IGNORE,
                idempotency_key=idempotency_key,
                location_id=data["locationId"],
                note=f"messageType {data['messageType'][:32]!r} is not SMS or Email",
            )
        counterpart = self.initial_data.get("from" if direction == Direction.INBOUND else "to")
        lead_email = _soft_email(data.get("email")) or (_first_email(counterpart) if channel == Channel.EMAIL else "")
        identity = LeadIdentity(ghl_contact_id=data["contactId"], email=lead_email, phone_raw=data.get("phone") or "")
        message = ParsedMessage(
            channel=channel,
            direction=direction,
            body=data.get("body") or "",
            subject=data.get("subject") or "",
            sent_at=_sent_at(data.get("dateAdded")),
            ghl_message_id=message_id,
            ghl_conversation_id=data.get("conversationId") or "",
        )
        return Delivery(
            event_type=event_type,
            action=DeliveryAction.MESSAGE,
            idempotency_key=idempotency_key,
            identity=identity,
            message=message,
            location_id=data["locationId"],
        )


# --- GHL workflow / Custom Webhook: one tolerant reading ------------------------------
#
# Workflow bodies are typed by people (merge fields in a Custom Webhook), so the same
# piece arrives under several names. Each piece has an ordered alias list (documented
# in docs/webhooks.md). Identity and message pieces must agree wherever they are given:
# two different values are refused, never guessed. Time and the soft contact fields
# (names, timezone, subject) take the first usable alias instead. Blank strings and
# merge fields GHL left unrendered ("{{contact.id}}") count as missing.

CONTACT_ID_ALIASES = ("contactId", "contact_id", "contact.id", "contact.contactId")
TEXT_ALIASES = ("body", "message", "message.body", "messageBody")
MESSAGE_ID_ALIASES = ("messageId", "message.id")
CHANNEL_ALIASES = ("messageType", "message.type", "channel")
TIME_ALIASES = ("dateAdded", "message.dateAdded", "message.timestamp", "date_created")
LOCATION_ALIASES = ("locationId", "location.id")
DIRECTION_ALIASES = ("direction", "message.direction")
EMAIL_ALIASES = ("email", "contact.email")
PHONE_ALIASES = ("phone", "contact.phone")
FIRST_NAME_ALIASES = ("firstName", "first_name", "contact.firstName", "contact.first_name")
LAST_NAME_ALIASES = ("lastName", "last_name", "contact.lastName", "contact.last_name")
FULL_NAME_ALIASES = ("fullName", "full_name", "contact.fullName", "contact.full_name", "contact.name")
TIMEZONE_ALIASES = ("timezone", "contact.timezone")
SUBJECT_ALIASES = ("subject", "message.subject")
CONVERSATION_ID_ALIASES = ("conversationId", "message.conversationId")
# Objects whose keys are aliases (``message`` is also the text when it is a string).
_CONTAINERS = ("message", "contact", "location")

GHL_WORKFLOW_EVENT = "CustomWebhook"
# GHL conversation message types: numeric (workflow bodies), named, or TYPE_* (API enums).
GHL_CHANNEL_NAMES = {"2": Channel.SMS, "sms": Channel.SMS, "3": Channel.EMAIL, "email": Channel.EMAIL}

_MERGE_FIELDS_ONLY = re.compile(r"\s*(?:\{\{[^{}]*\}\}\s*)+")
_SPACES = re.compile(r"\s+")
_MAX_FOUND_KEYS = 25


def ghl_value_missing(text: str) -> bool:
    """A blank value, or only merge fields GHL did not render (``{{contact.id}}``)."""
    return not text.strip() or ("{{" in text and _MERGE_FIELDS_ONLY.fullmatch(text) is not None)


def _channel_of(value: str) -> str:
    """``sms`` / ``email``, or ``other:<value>`` for a channel Leadline does not handle."""
    key = value.strip().lower().removeprefix("type_")
    return GHL_CHANNEL_NAMES.get(key) or f"other:{value.strip()[:32]}"


def _found_keys(payload: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for key, value in payload.items():
        if key in _CONTAINERS and isinstance(value, dict):
            keys.extend(f"{key}.{child}" for child in value)
        else:
            keys.append(key)
    shown = [key[:40] for key in keys[:_MAX_FOUND_KEYS]]
    if len(keys) > _MAX_FOUND_KEYS:
        shown.append(f"… {len(keys) - _MAX_FOUND_KEYS} more")
    return shown


@dataclass(frozen=True)
class GhlWorkflowReading:
    """How Leadline reads one GHL workflow / Custom Webhook body.

    ``sources`` names the alias each piece came from (or why it defaulted);
    ``problems`` is empty when the body is accepted; ``notes`` are tolerated
    oddities (an unparseable date, an invalid email) shown by the dry run.
    """

    event_type: str
    direction: str
    channel: str  # sms / email, "other:<value>" (ignored), "" when unknown
    text: str
    contact_id: str
    email: str
    phone: str
    first_name: str
    last_name: str
    full_name: str
    timezone: str
    message_id: str
    conversation_id: str
    subject: str
    location_id: str
    sent_at: datetime | None  # None: the body gives no usable time (now is used)
    sources: dict[str, str]
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    found_keys: tuple[str, ...]
    blank_keys: tuple[str, ...]

    @property
    def refusal(self) -> str:
        """The 400 answer's error ("" when the body is accepted)."""
        if not self.problems:
            return ""
        parts = [*self.problems, f"found keys: {', '.join(self.found_keys) or 'none'}"]
        if self.blank_keys:
            parts.append(f"blank or unrendered merge fields: {', '.join(self.blank_keys)}")
        return "; ".join(parts)

    @property
    def idempotency_key(self) -> str:
        return f"message:{self.message_id}" if self.message_id else ""

    def to_delivery(self) -> Delivery:
        """The delivery to ingest. Raises ``serializers.ValidationError`` with the refusal."""
        if self.problems:
            raise serializers.ValidationError(self.refusal)
        if self.channel.startswith("other:"):
            return Delivery(
                event_type=self.event_type,
                action=DeliveryAction.IGNORE,
                idempotency_key=self.idempotency_key,
                location_id=self.location_id,
                note=f"{self.sources['channel']} {self.channel.removeprefix('other:')!r} is not SMS or Email",
            )
        first, last = self.first_name, self.last_name
        if not (first or last) and self.full_name:
            first, _, last = self.full_name.partition(" ")
        identity = LeadIdentity(
            ghl_contact_id=self.contact_id,
            email=self.email,
            phone_raw=self.phone,
            first_name=first,
            last_name=last,
            timezone=self.timezone,
        )
        message = ParsedMessage(
            channel=self.channel,
            direction=self.direction,
            body=self.text,
            subject=self.subject,
            sent_at=_sent_at_clamped(self.sent_at),
            ghl_message_id=self.message_id,
            ghl_conversation_id=self.conversation_id,
        )
        return Delivery(
            event_type=self.event_type,
            action=DeliveryAction.MESSAGE,
            idempotency_key=self.idempotency_key,
            identity=identity,
            message=message,
            location_id=self.location_id,
        )


class _AliasReader:
    """Looks pieces up by alias in one body; collects problems, notes and blank aliases."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.blank: list[str] = []
        self.sources: dict[str, str] = {}
        # Pieces given but refused (wrong type, ambiguous, too long): not also reported missing.
        self.refused: set[str] = set()

    def _raw(self, alias: str) -> Any:
        head, _, child = alias.partition(".")
        value = self.payload.get(head)
        if not child:
            # ``message`` as an object is a container, not the text.
            return None if head in _CONTAINERS and isinstance(value, dict) else value
        return value.get(child) if isinstance(value, dict) else None

    def values(self, aliases: tuple[str, ...], *, strict: bool, piece: str = "") -> list[tuple[str, str]]:
        """(alias, value) for every alias that holds a usable value, in alias order.

        Numbers are read as text. Another type is a problem when ``strict``
        (identity and message pieces), silently skipped otherwise.
        """
        found = []
        for alias in aliases:
            value = self._raw(alias)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                if strict:
                    kinds = "a string, a number or an object" if alias in _CONTAINERS else "a string or a number"
                    self.problems.append(f"{alias}: must be {kinds}, not {_json_type(value)}")
                    self.refused.add(piece)
                continue
            text = value if isinstance(value, str) else str(value)
            if ghl_value_missing(text):
                self.blank.append(alias)
                continue
            found.append((alias, text))
        return found

    def one(
        self,
        piece: str,
        aliases: tuple[str, ...],
        *,
        same: Any = str.strip,
        show_values: bool = True,
        max_length: int | None = MAX_ID_LENGTH,
    ) -> str:
        """The piece's value; all aliases that give it must agree (compared by ``same``)."""
        found = self.values(aliases, strict=True, piece=piece)
        if not found:
            return ""
        if len({same(value) for _, value in found}) > 1:
            given = (f"{alias}={value.strip()[:40]!r}" if show_values else alias for alias, value in found)
            self.problems.append(f"two different {piece}s: {', '.join(given)}")
            self.refused.add(piece)
            return ""
        alias, value = found[0]
        if max_length is not None and len(value.strip()) > max_length:
            self.problems.append(f"{alias}: longer than {max_length} characters")
            self.refused.add(piece)
            return ""
        self.sources[piece] = alias
        return value.strip() if max_length is not None else value

    def first(self, piece: str, aliases: tuple[str, ...], *, truncate: int) -> str:
        """The first usable value in alias order (soft pieces: no refusal)."""
        for alias, value in self.values(aliases, strict=False):
            self.sources[piece] = alias
            return value.strip()[:truncate]
        return ""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _phone_key(raw: str) -> str:
    return phone_normalize(raw=raw) or raw.strip()


def _text_key(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def ghl_workflow_read(payload: dict[str, Any]) -> GhlWorkflowReading:
    """Read a GHL body that is not a marketplace message event. Never raises."""
    reader = _AliasReader(payload)
    found_keys = tuple(_found_keys(payload))

    event_type = GHL_WORKFLOW_EVENT
    directions: list[tuple[str, str, str]] = []  # (alias, direction, value as given)
    raw_type = payload.get("type")
    if isinstance(raw_type, str) and raw_type in GHL_MESSAGE_EVENTS:
        event_type = raw_type
        directions.append(("type", GHL_MESSAGE_EVENTS[raw_type].value, raw_type))
    elif raw_type not in (None, "") and not (isinstance(raw_type, str) and ghl_value_missing(raw_type)):
        reader.notes.append("type is not InboundMessage / OutboundMessage: not read (the channel goes in messageType)")
    for alias, value in reader.values(DIRECTION_ALIASES, strict=True, piece="direction"):
        direction = value.strip().lower()
        if direction not in Direction.values:
            reader.problems.append(f"{alias}: must be inbound or outbound, not {value.strip()[:20]!r}")
        else:
            directions.append((alias, direction, value.strip()[:20]))
    direction = Direction.INBOUND
    if len({direction for _, direction, _ in directions}) > 1:
        given = ", ".join(f"{alias}={value!r}" for alias, _, value in directions)
        reader.problems.append(f"two different directions: {given}")
    elif directions:
        direction = directions[0][1]
        reader.sources["direction"] = directions[0][0]
    else:
        reader.sources["direction"] = "default: inbound"

    contact_id = reader.one("contact id", CONTACT_ID_ALIASES)
    email_found = [
        (alias, _soft_email(value)) for alias, value in reader.values(EMAIL_ALIASES, strict=True, piece="email")
    ]
    for alias, address in email_found:
        if not address:
            reader.notes.append(f"{alias} is not a valid email address: ignored")
    emails = [(alias, address) for alias, address in email_found if address]
    email = ""
    if len({address for _, address in emails}) > 1:
        reader.problems.append(f"two different emails: {', '.join(alias for alias, _ in emails)}")
        reader.refused.add("email")
    elif emails:
        email = emails[0][1]
        reader.sources["email"] = emails[0][0]
    phone = reader.one("phone", PHONE_ALIASES, same=_phone_key, show_values=False, max_length=64)
    text = reader.one("message text", TEXT_ALIASES, same=_text_key, show_values=False, max_length=None)
    message_id = reader.one("message id", MESSAGE_ID_ALIASES)
    location_id = reader.one("location id", LOCATION_ALIASES)
    channel_found = reader.one("channel", CHANNEL_ALIASES, same=_channel_of, max_length=64)
    channel = _channel_of(channel_found) if channel_found else ""

    sent_at = None
    for alias, value in reader.values(TIME_ALIASES, strict=False):
        sent_at = parse_instant(value, naive_as_utc=True)
        if sent_at is not None:
            reader.sources["time"] = alias
            break
        reader.notes.append(f"{alias} is not a date Leadline reads: skipped")
    if sent_at is None:
        reader.sources["time"] = "default: now"

    full_name = reader.first("full name", FULL_NAME_ALIASES, truncate=400)
    first_name = reader.first("first name", FIRST_NAME_ALIASES, truncate=200)
    last_name = reader.first("last name", LAST_NAME_ALIASES, truncate=200)
    timezone_name = reader.first("timezone", TIMEZONE_ALIASES, truncate=64)
    subject = reader.first("subject", SUBJECT_ALIASES, truncate=998)
    conversation_id = reader.first("conversation id", CONVERSATION_ID_ALIASES, truncate=MAX_ID_LENGTH)

    refused = reader.refused
    if not channel.startswith("other:"):
        # What is missing matters only for a message Leadline would store; a piece given
        # but refused above is not reported missing as well.
        if not (contact_id or email or phone or refused & {"contact id", "email", "phone"}):
            invalid = "".join(f", {alias} is not a valid email address" for alias, found in email_found if not found)
            reader.problems.append(
                f"no contact: looked for {', '.join(CONTACT_ID_ALIASES)} "
                f"(or {', '.join(EMAIL_ALIASES + PHONE_ALIASES)}){invalid}"
            )
        if not text and "message text" not in refused:
            reader.problems.append(f"no message text: looked for {', '.join(TEXT_ALIASES)}")
        if not channel and phone:
            channel = Channel.SMS
            reader.sources["channel"] = "default: sms, the body gives a phone"
        elif not channel and not refused & {"channel", "phone"}:
            reader.problems.append(
                f"no channel: looked for {', '.join(CHANNEL_ALIASES)} (SMS is assumed only when a phone is given)"
            )

    return GhlWorkflowReading(
        event_type=event_type,
        direction=direction,
        channel=channel,
        text=text,
        contact_id=contact_id,
        email=email,
        phone=phone,
        first_name=first_name,
        last_name=last_name,
        full_name=full_name,
        timezone=timezone_name,
        message_id=message_id,
        conversation_id=conversation_id,
        subject=subject,
        location_id=location_id,
        sent_at=sent_at,
        sources=reader.sources,
        problems=tuple(reader.problems),
        notes=tuple(reader.notes),
        found_keys=found_keys,
        blank_keys=tuple(dict.fromkeys(reader.blank)),
    )


GHL_MARKETPLACE = "marketplace"
GHL_CUSTOM_WEBHOOK = "custom"


def ghl_payload_shape(payload: Any) -> str:
    """``marketplace`` (a string ``type``, no ``message``), ``custom`` (any other object: the
    workflow / Custom Webhook bodies, read tolerantly) or "" (not a JSON object)."""
    if not isinstance(payload, dict):
        return ""
    if isinstance(payload.get("type"), str) and "message" not in payload:
        return GHL_MARKETPLACE
    return GHL_CUSTOM_WEBHOOK


def ghl_location_problem(*, shape: str, location_id: str, workspace_location_id: str, payload: Any = None) -> str:
    """Why a GHL body's location does not fit the workspace ("" when it does).

    A workspace with a GHL location only takes bodies naming that location:
    a body without one (a Custom Webhook whose workflow omits ``location``)
    would otherwise skip the tenant check.
    """
    if not workspace_location_id or not shape:
        return ""
    if not location_id:
        if shape == GHL_MARKETPLACE:
            return "locationId: is required (this workspace has a GHL location)"
        found = ", ".join(_found_keys(payload)) if isinstance(payload, dict) else ""
        return (
            f"no location id: looked for {', '.join(LOCATION_ALIASES)} (required: this workspace has a GHL "
            f"location); found keys: {found or 'none'}"
        )
    if location_id != workspace_location_id:
        return f"{'locationId' if shape == GHL_MARKETPLACE else 'location id'}: does not belong to this workspace"
    return ""


def ghl_delivery_parse(payload: Any) -> Delivery:
    """Parse a GHL body. Raises ``serializers.ValidationError`` naming the field.

    Marketplace message events go through the strict serializer (the fast
    path, unchanged); every other object through the tolerant reading.
    """
    if not isinstance(payload, dict):
        raise serializers.ValidationError({"payload": "must be a JSON object"})
    if ghl_payload_shape(payload) != GHL_MARKETPLACE:
        return ghl_workflow_read(payload).to_delivery()
    event_type = payload["type"]
    if event_type not in GHL_MESSAGE_EVENTS:
        location = payload.get("locationId")
        return Delivery(
            event_type=event_type[:64],
            action=DeliveryAction.IGNORE,
            location_id=location.strip()[:MAX_ID_LENGTH] if isinstance(location, str) else "",
            note="event type not handled",
        )
    serializer = GhlMarketplaceMessageSerializer(data=payload)
    serializer.is_valid(raise_exception=True)
    return serializer.to_delivery()


GHL_FOREIGN_LOCATION_ERROR = "locationId: does not belong to this workspace"


def ghl_location_foreign(*, location_ids: tuple[str, ...], workspace_location_id: str) -> bool:
    """Whether the body names another location than the workspace's (403, nothing written)."""
    return bool(workspace_location_id) and any(location != workspace_location_id for location in location_ids)


def ghl_location_ids_peek(payload: Any) -> tuple[str, ...]:
    """The location ids a GHL body claims, before full validation (tenant check first).

    A marketplace event: ``locationId`` (else ``location.id``), as given. Any
    other body: every rendered value of ``locationId`` and ``location.id``.
    """
    if not isinstance(payload, dict):
        return ()
    if ghl_payload_shape(payload) == GHL_MARKETPLACE:
        location = payload.get("locationId")
        if location is None and isinstance(payload.get("location"), dict):
            location = payload["location"].get("id")
        if isinstance(location, (str, int)) and not isinstance(location, bool) and str(location).strip():
            return (str(location).strip(),)
        return ()
    nested = payload.get("location")
    candidates = (payload.get("locationId"), nested.get("id") if isinstance(nested, dict) else None)
    found = []
    for value in candidates:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value)
            if not ghl_value_missing(text) and text.strip() not in found:
                found.append(text.strip())
    return tuple(found)


# --- EmailBison ----------------------------------------------------------------------

EMAILBISON_INBOUND_EVENTS = {"LEAD_REPLIED", "LEAD_INTERESTED", "UNTRACKED_REPLY_RECEIVED"}
EMAILBISON_OUTBOUND_EVENTS = {"EMAIL_SENT"}
EMAILBISON_BLACKLIST_EVENTS = {"EMAIL_BOUNCED", "LEAD_UNSUBSCRIBED"}


class EmailBisonEventSerializer(serializers.Serializer):
    type = serializers.CharField(max_length=64)
    name = LenientCharField(truncate=200)
    instance_url = LenientCharField(truncate=500)
    workspace_id = serializers.JSONField(required=False, allow_null=True)
    workspace_name = LenientCharField(truncate=200)


class EmailBisonReplySerializer(serializers.Serializer):
    id = serializers.CharField(max_length=MAX_ID_LENGTH)
    uuid = LenientCharField(truncate=64)
    email_subject = LenientCharField(truncate=998, trim_whitespace=False)
    text_body = BodyField(required=False, allow_null=True)
    html_body = BodyField(required=False, allow_null=True)
    from_email_address = LenientCharField(truncate=320)
    from_name = LenientCharField(truncate=400)
    date_received = serializers.JSONField(required=False, allow_null=True)
    interested = serializers.BooleanField(required=False, allow_null=True)
    automated_reply = serializers.BooleanField(required=False, allow_null=True)
    folder = LenientCharField(truncate=64)


class EmailBisonLeadSerializer(serializers.Serializer):
    id = LenientCharField(max_length=MAX_ID_LENGTH)
    email = LenientCharField(truncate=320)
    first_name = LenientCharField(truncate=200)
    last_name = LenientCharField(truncate=200)


class EmailBisonScheduledEmailSerializer(serializers.Serializer):
    id = LenientCharField(max_length=MAX_ID_LENGTH)
    email_subject = LenientCharField(truncate=998, trim_whitespace=False)
    email_body = BodyField(required=False, allow_null=True)
    sent_at = serializers.JSONField(required=False, allow_null=True)


class EmailBisonDataSerializer(serializers.Serializer):
    reply = EmailBisonReplySerializer(required=False, allow_null=True)
    lead = EmailBisonLeadSerializer(required=False, allow_null=True)
    scheduled_email = EmailBisonScheduledEmailSerializer(required=False, allow_null=True)
    campaign = serializers.JSONField(required=False, allow_null=True)
    sender_email = serializers.JSONField(required=False, allow_null=True)


class EmailBisonWebhookSerializer(serializers.Serializer):
    event = EmailBisonEventSerializer()
    data = EmailBisonDataSerializer()

    def to_delivery(self) -> Delivery:
        event_type = self.validated_data["event"]["type"]
        data = self.validated_data["data"]
        lead = data.get("lead") or {}
        reply = data.get("reply")
        if event_type in EMAILBISON_INBOUND_EVENTS:
            if not reply:
                raise serializers.ValidationError({"data": {"reply": "is required for " + event_type}})
            return self._reply_delivery(event_type, reply, lead)
        if event_type in EMAILBISON_OUTBOUND_EVENTS:
            return self._sent_delivery(event_type, data, lead)
        identity = self._identity(lead, fallback_email="")
        if identity.normalised().is_empty:
            raise serializers.ValidationError({"data": {"lead": "needs an id or a valid email for " + event_type}})
        scheduled = data.get("scheduled_email") or {}
        reference = scheduled.get("id") or lead.get("id") or identity.normalised().email
        return Delivery(
            event_type=event_type,
            action=DeliveryAction.BLACKLIST,
            idempotency_key=f"{event_type}:{reference}",
            identity=identity,
        )

    @staticmethod
    def _identity(lead: dict[str, Any], *, fallback_email: str) -> LeadIdentity:
        return LeadIdentity(
            emailbison_lead_id=_clean_id(lead.get("id")),
            email=_soft_email(lead.get("email")) or fallback_email,
            first_name=lead.get("first_name") or "",
            last_name=lead.get("last_name") or "",
        )

    def _reply_delivery(self, event_type: str, reply: dict[str, Any], lead: dict[str, Any]) -> Delivery:
        identity = self._identity(lead, fallback_email=_soft_email(reply.get("from_email_address")))
        if identity.normalised().is_empty:
            raise serializers.ValidationError({"data": {"lead": "needs an id or email (or reply.from_email_address)"}})
        body = reply.get("text_body") or strip_tags(reply.get("html_body") or "").strip()
        interested = reply.get("interested")
        if event_type == "LEAD_INTERESTED":
            interested = True
        message = ParsedMessage(
            channel=Channel.EMAIL,
            direction=Direction.INBOUND,
            body=body,
            subject=reply.get("email_subject") or "",
            sent_at=_sent_at(reply.get("date_received")),
            emailbison_reply_id=reply["id"],
            provider_interested=interested,
        )
        return Delivery(
            event_type=event_type,
            action=DeliveryAction.MESSAGE,
            idempotency_key=f"{event_type}:{reply['id']}",
            identity=identity,
            message=message,
        )

    def _sent_delivery(self, event_type: str, data: dict[str, Any], lead: dict[str, Any]) -> Delivery:
        identity = self._identity(lead, fallback_email="")
        if identity.normalised().is_empty:
            raise serializers.ValidationError({"data": {"lead": "needs an id or a valid email for " + event_type}})
        scheduled = data.get("scheduled_email") or {}
        reply = data.get("reply") or {}
        if not scheduled and not reply:
            raise serializers.ValidationError({"data": {"scheduled_email": "is required for " + event_type}})
        if scheduled:
            body = scheduled.get("email_body") or ""
            subject, sent = scheduled.get("email_subject") or "", scheduled.get("sent_at")
            reference = scheduled.get("id")
        else:
            body = reply.get("text_body") or reply.get("html_body") or ""
            subject, sent, reference = reply.get("email_subject") or "", reply.get("date_received"), reply.get("id")
        message = ParsedMessage(
            channel=Channel.EMAIL,
            direction=Direction.OUTBOUND,
            body=strip_tags(body).strip() if "<" in body else body,
            subject=subject,
            sent_at=_sent_at(sent),
        )
        return Delivery(
            event_type=event_type,
            action=DeliveryAction.MESSAGE,
            idempotency_key=f"{event_type}:{reference}" if reference else "",
            identity=identity,
            message=message,
        )


EMAILBISON_HANDLED_EVENTS = EMAILBISON_INBOUND_EVENTS | EMAILBISON_OUTBOUND_EVENTS | EMAILBISON_BLACKLIST_EVENTS


def emailbison_delivery_parse(payload: Any) -> Delivery:
    """Parse an EmailBison body. Raises ``serializers.ValidationError`` naming the field."""
    if not isinstance(payload, dict):
        raise serializers.ValidationError({"payload": "must be a JSON object"})
    event = payload.get("event")
    if not isinstance(event, dict):
        raise serializers.ValidationError({"event": "must be an object with a type"})
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise serializers.ValidationError({"event": {"type": "is required"}})
    if event_type not in EMAILBISON_HANDLED_EVENTS:
        return Delivery(event_type=event_type[:64], action=DeliveryAction.IGNORE, note="event type not handled")
    serializer = EmailBisonWebhookSerializer(data=payload)
    serializer.is_valid(raise_exception=True)
    return serializer.to_delivery()
