"""Slot selection for drafts: business hours, spread across days, declined slots excluded (which
ones: drafts/tests/test_slot_offers.py), lead's timezone."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from availability.models import AvailabilitySnapshot
from availability.selectors import availability_summary, available_slots_for_lead
from leads.models import Lead

pytestmark = pytest.mark.django_db

NY = zoneinfo.ZoneInfo("America/New_York")


def next_monday(weeks_ahead: int = 1) -> dt.date:
    today = timezone.now().astimezone(NY).date()
    return today + dt.timedelta(days=(7 - today.weekday()) % 7 or 7) + dt.timedelta(weeks=weeks_ahead - 1)


def local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=NY)


def cache(workspace, starts: list[dt.datetime]) -> None:
    AvailabilitySnapshot.objects.update_or_create(
        workspace=workspace,
        defaults={
            "slots_utc": [s.astimezone(dt.UTC).isoformat() for s in starts],
            "fetched_at": timezone.now(),
            "stale_at": timezone.now() + dt.timedelta(hours=1),
        },
    )


def make_lead(workspace, **kwargs) -> Lead:
    kwargs.setdefault("first_name", "Pat")
    return Lead.objects.create(workspace=workspace, **kwargs)


def starts_of(result) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(item["start_utc"]) for item in result]


def test_only_business_hours_and_business_days(workspace):
    monday = next_monday()
    saturday = monday + dt.timedelta(days=5)
    cache(
        workspace,
        [
            local(monday, 7),  # before 09:00
            local(monday, 17),  # at closing time: not inside
            local(saturday, 11),  # weekend
            local(monday, 9),
            local(monday, 16, 30),
        ],
    )
    result = available_slots_for_lead(workspace=workspace, lead=None, count=5)
    assert starts_of(result) == [local(monday, 9), local(monday, 16, 30)]


def test_spread_across_days_before_doubling_up(workspace):
    monday = next_monday()
    tuesday, wednesday = monday + dt.timedelta(days=1), monday + dt.timedelta(days=2)
    cache(
        workspace,
        [local(monday, 9), local(monday, 10), local(monday, 11), local(tuesday, 13), local(wednesday, 15)],
    )
    result = available_slots_for_lead(workspace=workspace, lead=None, count=3)
    assert starts_of(result) == [local(monday, 9), local(tuesday, 13), local(wednesday, 15)]
    result = available_slots_for_lead(workspace=workspace, lead=None, count=4)
    assert starts_of(result) == [local(monday, 9), local(monday, 10), local(tuesday, 13), local(wednesday, 15)]


def test_labels_in_the_leads_timezone_else_the_workspaces(workspace):
    monday = next_monday()
    cache(workspace, [local(monday, 10)])
    lead = make_lead(workspace, timezone="America/Los_Angeles")
    [item] = available_slots_for_lead(workspace=workspace, lead=lead, count=1)
    assert item["timezone"] == "America/Los_Angeles"
    assert item["label"].endswith(("7:00 AM PST", "7:00 AM PDT"))
    assert item["start_utc"] == local(monday, 10).astimezone(dt.UTC).isoformat()
    [item] = available_slots_for_lead(workspace=workspace, lead=make_lead(workspace, timezone="Not/AZone"), count=1)
    assert item["timezone"] == "America/New_York"
    assert "10:00 AM" in item["label"]


@pytest.mark.parametrize("bad_tz", ["America", "../etc/passwd", "Not/AZone", ""])
def test_a_malformed_lead_timezone_falls_back_to_the_workspaces(workspace, bad_tz):
    # "America" is a directory of the tz database: ZoneInfo raises IsADirectoryError for it.
    monday = next_monday()
    cache(workspace, [local(monday, 10)])
    [item] = available_slots_for_lead(workspace=workspace, lead=make_lead(workspace, timezone=bad_tz), count=1)
    assert item["timezone"] == "America/New_York"
    assert "10:00 AM" in item["label"]


def test_junk_and_naive_cached_starts_are_ignored(workspace):
    monday = next_monday()
    cache(workspace, [local(monday, 9)])
    AvailabilitySnapshot.objects.filter(workspace=workspace).update(
        slots_utc=[
            "not a date",
            local(monday, 10).replace(tzinfo=None).isoformat(),  # naive: ambiguous
            "1893456000",  # digits are not an ISO instant
            7,
            local(monday, 9).astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        ]
    )
    assert starts_of(available_slots_for_lead(workspace=workspace, lead=None, count=3)) == [local(monday, 9)]


def test_past_and_too_soon_slots_are_skipped(workspace):
    monday = next_monday()
    soon = timezone.now() + dt.timedelta(minutes=20)
    cache(workspace, [timezone.now() - dt.timedelta(days=1), soon, local(monday, 9)])
    assert starts_of(available_slots_for_lead(workspace=workspace, lead=None, count=3)) == [local(monday, 9)]


def test_no_snapshot_or_zero_count(workspace, other_workspace):
    assert available_slots_for_lead(workspace=workspace, lead=None, count=3) == []
    cache(other_workspace, [local(next_monday(), 9)])
    assert available_slots_for_lead(workspace=workspace, lead=None, count=3) == []  # other tenant's slots
    assert available_slots_for_lead(workspace=other_workspace, lead=None, count=0) == []


def test_summary_reports_stale_and_count(workspace):
    assert availability_summary(workspace=workspace)["slots"] == 0
    cache(workspace, [local(next_monday(), 9)])
    summary = availability_summary(workspace=workspace)
    assert summary["slots"] == 1 and summary["stale"] is False


def test_a_lead_of_another_workspace_is_refused(workspace, other_workspace):
    cache(workspace, [local(next_monday(), 10)])
    foreign = make_lead(other_workspace, timezone="Europe/London")
    with pytest.raises(ValueError, match="does not belong"):
        available_slots_for_lead(workspace=workspace, lead=foreign, count=1)
