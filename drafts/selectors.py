"""Reads of the drafts app."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from availability.selectors import available_slots_for_lead, parse_slot_start
from drafts.models import Draft, DraftStatus
from leads.models import Lead
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
    declined = lead_offered_slot_starts(workspace=workspace, lead=lead)
    return available_slots_for_lead(workspace=workspace, lead=lead, count=count, declined=declined)


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
