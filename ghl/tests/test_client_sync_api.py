"""GHL contacts/conversations client: typed redacted errors, 429s, point-in-time backoff,
pagination, input refusals, no blind write retries, and every request checked against the specs."""

from __future__ import annotations

import json
import time

import pytest
import requests
import responses

from core.http import ProviderConnectionError
from ghl.client import (
    CONTACTS_API_VERSION,
    CONVERSATIONS_API_VERSION,
    PIT_CONTEXT_BACKOFF_S,
    ContactUpsert,
    GhlAuthError,
    GhlClient,
    GhlForbiddenLocation,
    GhlInvalidInput,
    GhlNotFound,
    GhlPitContextError,
    GhlRateLimited,
    GhlServerError,
    parse_messages_page,
)
from ghl.normalize import email_clean, phone_to_e164
from ghl.tests.spec_check import check_request, load_specs

API = "http://ghl-api.test"
TOKEN = "pit-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CONTACT = "AbCdEfGhIj0123456789"
CONV = "ConvAbCdEfGh01234567"


@pytest.fixture(autouse=True)
def ghl_settings(settings):
    settings.GHL_API_BASE_URL = API
    settings.GHL_REQUESTS_PER_10S = 1000
    settings.GHL_MAX_429_RETRIES = 2


@pytest.fixture
def sleeps(monkeypatch):
    """Every sleep of the retry loop and the limiter, recorded instead of slept: the monotonic
    clock jumps forward by the same amount, so deadlines and windows see the time pass."""
    recorded: list[float] = []
    real_monotonic = time.monotonic

    def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("time.sleep", fake_sleep)
    monkeypatch.setattr("time.monotonic", lambda: real_monotonic() + sum(recorded))
    return recorded


def make_client() -> GhlClient:
    return GhlClient(token=TOKEN, location_id="LOC123")


def message(i: int, *, direction="inbound", kind="TYPE_SMS", date="2026-11-20T10:00:00.000Z") -> dict:
    return {
        "id": f"msg{i:017d}",
        "direction": direction,
        "messageType": kind,
        "body": f"hello {i}",
        "dateAdded": date,
        "conversationId": CONV,
    }


# --- answers and pagination ---------------------------------------------------------


def test_both_message_list_shapes_parse_the_same():
    items = [message(1), message(2, direction="outbound")]
    new = parse_messages_page({"messages": items, "nextPage": True, "lastMessageId": "x"}, conversation_id=CONV)
    old = parse_messages_page(
        {"messages": {"messages": items, "nextPage": True, "lastMessageId": "x"}}, conversation_id=CONV
    )
    assert new == old
    assert [m.direction for m in new.messages] == ["inbound", "outbound"]
    assert new.next_page is True and new.last_message_id == "x"
    assert new.messages[0].sent_at.isoformat() == "2026-11-20T10:00:00+00:00"


@pytest.mark.parametrize("shape", ["old", "new"])
@responses.activate
def test_messages_pagination_follows_last_message_id(shape):
    pages = [
        ([message(1), message(2)], True, "msg00000000000000002"),
        ([message(3)], False, "msg00000000000000003"),
    ]

    def answer(items, more, last):
        inner = {"messages": items, "nextPage": more, "lastMessageId": last}
        return {"messages": inner} if shape == "old" else inner

    url = f"{API}/conversations/{CONV}/messages"
    responses.get(url, json=answer(*pages[0]), match=[responses.matchers.query_param_matcher({"limit": "100"})])
    responses.get(
        url,
        json=answer(*pages[1]),
        match=[responses.matchers.query_param_matcher({"limit": "100", "lastMessageId": "msg00000000000000002"})],
    )
    got = [m.id for page in make_client().conversation_messages_pages(conversation_id=CONV) for m in page]
    assert got == ["msg00000000000000001", "msg00000000000000002", "msg00000000000000003"]
    assert len(responses.calls) == 2


# --- errors -----------------------------------------------------------------------------


@responses.activate
def test_403_location_error_is_typed_and_redacted():
    responses.get(
        f"{API}/contacts/{CONTACT}",
        status=403,
        json={"statusCode": 403, "message": f"The token does not have access to this location. {TOKEN}"},
    )
    with pytest.raises(GhlForbiddenLocation) as info:
        make_client().contact_get(contact_id=CONTACT)
    assert info.value.kind == "forbidden_location" and info.value.code == "auth_failed"
    assert TOKEN not in str(info.value)
    assert len(responses.calls) == 1  # not retried


@responses.activate
def test_invalid_input_error_carries_no_phone_or_email():
    responses.post(
        f"{API}/contacts/upsert",
        status=400,
        json={"statusCode": 400, "message": "invalid country calling code for +44 20 7946 0958 / jo@example.com"},
    )
    with pytest.raises(GhlInvalidInput) as info:
        make_client().contact_upsert(contact=ContactUpsert(email="jo@example.com", phone="+442079460958"))
    text = str(info.value)
    assert "7946" not in text and "jo@example.com" not in text
    assert "invalid country calling code" in text


@pytest.mark.parametrize(
    ("status", "message", "expected", "code"),
    [
        (401, "Invalid JWT", GhlAuthError, "auth_failed"),
        (403, "Forbidden resource", GhlAuthError, "auth_failed"),
        (403, "The token does not have access to this location.", GhlForbiddenLocation, "forbidden_location"),
        (404, "Not found", GhlNotFound, "not_found"),
        (422, ["phone must be a valid phone number"], GhlInvalidInput, "invalid_input"),
        (500, "Internal server error", GhlServerError, "server_error"),
    ],
)
@responses.activate
def test_errors_are_typed_by_status_and_message(status, message, expected, code, sleeps):
    responses.post(f"{API}/conversations/messages", status=status, json={"statusCode": status, "message": message})
    with pytest.raises(expected) as info:
        make_client().message_send(contact_id=CONTACT, message="hi", deadline=30)
    assert type(info.value) is expected and info.value.kind == code and info.value.status == status
    assert len(responses.calls) == 1


@responses.activate
def test_401_is_an_auth_error():
    responses.get(f"{API}/contacts/{CONTACT}", status=401, json={"message": "Invalid JWT"})
    with pytest.raises(GhlAuthError) as info:
        make_client().contact_get(contact_id=CONTACT)
    assert not isinstance(info.value, GhlForbiddenLocation)


@responses.activate
def test_429_with_retry_after_waits_what_the_server_says(sleeps):
    url = f"{API}/contacts/{CONTACT}"
    responses.get(url, status=429, headers={"Retry-After": "7"}, json={"message": "Too many requests"})
    responses.get(url, json={"contact": {"id": CONTACT}})
    assert make_client().contact_get(contact_id=CONTACT, deadline=60).id == CONTACT
    assert len(responses.calls) == 2
    # The retry waited Retry-After (plus at most 10 % + 50 ms of jitter), never less.
    assert any(7.0 <= s <= 7.0 * 1.1 + 0.05 for s in sleeps), sleeps


@responses.activate
def test_429_without_retry_after_waits_for_the_announced_window_with_jitter(sleeps):
    url = f"{API}/contacts/{CONTACT}"
    window = {"X-RateLimit-Max": "100", "X-RateLimit-Interval-Milliseconds": "10000", "X-RateLimit-Remaining": "0"}
    responses.get(url, status=429, headers=window, json={"message": "Too many requests"})
    responses.get(url, json={"contact": {"id": CONTACT}})
    assert make_client().contact_get(contact_id=CONTACT, deadline=60).id == CONTACT
    waits = [s for s in sleeps if s >= 1.0]
    assert waits and all(10.0 <= s <= 12.0 for s in waits), sleeps


@responses.activate
def test_429_gives_up_after_ghl_max_429_retries(sleeps):
    responses.get(f"{API}/contacts/{CONTACT}", status=429, headers={"Retry-After": "1"}, json={})
    with pytest.raises(GhlRateLimited):
        make_client().contact_get(contact_id=CONTACT, deadline=600)
    assert len(responses.calls) == 3  # the first + GHL_MAX_429_RETRIES (2)


@responses.activate
def test_point_in_time_context_error_backs_off_at_least_30s(sleeps):
    url = f"{API}/conversations/search"
    responses.get(url, status=400, json={"statusCode": 400, "message": "Too many open point in time contexts"})
    responses.get(url, json={"conversations": [{"id": CONV, "contactId": CONTACT}], "total": 1})
    found = make_client().conversations_search(contact_id=CONTACT, deadline=120)
    assert [c.id for c in found] == [CONV]
    assert len(responses.calls) == 2
    assert max(sleeps) >= PIT_CONTEXT_BACKOFF_S


@responses.activate
def test_point_in_time_error_not_retried_when_the_deadline_cannot_hold_the_backoff(sleeps):
    responses.get(f"{API}/conversations/search", status=400, json={"message": "pit context limit reached"})
    with pytest.raises(GhlPitContextError):
        make_client().conversations_search(contact_id=CONTACT, deadline=5)
    assert len(responses.calls) == 1
    assert not any(s >= 5 for s in sleeps)


@responses.activate
def test_gets_are_retried_after_network_errors(sleeps):
    url = f"{API}/contacts/{CONTACT}"
    responses.get(url, body=requests.exceptions.ConnectionError("reset"))
    responses.get(url, json={"contact": {"id": CONTACT}})
    assert make_client().contact_get(contact_id=CONTACT, deadline=30).id == CONTACT
    assert len(responses.calls) == 2


@responses.activate
def test_writes_are_never_blindly_retried(sleeps):
    responses.post(f"{API}/contacts/upsert", body=requests.exceptions.ConnectionError("reset"))
    responses.post(f"{API}/conversations/messages", status=502, json={"message": "bad gateway"})
    client = make_client()
    with pytest.raises(ProviderConnectionError):
        client.contact_upsert(contact=ContactUpsert(email="a@example.com"), deadline=30)
    with pytest.raises(GhlServerError):
        client.message_send(contact_id=CONTACT, message="hi", deadline=30)
    assert len(responses.calls) == 2  # one attempt each


# --- input refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "short", "has spaces in it ok", "abc/def0123456789012", "x" * 65, "ñandú0123456789xx"]
)
@responses.activate
def test_invalid_contact_ids_are_never_sent(bad):
    client = make_client()
    with pytest.raises(GhlInvalidInput):
        client.contact_get(contact_id=bad)
    if bad:
        with pytest.raises(GhlInvalidInput):
            client.conversations_search(contact_id=bad)
    assert len(responses.calls) == 0


@responses.activate
def test_contact_id_is_trimmed():
    responses.get(f"{API}/contacts/{CONTACT}", json={"contact": {"id": CONTACT, "dnd": True}})
    assert make_client().contact_get(contact_id=f"  {CONTACT}\n").sms_dnd is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(415) 555-2671", "+14155552671"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+44 20 7946 0958", "+442079460958"),
        ("00 1 415 555 2671", "+14155552671"),
        ("+999 123 456", ""),  # invalid country calling code
        ("555", ""),
        ("call me", ""),
        ("+1 555 0100 000", ""),  # parses, not a valid number
    ],
)
def test_phone_normalisation(raw, expected, settings):
    settings.DEFAULT_PHONE_REGION = "US"
    value, reason = phone_to_e164(raw)
    assert value == expected
    assert bool(reason) == (expected == "")


def test_email_lowercased_and_validated():
    assert email_clean("  Jo.Doe@Example.COM ") == ("jo.doe@example.com", "")
    assert email_clean("not-an-email")[0] == ""
    assert email_clean("") == ("", "")


# --- conformance with the vendor specs ------------------------------------------------------


@responses.activate
def test_every_contacts_and_conversations_request_matches_the_openapi_specs():
    specs = load_specs()
    responses.get(f"{API}/contacts/{CONTACT}", json={"contact": {"id": CONTACT}})
    responses.post(f"{API}/contacts/search", json={"contacts": [{"id": CONTACT}], "total": 1})
    responses.post(f"{API}/contacts/upsert", json={"new": True, "contact": {"id": CONTACT}})
    responses.get(f"{API}/conversations/search", json={"conversations": [{"id": CONV}], "total": 1})
    responses.get(
        f"{API}/conversations/{CONV}/messages",
        json={"messages": [message(1)], "nextPage": True, "lastMessageId": "msg00000000000000001"},
    )
    responses.post(f"{API}/conversations/messages", json={"conversationId": CONV, "messageId": "m" * 20})
    client = make_client()
    client.contact_get(contact_id=CONTACT)
    client.contacts_search(query="jo@example.com")
    client.contact_upsert(
        contact=ContactUpsert(first_name="Jo", last_name="Doe", email="jo@example.com", phone="+14155552671")
    )
    client.conversations_search(contact_id=CONTACT)
    client.conversations_search(limit=1)
    pages = client.conversation_messages_pages(conversation_id=CONV, max_pages=2)
    list(pages)
    client.message_send(contact_id=CONTACT, message="hello")
    client.message_send(
        contact_id=CONTACT, message_type="Email", subject="Re: roof", html="<p>hi</p>", reply_message_id="r" * 20
    )
    templates = {check_request(specs, call.request, API) for call in responses.calls}
    assert templates == {
        "/contacts/{contactId}",
        "/contacts/search",
        "/contacts/upsert",
        "/conversations/search",
        "/conversations/{conversationId}/messages",
        "/conversations/messages",
    }
    versions = {
        call.request.url.split("?")[0].split(API)[1]: call.request.headers["Version"] for call in responses.calls
    }
    assert versions[f"/contacts/{CONTACT}"] == CONTACTS_API_VERSION
    assert versions["/conversations/messages"] == CONVERSATIONS_API_VERSION
    assert json.loads(responses.calls[2].request.body)["locationId"] == "LOC123"


def test_spec_checker_catches_a_wrong_version_an_unknown_body_field_and_a_missing_param():
    specs = load_specs()

    def req(method, url, headers, body=None):
        return type("R", (), {"method": method, "url": url, "headers": headers, "body": body})

    with pytest.raises(AssertionError, match="Version"):
        check_request(specs, req("GET", f"{API}/contacts/{CONTACT}", {"Version": "2021-04-15"}), API)
    with pytest.raises(AssertionError, match="body field"):
        body = json.dumps({"locationId": "L", "phoneNumber": "+1"})
        check_request(specs, req("POST", f"{API}/contacts/upsert", {"Version": CONTACTS_API_VERSION}, body), API)
    with pytest.raises(AssertionError, match="locationId"):
        check_request(specs, req("GET", f"{API}/conversations/search", {"Version": CONVERSATIONS_API_VERSION}), API)
    with pytest.raises(AssertionError, match="not an operation"):
        check_request(specs, req("GET", f"{API}/contacts/{CONTACT}/nope", {"Version": CONTACTS_API_VERSION}), API)
