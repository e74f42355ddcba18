"""Availability refresh: providers, fallback chain, last-good slots, errors surfaced and resolved."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.core.management import CommandError, call_command
from django.utils import timezone

from availability.models import AvailabilitySnapshot
from availability.services import Status, availability_refresh
from availability.tests.conftest import API, BACKEND, CAL_ID, CAL_ID_2, CALENDLY, future_slot_strings
from workspaces.models import IntegrationError
from workspaces.services import workspace_configure

pytestmark = pytest.mark.django_db

GHL_TOKEN = "pit-11111111-2222-3333-4444-555555555555"
CALENDLY_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0LXVzZXIifQ.c2lnbmF0dXJlLXRlc3Q"


def configure(slug="acme", **changes):
    ws, _ = workspace_configure(slug=slug, changes=changes)
    return ws


def calendly_workspace(booking_url: str):
    return configure(booking_provider="calendly", calendly_token=CALENDLY_TOKEN, calendly_booking_url=booking_url)


def open_errors(ws):
    return {e.code: e for e in IntegrationError.objects.filter(workspace=ws, source="availability", resolved_at=None)}


def snapshot(ws) -> AvailabilitySnapshot:
    return AvailabilitySnapshot.objects.get(workspace=ws)


# --- GHL booking URL paths --------------------------------------------------------


@responses.activate
def test_widget_url_with_id_fetches_public_free_slots(workspace):
    ws = configure(booking_provider="ghl", ghl_booking_url=f"https://book.acme.com/widget/booking/{CAL_ID}")
    responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=3))

    outcome = availability_refresh(workspace=ws)

    assert outcome.status == Status.FRESH
    snap = snapshot(ws)
    assert len(snap.slots_utc) == 6
    assert snap.provider == "ghl"
    assert snap.fallback_used == ""
    assert snap.resolved_ids["ghl"]["booking_calendar_id"] == CAL_ID
    assert not snap.is_stale
    assert "Authorization" not in responses.calls[0].request.headers
    query = parse_qs(urlsplit(responses.calls[0].request.url).query)
    assert query["timezone"] == ["America/New_York"]
    end_minus_start = int(query["endDate"][0]) - int(query["startDate"][0])
    assert end_minus_start == 14 * 86400 * 1000


@responses.activate
def test_widget_url_with_slug_resolves_via_calendars_list_and_caches_it(workspace):
    ws = configure(booking_provider="ghl", ghl_booking_url="https://link.acme.com/widget/bookings/acme-discovery")
    calendars = responses.get(
        f"{API}/calendars/",
        json={"calendars": [{"id": CAL_ID_2, "slug": "other"}, {"id": CAL_ID, "widgetSlug": "acme-discovery"}]},
    )
    slots = responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=2))

    assert availability_refresh(workspace=ws).status == Status.FRESH
    assert snapshot(ws).resolved_ids["ghl"] == {
        "booking_url": ws.ghl_booking_url,
        "booking_calendar_id": CAL_ID,
        "resolved_via": "calendars_api",
    }
    assert calendars.call_count == 1
    assert calendars.calls[0].request.headers["Authorization"] == f"Bearer {GHL_TOKEN}"

    assert availability_refresh(workspace=ws, force=True).status == Status.FRESH
    assert calendars.call_count == 1  # the cached resolution skipped the calendars list
    assert slots.call_count == 2


@responses.activate
def test_widget_url_with_slug_falls_back_to_the_pages_embedded_data(db):
    ws = configure(booking_provider="ghl", ghl_booking_url="https://link.acme.com/widget/bookings/acme-call")
    page = responses.get(
        "https://link.acme.com/widget/bookings/acme-call",
        body=f'<html><script>window.__BOOKING__={{"calendarId":"{CAL_ID}","name":"x"}}</script></html>',
        content_type="text/html",
    )
    responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=1))

    assert availability_refresh(workspace=ws).status == Status.FRESH
    assert page.call_count == 1
    assert snapshot(ws).resolved_ids["ghl"]["resolved_via"] == "page"


@responses.activate
def test_calendar_id_hint_skips_the_page(db):
    ws = configure(
        booking_provider="ghl",
        ghl_booking_url="https://link.acme.com/widget/bookings/acme-call",
        ghl_calendar_id=CAL_ID,
    )
    page = responses.get("https://link.acme.com/widget/bookings/acme-call", body="<html></html>")
    responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=1))

    assert availability_refresh(workspace=ws).status == Status.FRESH
    assert page.call_count == 0
    assert snapshot(ws).resolved_ids["ghl"]["resolved_via"] == "calendar_id_hint"


@responses.activate
def test_free_slots_object_shape_is_accepted(workspace):
    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    day = (timezone.now() + dt.timedelta(days=2)).date().isoformat()
    responses.get(
        f"{API}/calendars/{CAL_ID}/free-slots",
        json={
            day: {"slots": [{"startTime": f"{day}T10:00:00-05:00", "endTime": f"{day}T10:30:00-05:00"}]},
            "traceId": "t",
        },
    )
    assert availability_refresh(workspace=ws).status == Status.FRESH
    assert snapshot(ws).slots_utc == [f"{day}T15:00:00+00:00"]
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {GHL_TOKEN}"


# --- Calendly -----------------------------------------------------------------------


@responses.activate
def test_calendly_link_is_resolved_via_users_me_and_event_types(db):
    ws = calendly_workspace("https://calendly.com/acme-sales/discovery/")
    user_uri = f"{CALENDLY}/users/U1"
    event_uri = f"{CALENDLY}/event_types/ET2"
    me = responses.get(f"{CALENDLY}/users/me", json={"resource": {"uri": user_uri, "timezone": "America/Chicago"}})
    types = responses.get(
        f"{CALENDLY}/event_types",
        json={
            "collection": [
                {
                    "uri": f"{CALENDLY}/event_types/ET1",
                    "slug": "intro",
                    "scheduling_url": "https://calendly.com/acme-sales/intro",
                },
                {"uri": event_uri, "slug": "discovery", "scheduling_url": "https://calendly.com/acme-sales/discovery"},
            ],
            "pagination": {"next_page": None},
        },
    )
    start = (timezone.now() + dt.timedelta(days=1)).replace(hour=15, minute=0, second=0, microsecond=0)
    times = responses.get(
        f"{CALENDLY}/event_type_available_times",
        json={
            "collection": [
                {
                    "status": "available",
                    "start_time": start.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                    "invitees_remaining": 1,
                },
                {
                    "status": "available",
                    "start_time": (start + dt.timedelta(hours=1)).isoformat(),
                    "invitees_remaining": 0,
                },
            ]
        },
    )

    assert availability_refresh(workspace=ws).status == Status.FRESH
    snap = snapshot(ws)
    assert snap.resolved_ids["calendly"]["event_type_uri"] == event_uri
    assert snap.resolved_ids["calendly"]["user_uri"] == user_uri
    assert snap.resolved_ids["calendly"]["timezone"] == "America/Chicago"
    assert snap.slots_utc == [start.isoformat()]  # the fully booked one is skipped
    assert parse_qs(urlsplit(types.calls[0].request.url).query)["user"] == [user_uri]
    # 14 days ahead in windows of at most 7 days, none starting in the past.
    assert times.call_count == 2
    for call in times.calls:
        q = parse_qs(urlsplit(call.request.url).query)
        assert q["event_type"] == [event_uri]
        begin = dt.datetime.fromisoformat(q["start_time"][0].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(q["end_time"][0].replace("Z", "+00:00"))
        assert begin > timezone.now() - dt.timedelta(seconds=5)
        assert end - begin <= dt.timedelta(days=7)
        assert call.request.headers["Authorization"] == f"Bearer {CALENDLY_TOKEN}"

    assert availability_refresh(workspace=ws, force=True).status == Status.FRESH
    assert me.call_count == 1 and types.call_count == 1  # cached


@responses.activate
def test_calendly_event_types_are_read_across_pages(db):
    ws = calendly_workspace("https://calendly.com/acme-sales/discovery")
    user_uri = f"{CALENDLY}/users/U1"
    event_uri = f"{CALENDLY}/event_types/ET9"
    responses.get(f"{CALENDLY}/users/me", json={"resource": {"uri": user_uri}})
    second_page = f"{CALENDLY}/event_types?user={user_uri}&count=100&page_token=P2"
    first = responses.get(
        f"{CALENDLY}/event_types",
        match=[responses.matchers.query_param_matcher({"user": user_uri, "count": "100"})],
        json={
            "collection": [{"uri": f"{CALENDLY}/event_types/ET1", "slug": "intro"}],
            "pagination": {"next_page": second_page},
        },
    )
    second = responses.get(
        f"{CALENDLY}/event_types",
        match=[responses.matchers.query_param_matcher({"user": user_uri, "count": "100", "page_token": "P2"})],
        json={
            "collection": [{"uri": event_uri, "slug": "discovery"}],
            "pagination": {"next_page": None},
        },
    )
    times = responses.get(f"{CALENDLY}/event_type_available_times", json={"collection": []})

    assert availability_refresh(workspace=ws).status == Status.FRESH
    assert (first.call_count, second.call_count) == (1, 1)
    assert snapshot(ws).resolved_ids["calendly"]["event_type_uri"] == event_uri  # found on the second page
    assert parse_qs(urlsplit(times.calls[0].request.url).query)["event_type"] == [event_uri]


@responses.activate
def test_calendly_pagination_stops_after_its_page_limit(db):
    from availability.providers.calendly import EVENT_TYPES_MAX_PAGES

    ws = calendly_workspace("https://calendly.com/acme-sales/discovery")
    responses.get(f"{CALENDLY}/users/me", json={"resource": {"uri": f"{CALENDLY}/users/U1"}})
    endless = responses.get(
        f"{CALENDLY}/event_types",
        json={"collection": [], "pagination": {"next_page": f"{CALENDLY}/event_types?page_token=again"}},
    )
    availability_refresh(workspace=ws)
    assert endless.call_count == EVENT_TYPES_MAX_PAGES
    assert set(open_errors(ws)) == {"calendar_not_found"}


@responses.activate
def test_a_cached_calendar_that_404s_is_resolved_again_on_the_next_refresh(workspace):
    ws = configure(booking_provider="ghl", ghl_booking_url="https://link.acme.com/widget/bookings/acme-discovery")
    responses.get(f"{API}/calendars/", json={"calendars": [{"id": CAL_ID, "widgetSlug": "acme-discovery"}]})
    responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=2))
    assert availability_refresh(workspace=ws).status == Status.FRESH
    assert snapshot(ws).resolved_ids["ghl"]["booking_calendar_id"] == CAL_ID

    # The calendar behind the slug is replaced: the cached id now answers 404.
    responses.replace(responses.GET, f"{BACKEND}/calendars/{CAL_ID}/free-slots", status=404, json={})
    responses.replace(
        responses.GET, f"{API}/calendars/", json={"calendars": [{"id": CAL_ID_2, "widgetSlug": "acme-discovery"}]}
    )
    new = responses.get(f"{BACKEND}/calendars/{CAL_ID_2}/free-slots", json=future_slot_strings(days=2))
    availability_refresh(workspace=ws, force=True)
    assert set(open_errors(ws)) == {"calendar_not_found"}
    assert "ghl" not in snapshot(ws).resolved_ids  # the cached resolution is dropped

    assert availability_refresh(workspace=ws, force=True).status == Status.FRESH
    assert snapshot(ws).resolved_ids["ghl"]["booking_calendar_id"] == CAL_ID_2
    assert new.call_count == 1
    assert sum(urlsplit(c.request.url).path == "/calendars/" for c in responses.calls) == 2  # resolved twice
    assert open_errors(ws) == {}


# --- Fallbacks, stale, errors -----------------------------------------------------


@responses.activate
def test_booking_url_timeout_falls_back_to_the_calendar_config(workspace):
    ws = configure(
        booking_provider="ghl",
        ghl_booking_url=f"https://book.acme.com/widget/booking/{CAL_ID}",
        ghl_calendar_id=CAL_ID_2,
    )
    responses.get(f"{BACKEND}/calendars/{CAL_ID}/free-slots", body=requests.exceptions.ReadTimeout("hung"))
    responses.get(f"{API}/calendars/{CAL_ID_2}/free-slots", json=future_slot_strings(days=2))

    outcome = availability_refresh(workspace=ws)

    assert outcome.status == Status.FRESH
    assert outcome.fallback_used == "calendar_config"
    snap = snapshot(ws)
    assert snap.fallback_used == "calendar_config"
    assert "timeout" in snap.fallback_reason
    assert len(snap.slots_utc) == 4
    errors = open_errors(ws)
    assert set(errors) == {"booking_page_timeout"}
    assert errors["booking_page_timeout"].context["path"] == "booking_url"


@responses.activate
def test_last_good_slots_are_kept_and_marked_stale(workspace, settings):
    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=3))
    assert availability_refresh(workspace=ws).status == Status.FRESH
    good = list(snapshot(ws).slots_utc)

    responses.replace(responses.GET, f"{API}/calendars/{CAL_ID}/free-slots", status=500, json={"message": "boom"})
    outcome = availability_refresh(workspace=ws, force=True)

    assert outcome.status == Status.FAILED
    snap = snapshot(ws)
    assert snap.slots_utc == good
    assert snap.fallback_used == "last_good_slots"
    assert snap.consecutive_failures == 1
    assert snap.next_attempt_at > timezone.now() + dt.timedelta(minutes=9)
    assert "500" in snap.last_error
    assert not snap.is_stale  # still within stale_at
    # Once past stale_at the kept slots are reported stale (and still there).
    AvailabilitySnapshot.objects.filter(pk=snap.pk).update(stale_at=timezone.now() - dt.timedelta(seconds=1))
    snap.refresh_from_db()
    assert snap.is_stale and snap.slots_utc == good
    assert set(open_errors(ws)) == {"provider_error"}


@responses.activate
def test_last_good_slots_survive_junk_entries_when_every_path_fails(workspace):
    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    good = (timezone.now() + dt.timedelta(days=2)).astimezone(dt.UTC).isoformat()
    past = (timezone.now() - dt.timedelta(days=1)).astimezone(dt.UTC).isoformat()
    AvailabilitySnapshot.objects.create(
        workspace=ws, slots_utc=["garbage", "2030-01-01T10:00:00", past, good], stale_at=timezone.now()
    )
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", status=500, json={})

    assert availability_refresh(workspace=ws).status == Status.FAILED
    snap = snapshot(ws)
    assert snap.slots_utc == [good]
    assert snap.fallback_used == "last_good_slots"


def test_calendly_start_times_are_aware_iso_only():
    from availability.providers.calendly import _parse_start

    assert _parse_start("2026-12-01T15:00:00.000000Z") == dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC)
    assert _parse_start("2026-12-01T10:00:00-05:00") == dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC)
    for junk in ("2026-12-01T15:00:00", "1764601200", 1764601200, None, "", "soon"):
        assert _parse_start(junk) is None


@responses.activate
def test_repeated_failures_back_off_and_are_not_due(workspace):
    from availability.selectors import availability_due_workspace_ids

    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", status=503, json={})
    availability_refresh(workspace=ws)
    first = snapshot(ws).next_attempt_at
    assert ws.pk not in availability_due_workspace_ids()
    assert availability_refresh(workspace=ws).status == Status.NOT_DUE
    availability_refresh(workspace=ws, force=True)
    snap = snapshot(ws)
    assert snap.consecutive_failures == 2
    assert snap.next_attempt_at - timezone.now() > first - timezone.now() + dt.timedelta(minutes=9)
    assert ws.pk in availability_due_workspace_ids(now=snap.next_attempt_at + dt.timedelta(seconds=1))
    assert open_errors(ws)["provider_error"].count == 2


@responses.activate
def test_error_is_surfaced_then_resolved_on_next_success(workspace):
    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", status=401, json={"message": f"Invalid JWT {GHL_TOKEN}"})
    availability_refresh(workspace=ws)
    error = open_errors(ws)["auth_failed"]
    assert GHL_TOKEN not in error.message
    assert GHL_TOKEN not in snapshot(ws).last_error

    responses.replace(responses.GET, f"{API}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=1))
    assert availability_refresh(workspace=ws, force=True).status == Status.FRESH
    error.refresh_from_db()
    assert error.resolved_at is not None
    assert open_errors(ws) == {}
    assert snapshot(ws).last_error == ""
    assert snapshot(ws).consecutive_failures == 0


@responses.activate
@pytest.mark.parametrize(("status", "code"), [(404, "calendar_not_found"), (429, "rate_limited"), (403, "auth_failed")])
def test_error_codes(workspace, status, code):
    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", status=status, json={}, headers={"Retry-After": "60"})
    availability_refresh(workspace=ws)
    assert set(open_errors(ws)) == {code}


@responses.activate
def test_unresolvable_slug_is_calendar_not_found(db):
    ws = configure(booking_provider="ghl", ghl_booking_url="https://link.acme.com/widget/bookings/nope")
    responses.get("https://link.acme.com/widget/bookings/nope", body="<html>no ids here</html>")
    availability_refresh(workspace=ws)
    assert set(open_errors(ws)) == {"calendar_not_found"}


def test_workspace_without_booking_config_is_not_configured(workspace):
    ws = configure(booking_provider="ghl")
    outcome = availability_refresh(workspace=ws)
    assert outcome.status == Status.NOT_CONFIGURED
    assert set(open_errors(ws)) == {"not_configured"}


def test_a_running_refresh_is_never_doubled(workspace):
    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    AvailabilitySnapshot.objects.create(workspace=ws, refresh_lease_until=timezone.now() + dt.timedelta(seconds=60))
    assert availability_refresh(workspace=ws, force=True).status == Status.BUSY


def test_errors_are_workspace_scoped(workspace, other_workspace):
    ws = configure(booking_provider="ghl")
    availability_refresh(workspace=ws)
    assert IntegrationError.objects.filter(workspace=other_workspace).count() == 0


# --- command and dispatcher ---------------------------------------------------------


@responses.activate
def test_refresh_availability_command_prints_a_summary(workspace, other_workspace):
    configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    configure(slug="globex", booking_provider="ghl", ghl_calendar_id=CAL_ID_2)
    responses.get(f"{API}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=2))
    responses.get(f"{API}/calendars/{CAL_ID_2}/free-slots", status=500, json={})
    out = StringIO()
    call_command("refresh_availability", "--concurrency=1", stdout=out)
    text = out.getvalue()
    assert "acme: fresh provider=ghl slots=4" in text
    assert "globex: failed" in text and "calendar_config:provider_error" in text
    assert "refreshed 2 workspace(s)" in text and "failed=1 fresh=1" in text

    out = StringIO()
    call_command("refresh_availability", "--workspace", "acme", stdout=out)
    assert "refreshed 1 workspace(s)" in out.getvalue()


def test_refresh_availability_command_rejects_an_unknown_workspace(db):
    with pytest.raises(CommandError, match="--workspace"):
        call_command("refresh_availability", "--workspace", "nope")


def test_dispatcher_enqueues_one_task_per_active_due_workspace(workspace, other_workspace, monkeypatch):
    from availability import tasks

    acme = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    globex = configure(slug="globex", booking_provider="calendly")
    configure(slug="sleepy", booking_provider="ghl", ghl_calendar_id=CAL_ID, is_active=False)
    configure(slug="nobooking")
    backing_off = configure(slug="backoff", booking_provider="ghl", ghl_calendar_id=CAL_ID)
    AvailabilitySnapshot.objects.create(
        workspace=backing_off, next_attempt_at=timezone.now() + dt.timedelta(minutes=20)
    )
    sent = []
    monkeypatch.setattr(tasks, "enqueue_refresh", lambda workspace_id, **kw: sent.append(workspace_id))

    assert tasks.availability_refresh_dispatch() == 2
    assert sorted(sent) == sorted([acme.pk, globex.pk])


@responses.activate
def test_success_schedules_the_next_attempt_so_a_duplicate_task_is_not_due(workspace, settings):
    from availability import tasks
    from availability.selectors import availability_due_workspace_ids

    ws = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    slots = responses.get(f"{API}/calendars/{CAL_ID}/free-slots", json=future_slot_strings(days=2))
    before = timezone.now()
    assert availability_refresh(workspace=ws).status == Status.FRESH
    snap = snapshot(ws)
    interval = dt.timedelta(minutes=settings.AVAILABILITY_REFRESH_MINUTES)
    assert before + interval - dt.timedelta(minutes=1) <= snap.next_attempt_at <= timezone.now() + interval
    assert ws.pk not in availability_due_workspace_ids()

    # A duplicate task (dispatched twice, or redelivered) answers not_due without fetching.
    tasks.availability_refresh_workspace.run(ws.pk)
    assert availability_refresh(workspace=ws).status == Status.NOT_DUE
    assert slots.call_count == 1
    # Due again by the beat one interval later.
    assert ws.pk in availability_due_workspace_ids(now=before + interval)


def test_dispatcher_marks_workspaces_queued_so_the_next_beat_does_not_send_them_again(workspace, monkeypatch):
    from availability import tasks
    from availability.selectors import availability_due_workspace_ids

    acme = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    sent = []
    monkeypatch.setattr(tasks, "enqueue_refresh", lambda workspace_id, **kw: sent.append((workspace_id, kw)))

    assert tasks.availability_refresh_dispatch() == 1
    assert tasks.availability_refresh_dispatch() == 0  # its task still waits in the queue
    assert [wid for wid, _ in sent] == [acme.pk]
    queued_until = snapshot(acme).refresh_queued_until
    assert sent[0][1]["expires"] == queued_until  # the task expires when the mark lapses
    assert acme.pk in availability_due_workspace_ids(now=queued_until + dt.timedelta(seconds=1))

    # Once the task runs the mark is gone, whatever it answers (here: not due).
    AvailabilitySnapshot.objects.filter(workspace=acme).update(next_attempt_at=timezone.now() + dt.timedelta(hours=1))
    assert availability_refresh(workspace=acme).status == Status.NOT_DUE
    assert snapshot(acme).refresh_queued_until is None


def test_dispatcher_unmarks_what_the_broker_did_not_take(workspace, other_workspace, monkeypatch):
    from kombu.exceptions import OperationalError

    from availability import tasks

    acme = configure(booking_provider="ghl", ghl_calendar_id=CAL_ID)
    globex = configure(slug="globex", booking_provider="ghl", ghl_calendar_id=CAL_ID_2)
    sent = []

    def enqueue(workspace_id, **kw):
        if sent:
            raise OperationalError("broker down")
        sent.append(workspace_id)

    monkeypatch.setattr(tasks, "enqueue_refresh", enqueue)
    with pytest.raises(OperationalError):
        tasks.availability_refresh_dispatch()
    assert snapshot(acme).refresh_queued_until is not None
    assert snapshot(globex).refresh_queued_until is None


@pytest.mark.parametrize(
    ("provider", "booking_url", "config"),
    [
        ("ghl", {"ghl_booking_url": f"https://book.acme.com/widget/booking/{CAL_ID}"}, {"ghl_calendar_id": CAL_ID}),
        (
            "calendly",
            {"calendly_booking_url": "https://calendly.com/acme/intro"},
            {"calendly_event_type_uri": f"{CALENDLY}/event_types/ET1"},
        ),
    ],
)
def test_every_provider_tries_the_booking_url_then_the_calendar_config(workspace, provider, booking_url, config):
    from availability.providers import booking_then_config_paths, fetch_paths
    from availability.services import fetch_window

    def names(ws):
        paths = fetch_paths(workspace=ws, cached={}, window=fetch_window(workspace=ws, now=timezone.now()))
        assert {p.provider for p in paths} <= {provider}
        return [p.name for p in paths]

    assert names(configure(booking_provider=provider, **booking_url, **config)) == ["booking_url", "calendar_config"]
    assert names(configure(slug="only-config", booking_provider=provider, **config)) == ["calendar_config"]
    assert names(configure(slug="only-url", booking_provider=provider, **booking_url)) == ["booking_url"]
    assert names(configure(slug="nothing", booking_provider=provider)) == []
    assert (
        booking_then_config_paths(provider=provider, booking_url="", config="", via_booking_url=print, via_config=print)
        == []
    )


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_never_claim_the_same_workspace(monkeypatch):
    """Real concurrency on PostgreSQL: dispatcher A holds its claimed rows locked (paused inside
    its transaction, right after its ``SELECT ... FOR UPDATE``) while dispatcher B runs
    on its own connection. B must neither wait for A's locks nor claim what A claimed."""
    import threading

    from django.db import connection

    from availability import tasks

    due = sorted(
        configure(slug=slug, booking_provider="ghl", ghl_calendar_id=CAL_ID).pk
        for slug in ("acme", "globex", "initech")
    )
    a_locked, b_done = threading.Event(), threading.Event()
    b_pid: list[int] = []
    results: dict[str, object] = {}

    def lock_wait_of_b() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # else the view is frozen for the transaction
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", b_pid)
            row = cursor.fetchone()
        return bool(row) and row[0] == "Lock"

    def pause_after_claim(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT") and 'FROM "availability_availabilitysnapshot"' in sql:  # the claim
            a_locked.set()
            # Hold the locks until B is done; stop early if B is seen waiting for them (it
            # should not wait at all). The bound only matters when B hangs for another reason.
            for _ in range(1200):
                if b_done.wait(0.05):
                    break
                if b_pid and lock_wait_of_b():
                    results["b_waited_for_a"] = True
                    break
        return result

    def dispatcher(name: str) -> None:
        try:
            if name == "a":
                with connection.execute_wrapper(pause_after_claim):
                    results[name] = tasks.availability_refresh_dispatch()
            else:
                a_locked.wait(30)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    b_pid.append(cursor.fetchone()[0])
                results[name] = tasks.availability_refresh_dispatch()
                b_done.set()
        except Exception as exc:  # surfaced by the asserts below
            results[name] = exc
        finally:
            connection.close()

    sent: dict[str, list[int]] = {"a": [], "b": []}
    monkeypatch.setattr(
        tasks, "enqueue_refresh", lambda workspace_id, **kw: sent[threading.current_thread().name].append(workspace_id)
    )
    threads = [threading.Thread(target=dispatcher, args=(name,), name=name) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert "b_waited_for_a" not in results  # SKIP LOCKED: B passed A's rows by
    assert results == {"a": len(due), "b": 0}
    assert sent == {"a": due, "b": []}
    assert tasks.availability_refresh_dispatch() == 0  # all of them are queued now
