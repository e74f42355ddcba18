"""EmailBison client and sender self-healing, against `responses` (no network)."""

from __future__ import annotations

import json
import threading

import pytest
import responses
from django.db import connection
from django.utils import timezone

from core.http import Deadline, ProviderAuthError, ProviderHTTPError
from emailbison.client import EmailBisonClient, SenderInvalid, api_base
from emailbison.models import SenderEmail
from emailbison.services import (
    NoSendableSender,
    ReplySenders,
    email_reply_send,
    sender_snapshot_refresh,
)
from workspaces.models import IntegrationError
from workspaces.services import workspace_configure

pytestmark = pytest.mark.django_db

BASE = "https://bison.acme.test"
TOKEN = "eb-token-0123456789abcdefSECRET"
SENDERS_URL = f"{BASE}/api/sender-emails"
REPLY_URL = f"{BASE}/api/replies/4242/reply"
INVALID_SENDER = {"message": "The selected sender email id is invalid."}


@pytest.fixture
def ws(workspace):
    ws, _ = workspace_configure(slug="acme", changes={"emailbison_base_url": BASE, "emailbison_token": TOKEN})
    return ws


def _senders(*items, page=1, last_page=1):
    return {
        "data": [{"id": i, "email": f"s{i}@acme.test", "name": f"S{i}", "status": status} for i, status in items],
        "links": {"next": f"{SENDERS_URL}?page={page + 1}" if page < last_page else None},
        "meta": {"current_page": page, "last_page": last_page},
    }


def _posted_senders() -> list[int]:
    return [json.loads(c.request.body)["sender_email_id"] for c in responses.calls if c.request.method == "POST"]


@pytest.mark.parametrize("base", [BASE, f"{BASE}/", f"{BASE}/api", f"{BASE}/api/"])
def test_api_base_accepts_the_instance_with_or_without_api(base):
    assert api_base(base) == f"{BASE}/api"


@responses.activate
def test_sender_list_follows_pages_and_sends_the_token():
    responses.get(SENDERS_URL, json=_senders((1, "Connected"), (2, "Disconnected"), last_page=2))
    responses.get(SENDERS_URL, json=_senders((3, "Connected"), page=2, last_page=2))
    with EmailBisonClient(base_url=BASE, token=TOKEN) as client:
        senders = client.sender_emails_list()
    assert [(s.sender_id, s.is_sendable) for s in senders] == [("1", True), ("2", False), ("3", True)]
    assert [c.request.params.get("page") for c in responses.calls] == ["1", "2"]
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in responses.calls)


@responses.activate
def test_errors_never_carry_the_token():
    responses.get(SENDERS_URL, status=401, json={"message": f"Invalid token {TOKEN}"})
    with EmailBisonClient(base_url=BASE, token=TOKEN) as client, pytest.raises(ProviderAuthError) as info:
        client.sender_emails_list()
    assert TOKEN not in str(info.value) and TOKEN not in info.value.message


@responses.activate
def test_reply_send_posts_the_documented_fields():
    responses.post(REPLY_URL, json={"data": {"id": 99, "status": "queued"}})
    with EmailBisonClient(base_url=BASE, token=TOKEN) as client:
        sent = client.reply_send(reply_id=4242, sender_email_id="7", to_email="lee@example.com", message="Hi Lee")
    assert sent.reply_id == "99"
    assert json.loads(responses.calls[0].request.body) == {
        "sender_email_id": 7,
        "to_emails": [{"name": "", "email_address": "lee@example.com"}],
        "message": "Hi Lee",
        "content_type": "text",
        "inject_previous_email_body": True,
    }


@responses.activate
def test_reply_send_refuses_non_numeric_ids_before_any_request():
    with EmailBisonClient(base_url=BASE, token=TOKEN) as client, pytest.raises(ValueError, match="numeric"):
        client.reply_send(reply_id="../leads/1", sender_email_id=7, to_email="a@b.c", message="x")
    assert len(responses.calls) == 0


@responses.activate
def test_refresh_stores_senders_and_marks_unlisted_ones_unsendable(ws):
    SenderEmail.objects.create(workspace=ws, sender_id="9", email="gone@acme.test", is_sendable=True)
    responses.get(SENDERS_URL, json=_senders((1, "Connected"), (2, "Disconnected")))
    refresh = sender_snapshot_refresh(workspace=ws)
    assert (refresh.listed, refresh.sendable, refresh.dropped) == (2, 1, 1)
    rows = {s.sender_id: (s.is_sendable, s.listed) for s in SenderEmail.objects.filter(workspace=ws)}
    assert rows == {"1": (True, True), "2": (False, True), "9": (False, False)}
    assert SenderEmail.objects.get(sender_id="1").last_checked_at is not None


def sender_pick(*, workspace, preferred_sender_id="", exclude=frozenset()):
    """The first pick of a new batch (``ReplySenders``), as a send makes it."""
    with EmailBisonClient(base_url=BASE, token=TOKEN) as client:
        senders = ReplySenders(workspace=workspace, client=client)
        return senders.pick(preferred=preferred_sender_id, exclude=exclude, deadline=Deadline(5))


def test_pick_prefers_the_thread_sender_then_default_then_least_used_today(ws, other_workspace):
    today = timezone.localdate(timezone=ws.tzinfo)
    busy = SenderEmail.objects.create(workspace=ws, sender_id="1", is_sendable=True, sends_today=5, sends_day=today)
    SenderEmail.objects.create(workspace=ws, sender_id="2", is_sendable=True, sends_today=2, sends_day=today)
    # 9 sends counted on an earlier day are 0 sends today.
    SenderEmail.objects.create(
        workspace=ws, sender_id="3", is_sendable=True, sends_today=9, sends_day=today - timezone.timedelta(days=1)
    )
    SenderEmail.objects.create(workspace=ws, sender_id="4", is_sendable=False)
    SenderEmail.objects.create(workspace=other_workspace, sender_id="5", is_sendable=True)
    assert sender_pick(workspace=ws, preferred_sender_id="1") == "1"
    assert sender_pick(workspace=ws, preferred_sender_id="4") == "3"  # the thread's sender cannot send
    assert sender_pick(workspace=ws, preferred_sender_id="5") == "3"  # another workspace's sender is not ours
    busy.is_default = True
    busy.save()
    assert sender_pick(workspace=ws) == "1"
    assert sender_pick(workspace=ws, exclude=frozenset({"1", "3"})) == "2"


@responses.activate
def test_dead_thread_sender_heals_to_another_and_the_reply_goes_out_once(ws):
    SenderEmail.objects.create(workspace=ws, sender_id="7", is_sendable=True)
    SenderEmail.objects.create(workspace=ws, sender_id="8", is_sendable=True)
    responses.post(REPLY_URL, status=422, json=INVALID_SENDER)
    responses.post(REPLY_URL, json={"data": {"id": 501}})
    responses.get(SENDERS_URL, json=_senders((7, "Connected"), (8, "Connected")))

    sent = email_reply_send(
        workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi", preferred_sender_id="7"
    )

    assert (sent.sender_id, sent.healed_from, sent.provider_reply_id) == ("8", "7", "501")
    assert _posted_senders() == [7, 8]
    # Listed as connected, yet it refused: unsendable until a refresh shows otherwise.
    assert not SenderEmail.objects.get(workspace=ws, sender_id="7").is_sendable
    assert SenderEmail.objects.get(workspace=ws, sender_id="8").sends_today == 1
    error = IntegrationError.objects.get(workspace=ws, source="emailbison", code="sender_invalid")
    assert error.resolved_at is None and "#7" in error.message and TOKEN not in error.message


@responses.activate
def test_a_later_clean_send_resolves_the_sender_error(ws):
    SenderEmail.objects.create(workspace=ws, sender_id="7", is_sendable=True)
    SenderEmail.objects.create(workspace=ws, sender_id="8", is_sendable=True)
    responses.post(REPLY_URL, status=422, json=INVALID_SENDER)
    responses.post(REPLY_URL, json={"data": {"id": 501}})
    responses.post(REPLY_URL, json={"data": {"id": 502}})
    responses.get(SENDERS_URL, json=_senders((8, "Connected")))
    email_reply_send(workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi", preferred_sender_id="7")
    assert IntegrationError.objects.get(code="sender_invalid").resolved_at is None

    email_reply_send(workspace=ws, reply_id="4242", to_email="lee@example.com", message="Again")
    assert IntegrationError.objects.get(code="sender_invalid").resolved_at is not None
    assert _posted_senders() == [7, 8, 8]


@responses.activate
def test_dead_default_sender_is_repaired(ws):
    SenderEmail.objects.create(workspace=ws, sender_id="7", is_sendable=True, is_default=True)
    SenderEmail.objects.create(workspace=ws, sender_id="8", is_sendable=True)
    responses.post(REPLY_URL, status=404, json={"message": "Sender email not found"})
    responses.post(REPLY_URL, json={"data": {"id": 1}})
    responses.get(SENDERS_URL, json=_senders((8, "Connected")))
    email_reply_send(workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi")
    assert list(SenderEmail.objects.filter(workspace=ws, is_default=True).values_list("sender_id", flat=True)) == ["8"]
    assert not SenderEmail.objects.get(sender_id="7").listed


@responses.activate
def test_every_sender_dead_sends_nothing_and_says_so(ws):
    responses.get(SENDERS_URL, json=_senders((7, "Disconnected"), (8, "Paused")))
    with pytest.raises(NoSendableSender):
        email_reply_send(workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi")
    assert _posted_senders() == []
    assert IntegrationError.objects.filter(workspace=ws, code="no_sendable_sender", resolved_at=None).exists()


@responses.activate
def test_the_only_sender_refusing_ends_without_a_second_send(ws):
    SenderEmail.objects.create(workspace=ws, sender_id="7", is_sendable=True)
    responses.post(REPLY_URL, status=422, json={"message": "Sender email is disconnected"})
    responses.get(SENDERS_URL, json=_senders((7, "Connected")))
    with pytest.raises(NoSendableSender):
        email_reply_send(workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi")
    assert _posted_senders() == [7]


@responses.activate
def test_healed_retry_refused_too_is_not_tried_a_third_time(ws):
    for sender_id in ("7", "8", "9"):
        SenderEmail.objects.create(workspace=ws, sender_id=sender_id, is_sendable=True)
    responses.post(REPLY_URL, status=422, json=INVALID_SENDER)
    responses.get(SENDERS_URL, json=_senders((7, "Connected"), (8, "Connected"), (9, "Connected")))
    with pytest.raises(SenderInvalid):
        email_reply_send(
            workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi", preferred_sender_id="7"
        )
    assert len(_posted_senders()) == 2
    assert SenderEmail.objects.filter(workspace=ws, is_sendable=False).count() == 2


@responses.activate
def test_a_refusal_that_is_not_about_the_sender_is_never_retried(ws):
    SenderEmail.objects.create(workspace=ws, sender_id="7", is_sendable=True)
    SenderEmail.objects.create(workspace=ws, sender_id="8", is_sendable=True)
    responses.post(REPLY_URL, status=500, json={"message": "Server Error"})
    with pytest.raises(ProviderHTTPError):
        email_reply_send(
            workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi", preferred_sender_id="7"
        )
    # A write is never repeated blindly: EmailBison may have sent it before failing.
    assert _posted_senders() == [7]
    assert SenderEmail.objects.filter(workspace=ws, is_sendable=True).count() == 2


@pytest.mark.parametrize("base", ["http://10.1.2.3", "http://169.254.169.254", "http://metadata.internal.test"])
def test_a_base_url_on_a_private_address_is_refused_before_the_token_leaves(base, fake_dns):
    from core.http import ProviderOutboundRefused

    fake_dns.add("metadata.internal.test", "169.254.169.254")
    with EmailBisonClient(base_url=base, token=TOKEN) as client, pytest.raises(ProviderOutboundRefused) as info:
        client.sender_emails_list()
    assert TOKEN not in str(info.value)


@pytest.mark.django_db(transaction=True)
@responses.activate
def test_first_sends_of_a_workspace_from_many_threads_read_the_sender_list_once(ws):
    """A worker's threads all find no snapshot on a workspace's first sends: one of them reads
    the sender list, the others wait for it and pick from what it stored."""
    responses.get(SENDERS_URL, json=_senders((1, "Connected"), (2, "Connected")))
    responses.post(REPLY_URL, json={"data": {"id": 501}})
    start, errors = threading.Barrier(6), []

    def send():
        try:
            start.wait()
            email_reply_send(workspace=ws, reply_id="4242", to_email="lee@example.com", message="Hi")
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert [c.request.method for c in responses.calls].count("GET") == 1
    assert len(_posted_senders()) == 6
    assert sorted(SenderEmail.objects.filter(workspace=ws).values_list("sender_id", flat=True)) == ["1", "2"]
