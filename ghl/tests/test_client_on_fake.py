"""The GHL client against the repository's fake GHL, which checks request shapes against the
vendor specs (Version headers, locationId, the free-slots range, the send body): a shape the
real API would refuse fails here."""

from __future__ import annotations

import datetime as dt

from core.testing.fake_ghl import fake_ghl_server
from ghl.client import GhlClient

CAL = "CalendarBBBBBBBBBBB2"


def test_calendars_free_slots_and_send_pass_the_fakes_spec_checks(settings):
    start = dt.datetime(2030, 3, 4, tzinfo=dt.UTC)
    with fake_ghl_server(location_id="LOCSPEC") as fake:
        settings.GHL_API_BASE_URL = fake.base_url
        settings.GHL_BACKEND_BASE_URL = fake.backend_base_url
        fake.add_calendar(CAL, slug="roof")
        with GhlClient(token="pit-spec", location_id="LOCSPEC") as client:
            calendars = client.calendars_list(deadline=10)
            # 40 days: the client splits the range (the fake refuses more than 31 days at once).
            slots = client.calendar_free_slots(
                calendar_id=CAL, start=start, end=start + dt.timedelta(days=40), timezone="UTC", deadline=10
            )
            public = client.calendar_free_slots(
                calendar_id=CAL, start=start, end=start + dt.timedelta(days=1), timezone="UTC", public=True, deadline=10
            )
            answer = client.message_send(contact_id="contact1", message="Tuesday at 10?", deadline=10)
    assert [c["id"] for c in calendars] == [CAL]
    assert len(slots) == 2 * 40 and slots[0] == start.replace(hour=15)
    assert len(public) == 2
    assert answer["messageId"] and fake.sends[0]["message"] == "Tuesday at 10?"
    assert {r.status for r in fake.requests} <= {200, 201}
    widget = [r for r in fake.requests if r.path.startswith("/backend/")]
    assert widget and all("Authorization" not in r.headers for r in widget)  # the token never goes to the widget
