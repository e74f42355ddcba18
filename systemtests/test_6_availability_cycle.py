"""Scenario 6: the availability beat cycle with hanging and failing providers.

Seven workspaces on the fake GHL and Calendly: three healthy (a GHL widget URL, a GHL calendar
id through the API, a Calendly event type), one whose widget hangs with a calendar id to fall
back on, one whose booking page hangs with nothing to fall back on, one GHL calendar and one
Calendly event type answering 500. Beat (every minute here) fans the refreshes out to the
availability worker. Every refresh must stay within the workspace deadline (8 s here), every
failure must be surfaced as an integration error, and the fallback must be used.
"""

from __future__ import annotations

import time

from support import report, sensitive, sql

DEADLINE_S = 8.0  # AVAILABILITY_WORKSPACE_DEADLINE_S of the system (support.app_env)
CAL_OK = ("AvCalendarOk00000001", "AvCalendarOk00000002", "AvCalendarOk00000003")
CAL_HANG, CAL_500 = "AvCalendarHang000001", "AvCalendar5000000001"


def test_availability_cycle_is_bounded_surfaces_errors_and_falls_back(system):
    ghl, calendly = system.fakes.ghl, system.fakes.calendly
    for calendar_id in CAL_OK:
        ghl.add_calendar(calendar_id)
    ghl.add_calendar(CAL_HANG, behaviour="hang")
    ghl.add_calendar(CAL_500, behaviour="500")
    ghl.pages["av-stuck-page"] = ("hang", CAL_OK[0])
    token = sensitive("pit-availability-0000-secret-token")
    calendly_token = sensitive("calendly-availability-secret-token")
    widget = f"{ghl.base_url}/widget/booking/"
    plans = {
        "av-widget": {"ghl_booking_url": widget + CAL_OK[0]},
        "av-api": {"ghl_calendar_id": CAL_OK[1], "ghl_token": token, "ghl_location_id": "LOCAVAPI000000000001"},
        "av-calendly": {
            "booking_provider": "calendly",
            "calendly_token": calendly_token,
            "calendly_event_type_uri": calendly.add_event_type("av-intro"),
        },
        "av-hang-fallback": {
            "ghl_booking_url": widget + CAL_HANG,
            "ghl_calendar_id": CAL_OK[2],
            "ghl_token": token,
            "ghl_location_id": "LOCAVFALLBACK0000001",
        },
        "av-hang-alone": {"ghl_booking_url": f"{ghl.base_url}/widget/bookings/av-stuck-page"},
        "av-ghl-500": {"ghl_calendar_id": CAL_500, "ghl_token": token, "ghl_location_id": "LOCAV500000000000001"},
        "av-calendly-500": {
            "booking_provider": "calendly",
            "calendly_token": calendly_token,
            "calendly_event_type_uri": calendly.add_event_type("av-broken", behaviour="500"),
        },
    }
    for slug, fields in plans.items():
        system.workspace(slug, **{"booking_provider": "ghl", **fields})
    slugs = list(plans)

    def snapshots() -> dict[str, tuple]:
        rows = sql(
            """SELECT w.slug, s.fetched_at IS NOT NULL, jsonb_array_length(s.slots_utc::jsonb), s.fallback_used,
                      s.last_duration_ms, s.last_error
               FROM availability_availabilitysnapshot s JOIN workspaces_workspace w ON w.id = s.workspace_id
               WHERE w.slug = ANY(%s) AND s.last_attempt_at IS NOT NULL""",
            (slugs,),
        )
        return {row[0]: row[1:] for row in rows}

    started = time.monotonic()
    deadline = started + 180  # beat's next minute, then the cycle
    while time.monotonic() < deadline and len(found := snapshots()) < len(slugs):
        time.sleep(2)
    waited = time.monotonic() - started
    errors = {
        slug: sorted(codes)
        for slug, codes in sql(
            """SELECT w.slug, array_agg(e.code) FROM workspaces_integrationerror e
               JOIN workspaces_workspace w ON w.id = e.workspace_id
               WHERE w.slug = ANY(%s) AND e.source = 'availability' AND e.resolved_at IS NULL GROUP BY 1""",
            (slugs,),
        )
    }
    durations = {slug: row[3] for slug, row in found.items()}
    report(
        "6 availability beat cycle",
        workspaces=f"{len(found)}/{len(slugs)} refreshed in {waited:.0f}s of waiting",
        longest_refresh_ms=max(durations.values() or [0]),
        deadline_ms=int(DEADLINE_S * 1000),
        fresh=sorted(s for s, row in found.items() if row[0] and row[1]),
        fallbacks={s: row[2] for s, row in found.items() if row[2]},
        errors=errors,
    )
    assert len(found) == len(slugs)
    assert max(durations.values()) <= DEADLINE_S * 1000 * 1.2
    fresh = {s for s, row in found.items() if row[0] and row[1]}
    assert {"av-widget", "av-api", "av-calendly", "av-hang-fallback"} <= fresh
    assert found["av-hang-fallback"][2] == "calendar_config"
    assert {"av-hang-fallback", "av-hang-alone", "av-ghl-500", "av-calendly-500"} <= set(errors)
    assert not {"av-widget", "av-api", "av-calendly"} & set(errors)
