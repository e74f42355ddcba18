"""Reads of cached availability. Drafts call these; they never fetch live calendars."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import OrderedDict
from collections.abc import Callable, Collection

from django.db.models import Q
from django.utils import timezone

from availability.models import AvailabilitySnapshot
from core.timeparse import parse_instant, safe_zoneinfo
from leads.models import Lead
from workspaces.models import Workspace

# A slot must start at least this far ahead to be worth offering in a reply.
MIN_NOTICE = dt.timedelta(hours=1)


def available_slots_for_lead(
    *,
    workspace: Workspace,
    lead: Lead | None,
    count: int,
    declined: Callable[[], Collection[dt.datetime]] | None = None,
) -> list[dict]:
    """Up to ``count`` future slots from the cached snapshot, for a draft to offer.

    Each item: ``{"start_utc": iso8601, "label": "Tue Dec 1, 10:00 AM EST", "timezone": tz}``,
    formatted in the lead's timezone when known, else the workspace's. Slots are
    within the workspace's business hours and days, still free in the latest
    snapshot, not ``declined()`` (the starts already offered to this lead: drafts knows them,
    ``drafts.selectors.slots_to_offer``; asked only when the snapshot has slots), and spread
    across days. Every read is scoped to ``workspace``; a lead of another workspace is
    refused (ValueError).
    """
    if lead is not None and lead.workspace_id != workspace.pk:
        # Never mix tenants: this lead's offers and timezone belong to another workspace.
        raise ValueError(f"lead {lead.pk} does not belong to workspace {workspace.pk}")
    if count <= 0:
        return []
    snapshot = AvailabilitySnapshot.objects.filter(workspace=workspace).only("slots_utc").first()
    if snapshot is None or not snapshot.slots_utc:
        return []
    declined_starts = declined() if declined is not None else ()
    earliest = timezone.now() + MIN_NOTICE
    candidates = sorted(
        start
        for start in (parse_slot_start(raw) for raw in snapshot.slots_utc)
        if start is not None
        and start >= earliest
        and start not in declined_starts
        and _in_business_hours(workspace, start)
    )
    chosen = _spread_across_days(candidates, count=count, tz=workspace.tzinfo)
    tz = _display_tz(workspace=workspace, lead=lead)
    return [{"start_utc": start.isoformat(), "label": format_slot(start, tz), "timezone": str(tz)} for start in chosen]


def format_slot(start: dt.datetime, tz: zoneinfo.ZoneInfo) -> str:
    return start.astimezone(tz).strftime("%a %b %-d, %-I:%M %p %Z")


def availability_due_workspace_ids(*, now: dt.datetime | None = None, slack: dt.timedelta | None = None) -> list[int]:
    """Active workspaces with a booking provider whose refresh is due.

    Due: no snapshot yet, or ``next_attempt_at`` unset/reached, and neither a
    refresh running (lease) nor a refresh task still waiting in the queue.
    """
    now = now or timezone.now()
    slack = slack if slack is not None else dt.timedelta(seconds=30)
    return list(
        Workspace.objects.filter(is_active=True)
        .exclude(booking_provider="")
        .filter(
            Q(availability__isnull=True)
            | (
                (Q(availability__next_attempt_at__isnull=True) | Q(availability__next_attempt_at__lte=now + slack))
                & (Q(availability__refresh_lease_until__isnull=True) | Q(availability__refresh_lease_until__lt=now))
                & (Q(availability__refresh_queued_until__isnull=True) | Q(availability__refresh_queued_until__lt=now))
            )
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def availability_summary(*, workspace: Workspace) -> dict:
    """The workspace's availability state for reports: provider, slots, fetched_at, stale, last_error."""
    snapshot = AvailabilitySnapshot.objects.filter(workspace=workspace).first()
    if snapshot is None:
        return {"provider": None, "slots": 0, "fetched_at": None, "stale": True, "last_error": None}
    return {
        "provider": snapshot.provider or None,
        "slots": snapshot.slot_count,
        "fetched_at": snapshot.fetched_at.isoformat() if snapshot.fetched_at else None,
        "stale": snapshot.is_stale,
        "last_error": snapshot.last_error or None,
        "fallback_used": snapshot.fallback_used or None,
    }


def _in_business_hours(workspace: Workspace, start: dt.datetime) -> bool:
    local = start.astimezone(workspace.tzinfo)
    if local.weekday() not in workspace.business_weekdays:
        return False
    opens, closes = _as_time(workspace.business_hours_start), _as_time(workspace.business_hours_end)
    return opens <= local.time().replace(tzinfo=None) < closes


def _spread_across_days(candidates: list[dt.datetime], *, count: int, tz: zoneinfo.ZoneInfo) -> list[dt.datetime]:
    """Round-robin over days (earliest days first): day 1's first slot, day 2's first, ... then seconds."""
    by_day: OrderedDict[dt.date, list[dt.datetime]] = OrderedDict()
    for start in candidates:
        by_day.setdefault(start.astimezone(tz).date(), []).append(start)
    chosen: list[dt.datetime] = []
    round_no = 0
    while len(chosen) < count and any(len(day) > round_no for day in by_day.values()):
        for day in by_day.values():
            if len(day) > round_no:
                chosen.append(day[round_no])
                if len(chosen) >= count:
                    break
        round_no += 1
    return sorted(chosen)


def _display_tz(*, workspace: Workspace, lead: Lead | None) -> zoneinfo.ZoneInfo:
    """The lead's timezone when it names a real zone (junk like "America" is ignored), else the workspace's."""
    lead_tz = safe_zoneinfo(lead.timezone) if lead is not None else None
    return lead_tz or workspace.tzinfo


def parse_slot_start(raw: object) -> dt.datetime | None:
    """A stored slot start: aware ISO 8601 text only (no epochs, no naive times)."""
    return parse_instant(raw, allow_epoch=False) if isinstance(raw, str) else None


def _as_time(value: dt.time | str) -> dt.time:
    return value if isinstance(value, dt.time) else dt.time.fromisoformat(str(value))
