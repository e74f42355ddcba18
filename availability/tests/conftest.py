from __future__ import annotations

import datetime as dt

import pytest

API = "http://ghl-api.test"
BACKEND = "http://ghl-backend.test"
CALENDLY = "http://calendly.test"
CAL_ID = "AbCdEfGhIj0123456789"
CAL_ID_2 = "ZyXwVuTsRq9876543210"


@pytest.fixture(autouse=True)
def provider_urls(settings):
    settings.GHL_API_BASE_URL = API
    settings.GHL_BACKEND_BASE_URL = BACKEND
    settings.CALENDLY_API_BASE_URL = CALENDLY
    settings.GHL_REQUESTS_PER_10S = 1000
    settings.AVAILABILITY_FETCH_TIMEOUT_S = 2.0
    settings.AVAILABILITY_WORKSPACE_DEADLINE_S = 5.0
    settings.AVAILABILITY_DAYS_AHEAD = 14
    settings.AVAILABILITY_STALE_AFTER_MINUTES = 60
    settings.AVAILABILITY_REFRESH_MINUTES = 10


def future_slot_strings(days: int = 3, tz_offset: str = "-05:00") -> dict:
    """A free-slots answer (plain string shape) with 10:00 and 14:00 local on the next ``days`` days."""
    today = dt.datetime.now(dt.UTC).date()
    body: dict = {"traceId": "trace-1"}
    for n in range(1, days + 1):
        day = today + dt.timedelta(days=n)
        body[day.isoformat()] = {
            "slots": [f"{day.isoformat()}T10:00:00{tz_offset}", f"{day.isoformat()}T14:00:00{tz_offset}"]
        }
    return body
