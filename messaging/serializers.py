"""Provider payloads → ``Delivery`` (what the ingestion service needs).

One DRF serializer per payload shape. Structural problems (wrong types,
missing required fields) raise ``serializers.ValidationError``; the view turns
the first one into ``400 {"error": "<field.path>: <reason>"}``. Soft problems
that must not lose an inbound message (an invalid contact email, an
unparseable date, an over-long subject) are tolerated: the value is dropped
or truncated, never a reason to refuse the delivery.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.utils import timezone
from django.utils.html import strip_tags
from rest_framework import serializers

from core.timeparse import parse_instant
from leads.services import LeadIdentity
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
    parsed = parse_instant(value, naive_as_utc=True)
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


class GhlCustomLocationSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=MAX_ID_LENGTH)
    name = LenientCharField(truncate=200)


class GhlCustomMessageSerializer(serializers.Serializer):
    type = serializers.JSONField(required=False, allow_null=True)
    body = BodyField()
    direction = serializers.ChoiceField(choices=Direction.values, required=False)


# GHL conversation message types (numeric in workflow payloads).
GHL_CUSTOM_TYPE_CHANNELS = {2: Channel.SMS, 3: Channel.EMAIL, "sms": Channel.SMS, "email": Channel.EMAIL}


class GhlCustomWebhookSerializer(serializers.Serializer):
    """GHL workflow "Custom Webhook" action body (snake_case, unsigned, no message id)."""

    contact_id = LenientCharField(max_length=MAX_ID_LENGTH)
    first_name = LenientCharField(truncate=200)
    last_name = LenientCharField(truncate=200)
    full_name = LenientCharField(truncate=400)
    email = LenientCharField(truncate=320)
    phone = LenientCharField(truncate=64)
    timezone = LenientCharField(truncate=64)
    tags = serializers.JSONField(required=False, allow_null=True)
    location = GhlCustomLocationSerializer(required=False)
    workflow = serializers.JSONField(required=False, allow_null=True)
    message = GhlCustomMessageSerializer()
    customData = serializers.JSONField(required=False, allow_null=True)
    date_created = serializers.JSONField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (attrs.get("contact_id") or attrs.get("email") or attrs.get("phone")):
            raise serializers.ValidationError({"contact_id": "is required (or email / phone)"})
        return attrs

    def to_delivery(self) -> Delivery:
        data = self.validated_data
        msg = data["message"]
        raw_type = msg.get("type")
        if raw_type is not None and (isinstance(raw_type, bool) or not isinstance(raw_type, (int, str))):
            raise serializers.ValidationError({"message": {"type": "must be a number or a string"}})
        channel_key = raw_type.strip().lower() if isinstance(raw_type, str) else raw_type
        if isinstance(channel_key, str) and channel_key.isdigit():
            channel_key = int(channel_key)
        channel = Channel.SMS if raw_type in (None, "") else GHL_CUSTOM_TYPE_CHANNELS.get(channel_key)
        location_id = (data.get("location") or {}).get("id", "")
        if channel is None:
            return Delivery(
                event_type="CustomWebhook",
                action=DeliveryAction.IGNORE,
                location_id=location_id,
                note=f"message.type {str(raw_type)[:32]!r} is not SMS or Email",
            )
        first, last = data.get("first_name") or "", data.get("last_name") or ""
        if not (first or last) and data.get("full_name"):
            first, _, last = data["full_name"].partition(" ")
        identity = LeadIdentity(
            ghl_contact_id=data.get("contact_id") or "",
            email=_soft_email(data.get("email")),
            phone_raw=data.get("phone") or "",
            first_name=first,
            last_name=last,
            timezone=data.get("timezone") or "",
        )
        if identity.normalised().is_empty:
            raise serializers.ValidationError({"contact_id": "is required (or a valid email / phone)"})
        message = ParsedMessage(
            channel=channel,
            direction=msg.get("direction") or Direction.INBOUND,
            body=msg["body"],
            sent_at=_sent_at(data.get("date_created")),
        )
        return Delivery(
            event_type="CustomWebhook",
            action=DeliveryAction.MESSAGE,
            identity=identity,
            message=message,
            location_id=location_id,
        )


GHL_MARKETPLACE = "marketplace"
GHL_CUSTOM_WEBHOOK = "custom"


def ghl_payload_shape(payload: Any) -> str:
    """``marketplace`` (a string ``type``, no ``message``), ``custom`` (workflow Custom Webhook) or ""."""
    if not isinstance(payload, dict):
        return ""
    if isinstance(payload.get("type"), str) and "message" not in payload:
        return GHL_MARKETPLACE
    if isinstance(payload.get("message"), dict) or "contact_id" in payload:
        return GHL_CUSTOM_WEBHOOK
    return ""


def ghl_location_field(shape: str) -> str:
    """The name of the location field in a body of this shape (for error messages)."""
    return "location.id" if shape == GHL_CUSTOM_WEBHOOK else "locationId"


def ghl_location_problem(*, shape: str, location_id: str, workspace_location_id: str) -> str:
    """Why a GHL body's location does not fit the workspace ("" when it does).

    A workspace with a GHL location only takes bodies naming that location:
    a body without one (a Custom Webhook whose workflow omits ``location``)
    would otherwise skip the tenant check.
    """
    if not workspace_location_id or not shape:
        return ""
    if not location_id:
        return f"{ghl_location_field(shape)}: is required (this workspace has a GHL location)"
    if location_id != workspace_location_id:
        return f"{ghl_location_field(shape)}: does not belong to this workspace"
    return ""


def ghl_delivery_parse(payload: Any) -> Delivery:
    """Parse a GHL body. Raises ``serializers.ValidationError`` naming the field."""
    if not isinstance(payload, dict):
        raise serializers.ValidationError({"payload": "must be a JSON object"})
    event_type = payload.get("type")
    shape = ghl_payload_shape(payload)
    if shape == GHL_MARKETPLACE:
        location = payload.get("locationId")
        location_id = location.strip()[:MAX_ID_LENGTH] if isinstance(location, str) else ""
        if event_type not in GHL_MESSAGE_EVENTS:
            return Delivery(
                event_type=event_type[:64],
                action=DeliveryAction.IGNORE,
                location_id=location_id,
                note="event type not handled",
            )
        serializer = GhlMarketplaceMessageSerializer(data=payload)
    elif shape == GHL_CUSTOM_WEBHOOK:
        serializer = GhlCustomWebhookSerializer(data=payload)
    else:
        raise serializers.ValidationError({"type": "is required (InboundMessage / OutboundMessage) or message.body"})
    serializer.is_valid(raise_exception=True)
    return serializer.to_delivery()


def ghl_location_id_peek(payload: Any) -> str:
    """The location id a GHL body claims, before full validation (tenant check first)."""
    if not isinstance(payload, dict):
        return ""
    location = payload.get("locationId")
    if location is None and isinstance(payload.get("location"), dict):
        location = payload["location"].get("id")
    if isinstance(location, (str, int)) and not isinstance(location, bool):
        return str(location).strip()
    return ""


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
