from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, Q

from core.sql import table
from leads.models import MACHINE_REPLY_SENTIMENTS
from messaging.models import Direction, Message, Origin, WebhookEvent
from workspaces.models import Workspace

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


def messages_awaiting_work(*, workspace_id: int, now: datetime, grace_s: float, limit: int = 500) -> list[int]:
    """Inbound messages of the workspace whose classify+draft work seems lost.

    No draft, and either not classified yet, or classified with a tag that gets a draft
    (the run died between classification and the draft's insert) for a lead that is not
    blacklisted and with no newer inbound message (which answers the lead instead; a newer
    machine reply does not count, so such a message is picked up once that reply is
    classified out-of-office or automated); and either never enqueued (and older than ``grace_s``, so the webhook's
    own on-commit enqueue is not raced) or enqueued longer than ``DRAFT_SWEEP_AFTER_S`` ago.
    """
    from drafts.models import Draft
    from leads.models import DRAFTABLE_SENTIMENTS, LeadStatus

    never = Q(work_enqueued_at__isnull=True, created_at__lte=now - timedelta(seconds=grace_s))
    stale = Q(work_enqueued_at__lte=now - timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S))
    # The same rule as ``newer_inbound_sql``: a newer message's draft answers the lead.
    newer = (
        Message.objects.filter(workspace_id=workspace_id, lead_id=OuterRef("lead_id"), direction=Direction.INBOUND)
        .filter(Q(sent_at__gt=OuterRef("sent_at")) | Q(sent_at=OuterRef("sent_at"), id__gt=OuterRef("id")))
        .exclude(sentiment__in=MACHINE_REPLY_SENTIMENTS)
    )
    unfinished = Q(classified_at__isnull=True) | (
        Q(sentiment__in=DRAFTABLE_SENTIMENTS) & ~Q(lead__status=LeadStatus.BLACKLISTED) & ~Exists(newer)
    )
    return list(
        Message.objects.filter(
            workspace_id=workspace_id,
            direction=Direction.INBOUND,
            work_enqueue_count__lt=SWEEP_MAX_ENQUEUES,
        )
        .filter(sweep_window_q(now=now))
        .filter(unfinished)
        .filter(never | stale)
        .exclude(Exists(Draft.objects.filter(workspace_id=workspace_id, message_id=OuterRef("pk"))))
        .order_by("created_at", "id")
        .values_list("id", flat=True)[:limit]
    )


# --- Conversation order ------------------------------------------------------------------


def sent_at_param(message: Message) -> Any:
    return Message._meta.get_field("sent_at").get_db_prep_value(message.sent_at, connection)


def newer_inbound_sql(message: Message) -> tuple[str, list[Any]]:
    """ "An inbound message of the lead is newer than ``message``" as an SQL condition (and its
    parameters): newer ``sent_at``, or the same and a higher id; one classified out-of-office or
    automated reply does not count (one not classified yet does)."""
    sent_at = sent_at_param(message)
    sql = (
        f"EXISTS (SELECT 1 FROM {table(Message)} nm WHERE nm.workspace_id = %s AND nm.lead_id = %s"  # noqa: S608
        " AND nm.direction = %s AND (nm.sent_at > %s OR (nm.sent_at = %s AND nm.id > %s))"
        " AND nm.sentiment NOT IN (%s, %s))"
    )
    params = [message.workspace_id, message.lead_id, Direction.INBOUND, sent_at, sent_at, message.pk]
    return sql, [*params, *MACHINE_REPLY_SENTIMENTS]


def message_has_newer_inbound(message: Message) -> bool:
    """Whether the lead wrote again after ``message`` (``newer_inbound_sql``'s rule: a classified
    out-of-office or automated reply does not count)."""
    sql, params = newer_inbound_sql(message)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)
        return bool(cursor.fetchone()[0])


def webhook_event_original(*, workspace_id: int, provider: str, idempotency_key: str) -> WebhookEvent | None:
    return (
        WebhookEvent.objects.filter(workspace_id=workspace_id, provider=provider, idempotency_key=idempotency_key)
        .only("id", "message_id", "lead_id", "status")
        .first()
    )


def message_emailbison_sender_id(message: Message) -> str:
    """The EmailBison sender the lead wrote to (from the stored ``LEAD_REPLIED`` delivery): a
    reply goes out through the same address when it can. "" when unknown."""
    bodies = WebhookEvent.objects.filter(
        workspace_id=message.workspace_id, message_id=message.pk, provider=WebhookEvent.Provider.EMAILBISON
    ).values_list("body", flat=True)
    for body in bodies:
        data = body.get("data") if isinstance(body, dict) else None
        sender = data.get("sender_email") if isinstance(data, dict) else None
        sender_id = sender.get("id") if isinstance(sender, dict) else None
        if sender_id not in (None, ""):
            return str(sender_id)[:64]
    return ""
