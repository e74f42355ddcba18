"""Reads of cached availability. Drafts call these; they never fetch live calendars."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.utils import timezone

from availability.models import AvailabilitySnapshot
from leads.models import Lead
from workspaces.models import Workspace


def available_slots_for_lead(*, workspace: Workspace, lead: Lead | None, count: int) -> list[dict]:
    """Up to ``count`` future slots from the cached snapshot, for a draft to offer.

    Each item: ``{"start_utc": iso8601, "label": "Tue Dec 1, 10:00 AM EST", "timezone": tz}``,
    formatted in the lead's timezone when known, else the workspace's.
    """
    snapshot = AvailabilitySnapshot.objects.filter(workspace=workspace).first()
    if snapshot is None or count <= 0:
        return []
    tz = _display_tz(workspace=workspace, lead=lead)
    now = timezone.now()
    result = []
    for raw in snapshot.slots_utc:
        start = dt.datetime.fromisoformat(raw)
        if start <= now:
            continue
        local = start.astimezone(tz)
        result.append(
            {"start_utc": start.isoformat(), "label": local.strftime("%a %b %-d, %-I:%M %p %Z"), "timezone": str(tz)}
        )
        if len(result) >= count:
            break
    return result


def _display_tz(*, workspace: Workspace, lead: Lead | None) -> zoneinfo.ZoneInfo:
    if lead is not None and lead.timezone:
        try:
            return zoneinfo.ZoneInfo(lead.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return workspace.tzinfo
