from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from rest_framework import serializers as drf_serializers

from core.sql import RowsExist, rows_exist_each, table
from leads.models import MACHINE_REPLY_SENTIMENTS, Lead, LeadStatus, Sentiment
from leads.services import LeadIdentity, lead_match, phone_normalize
from messaging.models import Delivery, Direction, Message, Origin, WebhookEvent
from messaging.serializers import (
    GHL_CUSTOM_WEBHOOK,
    GHL_FOREIGN_LOCATION_ERROR,
    GHL_MARKETPLACE,
    DeliveryAction,
    MalformedBody,
    ghl_delivery_parse,
    ghl_location_foreign,
    ghl_location_ids_peek,
    ghl_location_problem,
    ghl_payload_shape,
    ghl_workflow_read,
    validation_error_text,
    webhook_json_load,
)
from workspaces.models import Workspace
from workspaces.selectors import count_by

# --- Workspace lookup for the webhook path ---------------------------------------------

# Short, per-process: a changed secret or location takes effect within this
# many seconds in every web process (immediately in the one that saved it).
WORKSPACE_CACHE_TTL_S = 10.0
WORKSPACE_CACHE_NEGATIVE_TTL_S = 2.0
WORKSPACE_CACHE_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class WebhookWorkspace:
    """What the webhook path needs of a workspace; secrets decrypted once per cache entry."""

    id: int
    slug: str
    webhook_secret: str
    ghl_location_id: str
    verify_ghl_signatures: bool


_cache: OrderedDict[str, tuple[float, WebhookWorkspace | None]] = OrderedDict()
_cache_lock = threading.Lock()


def webhook_workspace_get(*, slug: str) -> WebhookWorkspace | None:
    """The active workspace for ``slug`` (None when unknown or inactive), cached briefly."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(slug)
        if hit is not None and hit[0] > now:
            _cache.move_to_end(slug)
            return hit[1]
    row = (
        Workspace.objects.filter(slug=slug, is_active=True)
        .only("id", "slug", "webhook_secret", "ghl_location_id", "verify_ghl_signatures")
        .first()
    )
    value = None
    if row is not None:
        value = WebhookWorkspace(
            id=row.pk,
            slug=row.slug,
            webhook_secret=row.webhook_secret or "",
            ghl_location_id=row.ghl_location_id or "",
            verify_ghl_signatures=row.verify_ghl_signatures,
        )
    ttl = WORKSPACE_CACHE_TTL_S if value is not None else WORKSPACE_CACHE_NEGATIVE_TTL_S
    with _cache_lock:
        _cache[slug] = (now + ttl, value)
        _cache.move_to_end(slug)
        while len(_cache) > WORKSPACE_CACHE_MAX_ENTRIES:
            _cache.popitem(last=False)
    return value


def webhook_workspace_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def message_counts_by_direction(*, workspace: Workspace) -> dict[str, int]:
    """``workspace_report``'s ``messages``."""
    by_direction = count_by(Message.objects.filter(workspace=workspace), "direction")
    return {"inbound": by_direction.get(Direction.INBOUND, 0), "outbound": by_direction.get(Direction.OUTBOUND, 0)}


# --- Sweeper -------------------------------------------------------------------------------

# Work enqueued this many times without any result is left to operators.
SWEEP_MAX_ENQUEUES = 5
# The sweeper's window: an inbound message stored by Leadline longer ago than this is left
# alone. It counts from ``created_at`` (Leadline's clock), not from the provider's date in the
# payload: a late redelivery, a sender's wrong clock or a workflow body carrying an old date
# must still get its work. Imported history (``Origin.SYNC``) must also be recent by its own
# date: a sync never starts drafts for old conversations.
SWEEP_MAX_MESSAGE_AGE = timedelta(hours=24)


def sweep_window_q(*, now: datetime) -> Q:
    """The messages inside the sweeper's window, as a filter (``message_in_sweep_window``'s twin)."""
    start = now - SWEEP_MAX_MESSAGE_AGE
    return Q(created_at__gte=start) & (~Q(origin=Origin.SYNC) | Q(sent_at__gte=start))


def message_in_sweep_window(message: Message, *, now: datetime) -> bool:
    start = now - SWEEP_MAX_MESSAGE_AGE
    return message.created_at >= start and (message.origin != Origin.SYNC or message.sent_at >= start)


# --- Conversation order ------------------------------------------------------------------


def sent_at_param(message: Message) -> Any:
    return Message._meta.get_field("sent_at").get_db_prep_value(message.sent_at, connection)


def newer_inbound(message: Message) -> RowsExist:
    """ "An inbound message of the lead is newer than ``message``": newer ``sent_at``, or the same
    and a higher id; one classified out-of-office or automated reply does not count (one not
    classified yet does). A typed condition other apps put in their own statements (the lead's
    tag, a draft's final write) so the check and the write stay one statement."""
    return RowsExist(
        model=Message,
        equal=(("workspace_id", message.workspace_id), ("lead_id", message.lead_id), ("direction", Direction.INBOUND)),
        after=(("sent_at", message.sent_at), ("id", message.pk)),
        not_in=("sentiment", MACHINE_REPLY_SENTIMENTS),
    )


def conversation_before(message: Message, *, limit: int) -> list[tuple[str, str]]:
    """(direction, body) of the lead's last ``limit`` messages before ``message``, oldest first.
    A send that failed never reached the lead: it is not part of the conversation."""
    sent_at = sent_at_param(message)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT direction, body FROM {table(Message)} WHERE workspace_id = %s AND lead_id = %s"  # noqa: S608
            " AND (sent_at < %s OR (sent_at = %s AND id < %s)) AND delivery <> %s"
            " ORDER BY sent_at DESC, id DESC LIMIT %s",
            [message.workspace_id, message.lead_id, sent_at, sent_at, message.pk, Delivery.FAILED, max(0, limit)],
        )
        return list(reversed(cursor.fetchall()))


@dataclass(frozen=True)
class LeadAfterMessage:
    """The lead's sentiment state, and whether it wrote again after a message."""

    status: str
    sentiment: str
    newer_inbound: bool

    @property
    def is_blacklisted(self) -> bool:
        return self.status == LeadStatus.BLACKLISTED or self.sentiment == Sentiment.BLACKLIST


def lead_state_after(message: Message) -> LeadAfterMessage:
    """The lead of ``message`` as it stands now, and whether a newer inbound message exists
    (``newer_inbound``): one query."""
    newer_sql, newer_params = newer_inbound(message).sql("nm")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status, sentiment, {newer_sql} FROM {table(Lead)} WHERE id = %s AND workspace_id = %s",  # noqa: S608
            [*newer_params, message.lead_id, message.workspace_id],
        )
        status, sentiment, newer = cursor.fetchone()
    return LeadAfterMessage(status=status, sentiment=sentiment, newer_inbound=bool(newer))


def message_has_newer_inbound(message: Message) -> bool:
    """Whether the lead wrote again after ``message`` (``newer_inbound``: a classified
    out-of-office or automated reply does not count)."""
    return bool(messages_with_newer_inbound([message]))


def messages_with_newer_inbound(messages: Sequence[Message]) -> set[int]:
    """The ids of ``messages`` whose lead wrote again after them (``message_has_newer_inbound``
    for each), in one query."""
    found = rows_exist_each([newer_inbound(message) for message in messages])
    return {message.pk for message, newer in zip(messages, found, strict=True) if newer}


# --- Deduplication of messages without a provider id -----------------------------------

DEDUPE_WINDOW = timedelta(seconds=60)
_WHITESPACE = re.compile(r"\s+")


def message_body_hash(body: str) -> str:
    """sha256 of the body with whitespace collapsed (providers re-wrap lines)."""
    return hashlib.sha256(_WHITESPACE.sub(" ", body or "").strip().encode()).hexdigest()


def message_body_duplicate_get(
    *, workspace_id: int, lead_id: int, direction: str, body_hash: str, sent_at: datetime
) -> Message | None:
    """The lead's same-direction message with this body hash sent within ``DEDUPE_WINDOW``."""
    return (
        Message.objects.filter(
            workspace_id=workspace_id,
            lead_id=lead_id,
            direction=direction,
            body_hash=body_hash,
            sent_at__gte=sent_at - DEDUPE_WINDOW,
            sent_at__lte=sent_at + DEDUPE_WINDOW,
        )
        .order_by("id")
        .first()
    )


def webhook_event_original(*, workspace_id: int, provider: str, idempotency_key: str) -> WebhookEvent | None:
    return (
        WebhookEvent.objects.filter(workspace_id=workspace_id, provider=provider, idempotency_key=idempotency_key)
        .only("id", "message_id", "lead_id", "status")
        .first()
    )


def messages_emailbison_sender_ids(messages: Sequence[Message]) -> dict[int, str]:
    """The EmailBison sender each of ``messages`` (one workspace) was written to, from its stored
    ``LEAD_REPLIED`` delivery (a reply goes out through the same address when it can), in one
    query; messages with no known sender are left out."""
    if not messages:
        return {}
    rows = (
        WebhookEvent.objects.filter(
            workspace_id=messages[0].workspace_id,
            message_id__in=[message.pk for message in messages],
            provider=WebhookEvent.Provider.EMAILBISON,
        )
        .order_by("id")
        .values_list("message_id", "body")
    )
    found: dict[int, str] = {}
    for message_id, body in rows:
        data = body.get("data") if isinstance(body, dict) else None
        sender = data.get("sender_email") if isinstance(data, dict) else None
        sender_id = sender.get("id") if isinstance(sender, dict) else None
        if sender_id not in (None, "") and message_id not in found:
            found[message_id] = str(sender_id)[:64]
    return found


# --- Dry run of a GHL delivery (the operators' webhook check) -----------------------------

# The 400 answer's error is cut to this length (the view and the dry run alike).
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class WebhookPreview:
    """What ``POST /webhooks/ghl/<slug>/`` would do with a body, worked out without writing.

    ``rows`` is the reading (label, value) shown by the admin page and the
    ``webhook_check`` command; ``error`` the precise refusal when ``outcome``
    is ``refused``.
    """

    status: int  # the HTTP status the webhook would answer
    outcome: str  # created / duplicate / ignored / refused
    error: str = ""
    rows: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


def _lead_match_reason(*, lead: Lead, identity: LeadIdentity, phone_e164: str) -> str:
    if identity.ghl_contact_id and lead.ghl_contact_id == identity.ghl_contact_id:
        return "GHL contact id"
    if identity.email and lead.email.lower() == identity.email:
        return "email"
    return "phone" if phone_e164 else "?"


def _with_source(value: str, source: str) -> str:
    if not source:
        return value
    return f"{value}   ({source})" if source.startswith("default") else f"{value}   (from {source})"


def ghl_delivery_preview(*, workspace: Workspace, raw: bytes) -> WebhookPreview:
    """The dry run of a GHL body for ``workspace``: the same checks and reading as the webhook
    (size, JSON, tenant location, required location, strict marketplace serializer or the
    tolerant workflow reading), then the lead it would match and whether it would be a
    duplicate. Reads only: no row is written and nothing is enqueued."""
    notes = ["not checked by the dry run: the webhook secret (header X-Webhook-Secret or ?secret=)"]
    if workspace.verify_ghl_signatures:
        notes.append("this workspace verifies GHL signatures: a marketplace event must be signed (not checked here)")
    if not workspace.is_active:
        notes.append("this workspace is inactive: its webhooks answer 404")
    cap = settings.WEBHOOK_MAX_BODY_BYTES
    if len(raw) > cap:
        return WebhookPreview(413, "refused", f"body: larger than {cap} bytes", notes=tuple(notes))
    try:
        payload = webhook_json_load(raw)
    except MalformedBody as exc:
        return WebhookPreview(400, "refused", str(exc), notes=tuple(notes))
    shape = ghl_payload_shape(payload)
    locations = ghl_location_ids_peek(payload)
    if ghl_location_foreign(location_ids=locations, workspace_location_id=workspace.ghl_location_id):
        return WebhookPreview(403, "refused", GHL_FOREIGN_LOCATION_ERROR, notes=tuple(notes))
    rows: list[tuple[str, str]] = [
        ("shape", {GHL_MARKETPLACE: "marketplace event (strict)", GHL_CUSTOM_WEBHOOK: "workflow body (tolerant)"}.get(
            shape, "not a JSON object"
        ))
    ]  # fmt: skip
    problem = ghl_location_problem(
        shape=shape,
        location_id=locations[0] if locations else "",
        workspace_location_id=workspace.ghl_location_id,
        payload=payload,
    )
    reading = ghl_workflow_read(payload) if shape == GHL_CUSTOM_WEBHOOK else None
    if reading is not None:
        notes.extend(reading.notes)
    if problem:
        if reading is not None and reading.problems:
            notes.append(f"with a location, the body would still be refused: {reading.refusal}")
        return WebhookPreview(400, "refused", problem, rows=tuple(rows), notes=tuple(notes))
    try:
        delivery = reading.to_delivery() if reading is not None else ghl_delivery_parse(payload)
    except drf_serializers.ValidationError as exc:
        error = validation_error_text(exc.detail)[:MAX_ERROR_LENGTH]
        return WebhookPreview(400, "refused", error, rows=tuple(rows), notes=tuple(notes))

    def source(piece: str, marketplace_field: str) -> str:
        return reading.sources.get(piece, "") if reading is not None else marketplace_field

    rows.append(("event type", delivery.event_type))
    if delivery.action != DeliveryAction.MESSAGE or delivery.message is None or delivery.identity is None:
        rows.append(("ignored because", delivery.note))
        return WebhookPreview(200, "ignored", rows=tuple(rows), notes=tuple(notes))

    identity = delivery.identity.normalised()
    phone_e164 = phone_normalize(raw=identity.phone_raw) if identity.phone_raw else ""
    lead = lead_match(workspace_id=workspace.pk, identity=identity, phone_e164=phone_e164)
    if lead is None:
        rows.append(("lead", "new lead (no lead of this workspace has this contact id, email or phone)"))
    else:
        name = " ".join(part for part in (lead.first_name, lead.last_name) if part) or "(no name)"
        reason = _lead_match_reason(lead=lead, identity=identity, phone_e164=phone_e164)
        rows.append(("lead", f"existing lead #{lead.pk} {name}, matched by {reason}"))
    parsed = delivery.message
    rows += [
        ("contact id", _with_source(identity.ghl_contact_id or "(none)", source("contact id", "contactId"))),
        ("email", _with_source(identity.email or "(none)", source("email", "email/from/to"))),
        ("phone", _with_source(phone_e164 or identity.phone_raw or "(none)", source("phone", "phone"))),
    ]
    if identity.phone_raw and not phone_e164:
        notes.append("the phone is not a valid number: kept as given, no E.164")
    rows += [
        ("channel", _with_source(parsed.channel, source("channel", "messageType"))),
        ("direction", _with_source(parsed.direction, source("direction", "type"))),
        ("text", _with_source(parsed.body, source("message text", "body"))),
        ("time", _with_source(parsed.sent_at.isoformat(), source("time", "dateAdded"))),
    ]
    if parsed.subject:
        rows.append(("subject", parsed.subject))

    duplicate_of = ""
    if parsed.ghl_message_id:
        dedupe_key = f"GHL message id {parsed.ghl_message_id} (unique in the workspace)"
        known_id = (
            Message.objects.filter(workspace_id=workspace.pk, ghl_message_id=parsed.ghl_message_id)
            .values_list("id", flat=True)
            .first()
        )
        duplicate_of = f"message #{known_id}" if known_id else ""
    else:
        body_hash = message_body_hash(parsed.body)
        window = int(DEDUPE_WINDOW.total_seconds())
        dedupe_key = f"body hash {body_hash[:12]}… of the lead's {parsed.direction} messages within ±{window} s"
        if lead is not None:
            known = message_body_duplicate_get(
                workspace_id=workspace.pk,
                lead_id=lead.pk,
                direction=parsed.direction,
                body_hash=body_hash,
                sent_at=parsed.sent_at,
            )
            duplicate_of = f"message #{known.pk}" if known else ""
    rows.append(("dedupe key", dedupe_key))
    if delivery.idempotency_key:
        rows.append(("idempotency key", delivery.idempotency_key))
        original = webhook_event_original(
            workspace_id=workspace.pk, provider=WebhookEvent.Provider.GHL, idempotency_key=delivery.idempotency_key
        )
        duplicate_of = duplicate_of or (f"webhook event #{original.pk}" if original else "")
    if duplicate_of:
        rows.append(("duplicate of", duplicate_of))
        return WebhookPreview(200, "duplicate", rows=tuple(rows), notes=tuple(notes))
    return WebhookPreview(200, "created", rows=tuple(rows), notes=tuple(notes))
