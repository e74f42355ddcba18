"""GHL client: URLs, headers, free-slots shapes, and requests checked against the official OpenAPI spec."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from core.http import ProviderAuthError, ProviderError, ProviderRateLimited
from ghl.client import (
    CALENDARS_API_VERSION,
    GhlClient,
    calendar_for_slug,
    calendar_id_from_page,
    parse_free_slots,
    parse_widget_url,
)

API = "http://ghl-api.test"
BACKEND = "http://ghl-backend.test"
TOKEN = "pit-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CAL_ID = "AbCdEfGhIj0123456789"
REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_IN_REPO = Path(__file__).resolve().parent / "specs" / "calendars.json"
SPEC_SHARED = REPO_ROOT.parent / "shared" / "vendor-specs" / "ghl" / "calendars.json"


@pytest.fixture(autouse=True)
def ghl_urls(settings):
    settings.GHL_API_BASE_URL = API
    settings.GHL_BACKEND_BASE_URL = BACKEND
    settings.GHL_REQUESTS_PER_10S = 1000
    settings.GHL_MAX_429_RETRIES = 2


def make_client(**kwargs) -> GhlClient:
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("location_id", "LOC123")
    return GhlClient(**kwargs)


START = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


# --- pure parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://api.leadconnectorhq.com/widget/booking/{CAL_ID}", ("id", CAL_ID)),
        (f"https://book.acme-roofing.com/widget/booking/{CAL_ID}?utm=x", ("id", CAL_ID)),
        ("https://link.acme.com/widget/bookings/acme-discovery-call", ("slug", "acme-discovery-call")),
        ("https://link.acme.com/widget/bookings/acme-call/?x=1", ("slug", "acme-call")),
        ("https://calendly.com/acme/30min", None),
        (f"https://x.com/widget/booking/{CAL_ID}extra", None),  # not 20 alphanumerics
    ],
)
def test_parse_widget_url_matches_the_path_on_any_host(url, expected):
    assert parse_widget_url(url) == expected


def test_free_slots_plain_string_shape_skips_non_date_keys():
    body = {
        "2026-12-01": {"slots": ["2026-12-01T10:00:00-05:00", "2026-12-01T11:00:00-05:00"]},
        "2026-12-02": {"slots": ["2026-12-02T09:30:00-05:00"]},
        "traceId": "abc-123",
    }
    assert parse_free_slots(body) == [
        dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 1, 16, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 2, 14, 30, tzinfo=dt.UTC),
    ]


def test_free_slots_object_shape():
    body = {
        "2026-12-01": {"slots": [{"startTime": "2026-12-01T10:00:00-05:00", "endTime": "2026-12-01T10:30:00-05:00"}]},
        "_dates_": {"slots": ["2026-12-09T10:00:00Z"]},
        "traceId": "t",
    }
    assert parse_free_slots(body) == [dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC)]


def test_free_slots_instants_epoch_numbers_aware_iso_only_and_junk_skipped():
    body = {
        "2026-12-01": {
            "slots": [
                1796137200000,  # epoch milliseconds (a JSON number)
                {"startTime": 1796140800},  # epoch seconds
                "2026-12-01T12:00:00",  # no offset: ambiguous, skipped
                "1796144400000",  # digits as text were never an epoch here
                1e300,  # junk numbers used to raise
                float("nan"),
                True,
                "2026-12-01T13:00:00+00:00",
            ]
        }
    }
    assert parse_free_slots(body) == [
        dt.datetime(2026, 12, 1, 13, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 1, 16, tzinfo=dt.UTC),
    ]


def test_calendar_for_slug_and_embedded_page_id():
    calendars = [{"id": "x" * 20, "slug": "other"}, {"id": CAL_ID, "slug": "s", "widgetSlug": "Acme-Call"}]
    assert calendar_for_slug(calendars, "acme-call")["id"] == CAL_ID
    assert calendar_for_slug(calendars, "missing") is None
    assert calendar_id_from_page(f'<script>window.__STATE__={{"calendarId":"{CAL_ID}"}}</script>') == CAL_ID
    assert calendar_id_from_page(f'<iframe src="/widget/booking/{CAL_ID}"></iframe>') == CAL_ID
    assert calendar_id_from_page("<html>nothing</html>") is None


# --- HTTP -------------------------------------------------------------------------


@responses.activate
def test_authenticated_free_slots_sends_bearer_version_and_epoch_ms():
    responses.get(
        f"{API}/calendars/{CAL_ID}/free-slots",
        json={"2026-12-01": {"slots": ["2026-12-01T10:00:00-05:00"]}, "traceId": "t"},
    )
    slots = make_client().calendar_free_slots(
        calendar_id=CAL_ID, start=START, end=START + dt.timedelta(days=14), timezone="America/New_York", deadline=5
    )
    assert slots == [dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC)]
    request = responses.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Version"] == CALENDARS_API_VERSION
    query = parse_qs(urlsplit(request.url).query)
    assert query["startDate"] == [str(int(START.timestamp() * 1000))]
    assert query["endDate"] == [str(int((START + dt.timedelta(days=14)).timestamp() * 1000))]
    assert query["timezone"] == ["America/New_York"]


@responses.activate
def test_public_free_slots_goes_to_the_backend_without_the_token():
    responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json={"traceId": "t"})
    make_client().calendar_free_slots(
        calendar_id=CAL_ID, start=START, end=START + dt.timedelta(days=3), timezone="UTC", public=True, deadline=5
    )
    request = responses.calls[0].request
    assert "Authorization" not in request.headers
    assert request.headers["Version"] == CALENDARS_API_VERSION


@responses.activate
def test_ranges_over_31_days_are_split():
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", json={})
    make_client().calendar_free_slots(
        calendar_id=CAL_ID, start=START, end=START + dt.timedelta(days=45), timezone="UTC", deadline=5
    )
    assert len(responses.calls) == 2
    for call in responses.calls:
        q = parse_qs(urlsplit(call.request.url).query)
        assert int(q["endDate"][0]) - int(q["startDate"][0]) <= 31 * 86400 * 1000


@responses.activate
def test_calendars_list_and_auth_error_is_typed_and_redacted():
    responses.get(f"{API}/calendars/", json={"calendars": [{"id": CAL_ID, "widgetSlug": "acme"}]})
    assert make_client().calendars_list(deadline=5) == [{"id": CAL_ID, "widgetSlug": "acme"}]
    assert parse_qs(urlsplit(responses.calls[0].request.url).query)["locationId"] == ["LOC123"]
    responses.replace(
        responses.GET, f"{API}/calendars/", status=401, json={"statusCode": 401, "message": f"bad {TOKEN}"}
    )
    with pytest.raises(ProviderAuthError) as info:
        make_client().calendars_list(deadline=5)
    assert TOKEN not in str(info.value)


@responses.activate
def test_429_is_retried_up_to_the_configured_limit():
    responses.get(f"{API}/calendars/", status=429, headers={"Retry-After": "0"}, json={"message": "slow down"})
    with pytest.raises(ProviderRateLimited):
        make_client().calendars_list(deadline=5)
    assert len(responses.calls) == 3  # GHL_MAX_429_RETRIES=2 retries after the first


@responses.activate
def test_the_per_location_request_limit_holds_back_the_call_over_it(settings):
    """``GHL_REQUESTS_PER_10S`` calls per location per 10 s: the next one is not sent within the window.

    Two calls per 10 s: the third call's slot is at least 5 s away (less only the time the
    first two took), so with a 1 s deadline it is refused before reaching GHL, whatever
    the machine's speed. Other clients of the same location share the limit; another
    location has its own; the public widget endpoints (unauthenticated) are not counted.
    """
    settings.GHL_REQUESTS_PER_10S = 2
    location = f"LOC-{uuid.uuid4().hex[:12]}"  # a location no other test has used in this process
    listing = responses.get(f"{API}/calendars/", json={"calendars": []})
    public = responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json={})
    client = make_client(location_id=location)
    client.calendars_list(deadline=5)
    client.calendars_list(deadline=5)

    with pytest.raises(ProviderError):
        client.calendars_list(deadline=1)
    with pytest.raises(ProviderError):
        make_client(location_id=location).calendars_list(deadline=1)
    assert listing.call_count == 2

    make_client(location_id=f"{location}-other").calendars_list(deadline=1)
    client.calendar_free_slots(
        calendar_id=CAL_ID, start=START, end=START + dt.timedelta(days=1), timezone="UTC", public=True, deadline=1
    )
    assert (listing.call_count, public.call_count) == (3, 1)


# --- OpenAPI conformance ----------------------------------------------------------


def _load_spec() -> dict:
    # The repo carries its own copy so this test never skips; it must match the shared vendor spec.
    spec = json.loads(SPEC_IN_REPO.read_text())
    if SPEC_SHARED.exists():
        assert json.loads(SPEC_SHARED.read_text()) == spec, "ghl/tests/specs/calendars.json is out of date"
    return spec


def _operation_for(spec: dict, method: str, path: str) -> dict:
    for template, operations in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not an operation of the GHL calendars spec")


def _check_against_spec(spec: dict, request, base: str) -> None:
    parts = urlsplit(request.url)
    path = parts.path[len(urlsplit(base).path) :] if urlsplit(base).path else parts.path
    operation = _operation_for(spec, request.method, path)
    query = parse_qs(parts.query)
    for param in operation.get("parameters", []):
        if param["in"] == "query":
            if param.get("required"):
                assert param["name"] in query, f"missing required query param {param['name']} for {path}"
            if param["name"] in query and param.get("schema", {}).get("type") == "number":
                float(query[param["name"]][0])  # numeric, e.g. epoch milliseconds
        if param["in"] == "header" and param.get("required"):
            assert param["name"] in request.headers, f"missing required header {param['name']}"
            allowed = param.get("schema", {}).get("enum")
            if allowed:
                assert request.headers[param["name"]] in allowed
    for name in query:
        known = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        assert name in known, f"query param {name} is not in the spec for {path}"
    if operation.get("security"):
        auth = request.headers.get("Authorization", "")
        if base == API:
            assert auth.startswith("Bearer ")


@responses.activate
def test_every_request_the_client_makes_matches_the_openapi_spec():
    spec = _load_spec()
    responses.get(f"{API}/calendars/", json={"calendars": []})
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", json={})
    responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json={})
    client = make_client()
    client.calendars_list(deadline=5)
    client.calendar_free_slots(calendar_id=CAL_ID, start=START, end=START + dt.timedelta(days=40), timezone="UTC")
    client.calendar_free_slots(
        calendar_id=CAL_ID, start=START, end=START + dt.timedelta(days=7), timezone="UTC", public=True
    )
    assert len(responses.calls) == 4
    for call in responses.calls:
        base = API if call.request.url.startswith(API) else BACKEND
        _check_against_spec(spec, call.request, base)


def test_spec_checker_rejects_a_request_without_required_params():
    spec = _load_spec()
    bad = type("R", (), {"url": f"{API}/calendars/{CAL_ID}/free-slots?timezone=UTC", "method": "GET", "headers": {}})
    with pytest.raises(AssertionError):
        _check_against_spec(spec, bad, API)
