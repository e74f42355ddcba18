"""Time inside a workspace's business hours: what a speed-to-lead clock counts.

A lead who writes at 18:55 on a Friday to a team working 09:00-17:00 Monday to Friday has
waited 0 business seconds until Monday 09:00. Days are the workspace's local days, so a DST
change shortens or lengthens nothing but the night.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass


@dataclass(frozen=True)
class BusinessHours:
    zone: zoneinfo.ZoneInfo
    start: dt.time
    end: dt.time
    weekdays: frozenset[int]  # Monday = 0

    @classmethod
    def of(cls, workspace) -> BusinessHours:
        return cls(
            zone=workspace.tzinfo,
            start=workspace.business_hours_start,
            end=workspace.business_hours_end,
            weekdays=frozenset(workspace.business_weekdays),
        )

    def _day_window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
        if day.weekday() not in self.weekdays or self.start >= self.end:
            return None
        # Local wall times of that day, as UTC instants: Python subtracts and adds datetimes that
        # share a tzinfo on the wall clock, which is an hour off across a DST change.
        opens = dt.datetime.combine(day, self.start, tzinfo=self.zone).astimezone(dt.UTC)
        closes = dt.datetime.combine(day, self.end, tzinfo=self.zone).astimezone(dt.UTC)
        return opens, closes

    def seconds_between(self, start: dt.datetime, end: dt.datetime) -> float:
        """Business seconds in [start, end) (aware datetimes)."""
        if end <= start:
            return 0.0
        start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
        total = 0.0
        day = start.astimezone(self.zone).date()
        last = end.astimezone(self.zone).date()
        while day <= last:
            window = self._day_window(day)
            if window is not None:
                opens, closes = window
                overlap = (min(end, closes) - max(start, opens)).total_seconds()
                total += max(0.0, overlap)
            day += dt.timedelta(days=1)
        return total

    def add(self, start: dt.datetime, seconds: float) -> dt.datetime | None:
        """The instant when ``seconds`` business seconds have passed since ``start`` (None when
        the hours are empty)."""
        if not self.weekdays or self.start >= self.end:
            return None
        remaining = seconds
        start = start.astimezone(dt.UTC)
        day = start.astimezone(self.zone).date()
        for _ in range(370):
            window = self._day_window(day)
            if window is not None:
                opens, closes = window
                begin = max(start, opens)
                if begin < closes:
                    available = (closes - begin).total_seconds()
                    if remaining <= available:
                        return begin + dt.timedelta(seconds=remaining)
                    remaining -= available
            day += dt.timedelta(days=1)
        return None
