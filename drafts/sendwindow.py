"""Quiet hours for SMS: when a text may reach a lead.

US rule (TCPA): no marketing texts before 08:00 or after 21:00 in the recipient's local time;
the window is per workspace (``Workspace.sms_send_start`` / ``sms_send_end``: some states are
stricter). The lead's local time comes from, in order: the lead's own timezone; the zones
``phonenumbers`` knows for the number (all of them: a number whose area code spans several
zones may be texted only while it is inside the window in every one); the workspace's.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import phonenumbers
from phonenumbers import timezone as phone_timezone

from core.timeparse import safe_zoneinfo
from leads.models import Lead
from workspaces.models import Workspace

_LOOKAHEAD_DAYS = 3


def lead_time_zones(*, lead: Lead, workspace: Workspace) -> tuple[zoneinfo.ZoneInfo, ...]:
    own = safe_zoneinfo(lead.timezone) if lead.timezone else None
    if own is not None:
        return (own,)
    if lead.phone_e164:
        try:
            number = phonenumbers.parse(lead.phone_e164, None)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None:
            names = dict.fromkeys(phone_timezone.time_zones_for_number(number))
            zones = tuple(z for z in (safe_zoneinfo(name) for name in names if name != "Etc/Unknown") if z)
            if zones:
                return zones
    return (workspace.tzinfo,)


def in_send_window(at: dt.datetime, *, zones: tuple[zoneinfo.ZoneInfo, ...], start: dt.time, end: dt.time) -> bool:
    """Whether ``at`` (aware) falls inside [start, end) local time in every zone."""
    return all(start <= at.astimezone(zone).time().replace(tzinfo=None) < end for zone in zones)


def send_window_next_open(
    at: dt.datetime, *, zones: tuple[zoneinfo.ZoneInfo, ...], start: dt.time, end: dt.time
) -> dt.datetime | None:
    """``at`` when the window is open then, else the first instant after it when it opens (UTC).

    The window of several zones opens when the last of them reaches ``start``: the candidates
    are each zone's next ``start`` (computed on local dates, so a DST change moves it correctly).
    None when it never opens in the next days (an empty window: start >= end).
    """
    if in_send_window(at, zones=zones, start=start, end=end):
        return at
    candidates = []
    for zone in zones:
        local_day = at.astimezone(zone).date()
        for offset in range(_LOOKAHEAD_DAYS + 1):
            opening = dt.datetime.combine(local_day + dt.timedelta(days=offset), start, tzinfo=zone)
            if opening > at:
                candidates.append(opening.astimezone(dt.UTC))
    for candidate in sorted(candidates):
        if in_send_window(candidate, zones=zones, start=start, end=end):
            return candidate
    return None
