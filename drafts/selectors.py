"""Reads of the drafts app."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from availability.selectors import available_slots_for_lead, parse_slot_start
from drafts.models import Draft, DraftStatus
from leads.models import DRAFTABLE_SENTIMENTS, MACHINE_REPLY_SENTIMENTS, Lead, LeadStatus
from messaging.models import Direction, Message
from messaging.selectors import SWEEP_MAX_ENQUEUES, sweep_window_q
from workspaces.models import Workspace
from workspaces.selectors import count_by


def draft_counts_by_status(*, workspace) -> dict[str, int]:
    """``workspace_report``'s ``drafts``."""
    return count_by(Draft.objects.filter(workspace=workspace), "status")


# Drafts in these states were (or are about to be) seen by the lead: their slots count as offered.
OFFERED_DRAFT_STATUSES = (DraftStatus.SENT, DraftStatus.APPROVED)


def lead_offered_slot_starts(*, workspace: Workspace, lead: Lead | None) -> set[datetime]:
    """Slot starts this lead was already offered (and, having answered otherwise, declined)."""
    if lead is None or lead.pk is None:
        return set()
    offered: set[datetime] = set()
    rows = Draft.objects.filter(workspace=workspace, lead=lead, status__in=OFFERED_DRAFT_STATUSES).values_list(
        "offered_slots", flat=True
    )
    for slots in rows:
        for item in slots or []:
            raw = item.get("start_utc") if isinstance(item, dict) else item
            parsed = parse_slot_start(raw)
            if parsed is not None:
                offered.add(parsed)
    return offered


def slots_to_offer(*, workspace: Workspace, lead: Lead | None, count: int) -> list[dict]:
    """Up to ``count`` cached slots for a reply to this lead, none it was offered before."""
    return available_slots_for_lead(
        workspace=workspace,
        lead=lead,
        count=count,
        declined=functools.partial(lead_offered_slot_starts, workspace=workspace, lead=lead),
    )


# A generating draft older than the task's hard limit plus this is not being worked on.
GENERATING_STALE_MARGIN_S = 30


def drafts_stale_open(
    *, workspace_id: int, now: datetime | None = None, limit: int = 500
) -> list[tuple[int, int, int]]:
    """Open drafts of the workspace whose task seems lost, oldest first:
    (draft id, message id, how often the message's work was enqueued).

    ``pending`` for longer than ``DRAFT_SWEEP_AFTER_S``, or ``generating`` for longer than
    ``DRAFT_TASK_TIME_LIMIT_S`` plus a margin (no live task can still be on it); and in both
    cases the message's work not handed to the broker in the last ``DRAFT_SWEEP_AFTER_S``
    (a task enqueued by the previous sweep may still wait in a busy queue).
    """
    now = now or timezone.now()
    sweep_after = now - timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S)
    pending = Q(status=DraftStatus.PENDING, updated_at__lte=sweep_after)
    generating = Q(
        status=DraftStatus.GENERATING,
        generating_since__lte=now - timedelta(seconds=settings.DRAFT_TASK_TIME_LIMIT_S + GENERATING_STALE_MARGIN_S),
    )
    not_recently_enqueued = Q(message__work_enqueued_at__isnull=True) | Q(message__work_enqueued_at__lte=sweep_after)
    rows = (
        Draft.objects.filter(workspace_id=workspace_id, message__workspace_id=workspace_id)
        .annotate(generating_since=Coalesce("generation_started_at", "updated_at"))
        .filter(pending | generating)
        .filter(not_recently_enqueued)
        .order_by("created_at", "id")
        .values_list("id", "message_id", F("message__work_enqueue_count"), "updated_at")[:limit]
    )
    return list(rows)


def messages_awaiting_work(*, workspace_id: int, now: datetime, grace_s: float, limit: int = 500) -> list[int]:
    """Inbound messages of the workspace whose classify+draft work seems lost.

    No draft, and either not classified yet, or classified with a tag that gets a draft
    (the run died between classification and the draft's insert) for a lead that is not
    blacklisted and with no newer inbound message (which answers the lead instead; a newer
    machine reply does not count, so such a message is picked up once that reply is
    classified out-of-office or automated); and either never enqueued (and older than ``grace_s``, so the webhook's
    own on-commit enqueue is not raced) or enqueued longer than ``DRAFT_SWEEP_AFTER_S`` ago.
    """
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
