"""Approve and send: exactly once, compliance at send time, self-healing email senders.

Providers are faked with ``responses``; PostgreSQL decides the races.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import responses
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.testing.clock import midday_zone
from drafts.models import Draft, DraftStatus
from drafts.sending import (
    Outcome,
    draft_approve_and_send,
    draft_send,
    drafts_send,
    drafts_send_due,
    send_lease,
)
from drafts.tests.factories import lead_create, message_create
from emailbison.models import SenderEmail
from leads.models import Lead, LeadStatus
from messaging.models import Channel, Delivery, Direction, Message, WebhookEvent
from workspaces.models import IntegrationError
from workspaces.services import workspace_configure

GHL = "http://ghl-api.test"
SEND_URL = f"{GHL}/conversations/messages"
EB = "https://bison.acme.test"
EB_REPLY = f"{EB}/api/replies/{{}}/reply"
EB_SENDERS = f"{EB}/api/sender-emails"
# The repo's copy of GHL's spec (ghl/tests checks it equals ../shared/vendor-specs when present).
CONVERSATIONS_SPEC = Path(__file__).resolve().parents[2] / "ghl" / "tests" / "specs" / "conversations.json"


@pytest.fixture(autouse=True)
def ghl_api(settings):
    settings.GHL_API_BASE_URL = GHL
    settings.GHL_REQUESTS_PER_10S = 1000


@pytest.fixture
def ws(workspace):
    ws, _ = workspace_configure(
        slug="acme", changes={"emailbison_base_url": EB, "emailbison_token": "eb-token-secret-123456"}
    )
    return ws


def _draft(
    ws, *, channel=Channel.SMS, status=DraftStatus.APPROVED, lead=None, content="Tuesday 10am works?", **lead_fields
):
    # A lead where it is midday: inside the SMS window whatever time the suite runs (the quiet
    # hours tests give their own zone and freeze the clock).
    lead = lead or lead_create(workspace=ws, timezone=lead_fields.pop("timezone", midday_zone()), **lead_fields)
    message = message_create(lead=lead, body="Yes, call me", channel=channel, sentiment="Interested")
    return Draft.objects.create(
        workspace=ws,
        lead=lead,
        message=message,
        channel=channel,
        status=status,
        content=content,
        subject="Re: roofs" if channel == Channel.EMAIL else "",
    )


def _claimed(ws, draft, *, delivery=Delivery.SENDING):
    return Message.objects.create(
        workspace=ws,
        lead=draft.lead,
        channel="sms",
        direction="outbound",
        body=draft.content,
        sent_at=timezone.now(),
        origin="sent",
        delivery=delivery,
        draft_source=draft,
    )


def _sms_ok(message_id="ghl-out-1"):
    responses.post(SEND_URL, json={"conversationId": "conv-1", "messageId": message_id, "msg": "Message queued"})


def _handed(*, draft_ids, workspace_id):
    return len(draft_ids)  # the broker took them all


def _posts(url_prefix: str = "") -> list[dict]:
    return [
        json.loads(call.request.body)
        for call in responses.calls
        if call.request.method == "POST" and call.request.url.startswith(url_prefix)
    ]


# --- exactly once -------------------------------------------------------------------------


@pytest.mark.django_db
@responses.activate
def test_sms_goes_out_once_when_approve_and_send_is_clicked_twice(ws, admin_user, django_capture_on_commit_callbacks):
    draft = _draft(ws, status=DraftStatus.READY)
    _sms_ok()
    enqueued = []
    with (
        mock.patch("drafts.sending.drafts_send_enqueue", side_effect=lambda **kw: enqueued.append(kw)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        draft_approve_and_send(draft=draft, user=admin_user)
        draft_approve_and_send(draft=Draft.objects.get(pk=draft.pk), user=admin_user)
    assert len(enqueued) == 2  # both clicks hand a send to the broker...
    outcomes = [drafts_send(**kw)[draft.pk] for kw in enqueued]
    assert outcomes == [Outcome.SENT, Outcome.NOT_SENDABLE]  # ...only one sends
    assert len(_posts(SEND_URL)) == 1
    draft.refresh_from_db()
    outbound = Message.objects.get(direction=Direction.OUTBOUND)
    assert draft.status == DraftStatus.SENT and draft.sent_message_id == outbound.pk and draft.sent_at
    assert (outbound.delivery, outbound.ghl_message_id, outbound.draft_source_id) == ("sent", "ghl-out-1", draft.pk)
    assert outbound.body == "Tuesday 10am works?" and outbound.origin == "sent"
    assert Lead.objects.get(pk=draft.lead_id).last_outbound_at is not None


@pytest.mark.django_db
@responses.activate
def test_the_request_matches_the_ghl_spec(ws):
    spec = json.loads(CONVERSATIONS_SPEC.read_text())
    operation = spec["paths"]["/conversations/messages"]["post"]
    version_enum = next(p for p in operation["parameters"] if p["name"] == "Version")["schema"]["enum"]
    body_props = set(spec["components"]["schemas"]["SendMessageBodyDto"]["properties"])
    type_enum = spec["components"]["schemas"]["SendMessageBodyDto"]["properties"]["type"]["enum"]

    _sms_ok()
    draft_send(draft_id=_draft(ws).pk, workspace_id=ws.pk)
    request = responses.calls[0].request
    body = json.loads(request.body)
    assert request.headers["Version"] in version_enum
    assert set(body) <= body_props and body["type"] in type_enum
    assert body["contactId"] and body["message"] == "Tuesday 10am works?"


@pytest.mark.django_db
@responses.activate
def test_a_redelivered_task_after_the_send_sends_nothing(ws):
    draft = _draft(ws)
    _sms_ok()
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.NOT_SENDABLE
    assert len(_posts(SEND_URL)) == 1


@pytest.mark.django_db
@responses.activate
def test_a_worker_killed_mid_send_never_causes_a_second_send(ws):
    """The row written before the provider call is found by the redelivered task: while a live
    worker could still be in the call it waits; past the lease it settles as unconfirmed."""
    draft = _draft(ws)
    outbound = _claimed(ws, draft)
    _sms_ok()
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.IN_FLIGHT
    Message.objects.filter(pk=outbound.pk).update(created_at=timezone.now() - send_lease() - dt.timedelta(seconds=1))
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.UNCONFIRMED
    assert _posts(SEND_URL) == []
    draft.refresh_from_db()
    assert (draft.status, draft.failure_reason) == (DraftStatus.FAILED, "send_unconfirmed")
    assert Message.objects.get(pk=outbound.pk).delivery == Delivery.UNCONFIRMED
    assert IntegrationError.objects.filter(workspace=ws, code="send_unconfirmed", resolved_at=None).exists()


@pytest.mark.django_db(transaction=True)
@responses.activate
def test_two_workers_sending_the_same_draft_at_once_send_it_once(workspace):
    draft = _draft(workspace)

    def slow_ok(request):
        time.sleep(0.5)  # the first worker is inside the provider call while the second claims
        return 200, {}, json.dumps({"conversationId": "c", "messageId": "m-1"})

    responses.add_callback(responses.POST, SEND_URL, callback=slow_ok)
    outcomes = []
    barrier = threading.Barrier(2)

    def worker():
        barrier.wait()
        try:
            outcomes.append(draft_send(draft_id=draft.pk, workspace_id=workspace.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == sorted([Outcome.SENT, Outcome.IN_FLIGHT])
    assert len(_posts(SEND_URL)) == 1
    assert Message.objects.filter(draft_source=draft).count() == 1


@pytest.mark.django_db
@responses.activate
def test_a_5xx_is_unconfirmed_and_never_retried(ws):
    draft = _draft(ws)
    responses.post(SEND_URL, status=502, json={"message": "Bad gateway"})
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.UNCONFIRMED
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.NOT_SENDABLE
    assert len(_posts(SEND_URL)) == 1
    assert Draft.objects.get(pk=draft.pk).failure_reason == "send_unconfirmed"


@pytest.mark.django_db
@responses.activate
def test_a_4xx_fails_the_draft_with_the_reason_and_a_later_send_resolves_it(ws):
    draft = _draft(ws)
    responses.post(SEND_URL, status=422, json={"message": ["contactId must be valid"]})
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.FAILED
    draft.refresh_from_db()
    assert (draft.status, draft.failure_reason) == (DraftStatus.FAILED, "provider_http_error")
    assert Message.objects.get(draft_source=draft).delivery == Delivery.FAILED
    error = IntegrationError.objects.get(workspace=ws, source="ghl", code="send_provider_http_error")
    assert "contactId must be valid" in error.message

    responses.replace(responses.POST, SEND_URL, json={"conversationId": "c", "messageId": "m-2"})
    assert draft_send(draft_id=_draft(ws).pk, workspace_id=ws.pk) == Outcome.SENT
    error.refresh_from_db()
    assert error.resolved_at is not None


@pytest.mark.django_db(transaction=True)
@responses.activate
def test_our_own_outbound_webhook_arriving_first_does_not_break_the_send(ws):
    """GHL may deliver the OutboundMessage webhook for our send before we store its id."""
    draft = _draft(ws)

    def accepted_and_webhooked(request):
        try:  # the webhook, committed by another connection while our call is answered
            Message.objects.create(
                workspace=ws,
                lead=draft.lead,
                channel="sms",
                direction="outbound",
                body=draft.content,
                sent_at=timezone.now(),
                ghl_message_id="m-77",
            )
        finally:
            connection.close()
        return 200, {}, json.dumps({"conversationId": "c", "messageId": "m-77"})

    responses.add_callback(responses.POST, SEND_URL, callback=accepted_and_webhooked)
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    outbound = Message.objects.get(workspace=ws, direction="outbound")
    assert outbound.draft_source_id == draft.pk and outbound.ghl_message_id == "m-77"


# --- compliance at send time ---------------------------------------------------------------


@pytest.mark.django_db
@responses.activate
def test_an_approved_draft_of_a_lead_who_opted_out_meanwhile_is_never_sent(ws):
    draft = _draft(ws)
    Lead.objects.filter(pk=draft.lead_id).update(status=LeadStatus.BLACKLISTED)
    _sms_ok()
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SKIPPED
    assert _posts() == []
    draft.refresh_from_db()
    assert (draft.status, draft.failure_reason) == (DraftStatus.SKIPPED, "blacklisted")
    assert not Message.objects.filter(direction="outbound").exists()


@pytest.mark.django_db
@responses.activate
def test_an_opt_out_skips_approved_and_scheduled_drafts(ws):
    from drafts.services.lifecycle import drafts_skip_for_blacklisted_lead

    approved = _draft(ws)
    scheduled = _draft(ws, status=DraftStatus.SCHEDULED, lead=approved.lead)
    drafts_skip_for_blacklisted_lead(lead_id=approved.lead_id, workspace_id=ws.pk)
    assert set(Draft.objects.values_list("status", flat=True)) == {DraftStatus.SKIPPED}
    assert draft_send(draft_id=scheduled.pk, workspace_id=ws.pk) == Outcome.NOT_SENDABLE
    assert _posts() == []


@pytest.mark.django_db
@responses.activate
def test_ghl_dnd_refusal_sets_the_lead_dnd_and_stops(ws):
    draft = _draft(ws)
    responses.post(
        SEND_URL, status=400, json={"statusCode": 400, "message": "Cannot send message as DND is active for SMS."}
    )
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.FAILED
    draft.refresh_from_db()
    assert (draft.status, draft.failure_reason) == (DraftStatus.FAILED, "dnd")
    assert Lead.objects.get(pk=draft.lead_id).sms_dnd is True
    # The next SMS draft of that lead is not even tried.
    later = _draft(ws, lead=draft.lead)
    assert draft_send(draft_id=later.pk, workspace_id=ws.pk) == Outcome.SKIPPED
    assert len(_posts(SEND_URL)) == 1
    assert Draft.objects.get(pk=later.pk).failure_reason == "dnd"


@pytest.mark.django_db
@responses.activate
@pytest.mark.parametrize(
    ("local_now", "opens_local"),
    [
        # 22:00 on a plain evening: next morning 08:00.
        (dt.datetime(2030, 6, 11, 22, 0), dt.datetime(2030, 6, 12, 8, 0)),
        # 22:00 the evening before DST ends (Nov 3, 2030, 02:00 EDT -> 01:00 EST): 08:00 EST, 10 hours later.
        (dt.datetime(2030, 11, 2, 22, 0), dt.datetime(2030, 11, 3, 8, 0)),
        # 22:00 the evening before DST starts (Mar 10, 2030): 08:00 EDT, 9 hours later.
        (dt.datetime(2030, 3, 9, 22, 0), dt.datetime(2030, 3, 10, 8, 0)),
        # 06:30 the same morning.
        (dt.datetime(2030, 6, 11, 6, 30), dt.datetime(2030, 6, 11, 8, 0)),
    ],
)
def test_sms_outside_quiet_hours_waits_for_the_window_across_dst(ws, local_now, opens_local):
    import zoneinfo

    new_york = zoneinfo.ZoneInfo("America/New_York")
    draft = _draft(ws, timezone="America/New_York")
    _sms_ok()
    with time_machine.travel(local_now.replace(tzinfo=new_york), tick=False):
        assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SCHEDULED
    draft.refresh_from_db()
    assert draft.status == DraftStatus.SCHEDULED
    assert draft.send_after == opens_local.replace(tzinfo=new_york)
    assert _posts() == []

    with (
        time_machine.travel(draft.send_after - dt.timedelta(minutes=1), tick=False),
        mock.patch("drafts.sending.drafts_send_enqueue") as enqueue,
    ):
        assert drafts_send_due() == 0
        enqueue.assert_not_called()
    with time_machine.travel(draft.send_after + dt.timedelta(seconds=30), tick=False):
        with mock.patch("drafts.sending.drafts_send_enqueue", side_effect=_handed) as enqueue:
            assert drafts_send_due() == 1
        enqueue.assert_called_once_with(draft_ids=[draft.pk], workspace_id=ws.pk)
        assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    assert len(_posts(SEND_URL)) == 1


@pytest.mark.django_db
def test_a_lead_without_timezone_takes_the_zone_of_its_number(ws):
    from drafts.sendwindow import lead_time_zones

    lead = lead_create(workspace=ws, timezone="", phone_e164="+14155552671")  # San Francisco
    assert [z.key for z in lead_time_zones(lead=lead, workspace=ws)] == ["America/Los_Angeles"]
    lead.phone_e164 = ""
    assert [z.key for z in lead_time_zones(lead=lead, workspace=ws)] == [ws.timezone]


# --- email ---------------------------------------------------------------------------------


def _emailbison_reply_draft(ws, *, thread_sender="7", reply_id="4242"):
    draft = _draft(ws, channel=Channel.EMAIL)
    message = draft.message
    message.emailbison_reply_id = reply_id
    message.save(update_fields=["emailbison_reply_id"])
    WebhookEvent.objects.create(
        workspace=ws,
        provider="emailbison",
        event_type="LEAD_REPLIED",
        message=message,
        body={
            "data": {"reply": {"id": int(reply_id)}, "sender_email": {"id": int(thread_sender), "email": "s@acme.test"}}
        },
        status="processed",
    )
    return draft


@pytest.mark.django_db
@responses.activate
def test_email_reply_through_a_dead_thread_sender_heals_and_goes_out_once(ws):
    draft = _emailbison_reply_draft(ws, thread_sender="7")
    SenderEmail.objects.create(workspace=ws, sender_id="7", is_sendable=True)
    SenderEmail.objects.create(workspace=ws, sender_id="8", is_sendable=True)
    responses.post(EB_REPLY.format(4242), status=422, json={"message": "The selected sender email id is invalid."})
    responses.post(EB_REPLY.format(4242), json={"data": {"id": 9001}})
    responses.get(EB_SENDERS, json={"data": [{"id": 8, "email": "b@acme.test", "status": "Connected"}]})

    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    assert [p["sender_email_id"] for p in _posts(EB)] == [7, 8]
    outbound = Message.objects.get(direction="outbound")
    assert (outbound.emailbison_reply_id, outbound.delivery, outbound.subject) == ("9001", "sent", "Re: roofs")
    assert IntegrationError.objects.filter(workspace=ws, source="emailbison", code="sender_invalid").exists()


@pytest.mark.django_db
@responses.activate
def test_email_with_every_sender_dead_fails_and_sends_nothing(ws):
    draft = _emailbison_reply_draft(ws)
    responses.get(EB_SENDERS, json={"data": [{"id": 7, "email": "a@acme.test", "status": "Disconnected"}]})
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.FAILED
    assert _posts() == []
    draft.refresh_from_db()
    assert (draft.status, draft.failure_reason) == (DraftStatus.FAILED, "no_sendable_sender")
    assert Message.objects.get(draft_source=draft).delivery == Delivery.FAILED
    assert IntegrationError.objects.filter(workspace=ws, source="emailbison", code="no_sendable_sender").exists()


@pytest.mark.django_db
@responses.activate
def test_email_that_came_through_ghl_is_answered_as_a_ghl_email(ws):
    draft = _draft(ws, channel=Channel.EMAIL)
    Message.objects.filter(pk=draft.message_id).update(emailbison_reply_id="", ghl_message_id="ghl-in-5")
    _sms_ok("ghl-email-out")
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    body = _posts(SEND_URL)[0]
    assert (body["type"], body["subject"], body["replyMessageId"]) == ("Email", "Re: roofs", "ghl-in-5")


# --- races with operators, opt-outs and the lead ---------------------------------------------


@pytest.mark.django_db
def test_a_draft_being_sent_cannot_be_edited_rejected_or_regenerated(ws):
    from drafts.services.actions import draft_edit, draft_regenerate, draft_reject

    draft = _draft(ws)
    _claimed(ws, draft)
    for action in (
        lambda d: draft_edit(draft=d, content="other text", subject=""),
        lambda d: draft_reject(draft=d),
        lambda d: draft_regenerate(draft=d),
    ):
        with pytest.raises(ValueError, match="being sent or was sent"):
            action(Draft.objects.get(pk=draft.pk))
    draft.refresh_from_db()
    assert (draft.status, draft.content) == (DraftStatus.APPROVED, "Tuesday 10am works?")
    assert Draft.objects.filter(message=draft.message).count() == 1


@pytest.mark.django_db
@responses.activate
def test_an_opt_out_during_the_call_cannot_unsend_and_a_stuck_send_is_settled_whatever_the_status(ws):
    from drafts.services.lifecycle import drafts_skip_for_blacklisted_lead

    draft = _draft(ws)

    def opted_out_meanwhile(request):
        drafts_skip_for_blacklisted_lead(lead_id=draft.lead_id, workspace_id=ws.pk)
        return 200, {}, json.dumps({"conversationId": "c", "messageId": "m-9"})

    responses.add_callback(responses.POST, SEND_URL, callback=opted_out_meanwhile)
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    assert Draft.objects.get(pk=draft.pk).status == DraftStatus.SENT  # it went out: the record says so

    stuck = _draft(ws)
    row = _claimed(ws, stuck)
    Draft.objects.filter(pk=stuck.pk).update(status=DraftStatus.SKIPPED)
    Message.objects.filter(pk=row.pk).update(created_at=timezone.now() - send_lease() - dt.timedelta(seconds=1))
    with mock.patch("drafts.sending.drafts_send_enqueue", side_effect=_handed) as enqueue:
        drafts_send_due()
    assert mock.call(draft_ids=[stuck.pk], workspace_id=ws.pk) in enqueue.call_args_list
    assert draft_send(draft_id=stuck.pk, workspace_id=ws.pk) == Outcome.UNCONFIRMED
    assert Message.objects.get(pk=row.pk).delivery == Delivery.UNCONFIRMED
    assert len(_posts(SEND_URL)) == 1


@pytest.mark.django_db
@responses.activate
def test_a_lead_who_wrote_again_after_the_approval_is_not_sent_the_old_reply(ws):
    draft = _draft(ws, status=DraftStatus.SCHEDULED)
    message_create(lead=draft.lead, body="Never mind, we found someone", sentiment="Not Interested")
    _sms_ok()
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.STALE
    draft.refresh_from_db()
    assert (draft.status, draft.failure_reason) == (DraftStatus.SUPERSEDED, "stale")
    assert _posts() == [] and not Message.objects.filter(direction="outbound").exists()

    # An out-of-office that arrived since is no reason to hold the reply back.
    other = _draft(ws)
    message_create(lead=other.lead, body="I am out of the office until Monday", sentiment="Out of Office")
    assert draft_send(draft_id=other.pk, workspace_id=ws.pk) == Outcome.SENT


@pytest.mark.django_db
@responses.activate
def test_an_unconfirmed_send_stays_open_for_the_operator_after_later_sends_succeed(ws):
    first = _draft(ws)
    responses.post(SEND_URL, status=502, json={"message": "Bad gateway"})
    assert draft_send(draft_id=first.pk, workspace_id=ws.pk) == Outcome.UNCONFIRMED
    responses.replace(responses.POST, SEND_URL, json={"conversationId": "c", "messageId": "m-2"})
    assert draft_send(draft_id=_draft(ws).pk, workspace_id=ws.pk) == Outcome.SENT
    assert IntegrationError.objects.filter(workspace=ws, code="send_unconfirmed", resolved_at=None).exists()


@pytest.mark.django_db
@responses.activate
def test_a_rate_limited_send_stays_approved_and_the_sweep_sends_it_later(ws, settings):
    settings.GHL_MAX_429_RETRIES = 0
    draft = _draft(ws)
    responses.post(SEND_URL, status=429, json={"message": "Too many requests"})
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.RATE_LIMITED
    draft.refresh_from_db()
    assert draft.status == DraftStatus.APPROVED and "rate limited" in draft.error
    assert Message.objects.get(draft_source=draft).delivery == Delivery.FAILED

    with mock.patch("drafts.sending.drafts_send_enqueue", side_effect=_handed) as enqueue:
        drafts_send_due()  # not yet: it waits DRAFT_SWEEP_AFTER_S
        assert enqueue.call_count == 0
        drafts_send_due(now=timezone.now() + dt.timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S + 1))
        enqueue.assert_called_once_with(draft_ids=[draft.pk], workspace_id=ws.pk)
    responses.replace(responses.POST, SEND_URL, json={"conversationId": "c", "messageId": "m-3"})
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    assert Message.objects.filter(draft_source=draft, delivery=Delivery.SENT).count() == 1


@pytest.mark.django_db
@responses.activate
def test_a_dead_sender_whose_list_cannot_be_read_fails_as_unsent_not_unconfirmed(ws):
    draft = _emailbison_reply_draft(ws, thread_sender="7")
    SenderEmail.objects.create(workspace=ws, sender_id="7", is_sendable=True)
    responses.post(EB_REPLY.format(4242), status=422, json={"message": "The selected sender email id is invalid."})
    responses.get(EB_SENDERS, status=503, json={"message": "down"})
    assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.FAILED
    draft.refresh_from_db()
    assert draft.failure_reason == "no_sendable_sender"
    assert len(_posts(EB)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_send_is_not_in_the_conversation_the_next_draft_reads(ws, fake_openai):
    from drafts.services.pipeline import message_classify_and_draft

    lead = lead_create(workspace=ws, timezone=midday_zone())
    first = message_create(lead=lead, body="Interested, tell me more", sentiment="Interested")
    for body, delivery in (("DELIVERED-REPLY-TEXT", Delivery.SENT), ("NEVER-LEFT-REPLY-TEXT", Delivery.FAILED)):
        Message.objects.create(
            workspace=ws,
            lead=lead,
            channel="sms",
            direction="outbound",
            body=body,
            sent_at=first.sent_at + dt.timedelta(seconds=1),
            origin="sent",
            delivery=delivery,
        )
    later = message_create(lead=lead, body="Yes, can we book Tuesday?", sent_at=first.sent_at + dt.timedelta(seconds=5))
    message_classify_and_draft(message_id=later.pk)
    prompts = json.dumps(fake_openai.requests)
    assert "DELIVERED-REPLY-TEXT" in prompts and "NEVER-LEFT-REPLY-TEXT" not in prompts


# --- the cost of a send ----------------------------------------------------------------------


@pytest.mark.django_db
@responses.activate
@pytest.mark.parametrize("channel", [Channel.SMS, Channel.EMAIL])
def test_a_send_takes_a_fixed_few_statements(ws, channel):
    """A click on a hundred drafts runs this a hundred times: each statement counts. The claim
    reads only ``CLAIM_FIELDS``; a column missing there would load on access, one query more."""
    if channel == Channel.SMS:
        draft = _draft(ws)
        _sms_ok()
    else:
        draft = _emailbison_reply_draft(ws)
        SenderEmail.objects.create(workspace=ws, sender_id="7", email="a@acme.test", is_sendable=True)
        responses.post(EB_REPLY.format(4242), json={"data": {"id": 9001}})
    with CaptureQueriesContext(connection) as queries:
        assert draft_send(draft_id=draft.pk, workspace_id=ws.pk) == Outcome.SENT
    # SMS: the claim (lock + read, earlier send, newer inbound, insert), the finish (row, draft,
    # lead's times, errors resolved) and the savepoints around them. Email: its sender's pick,
    # the thread's sender, the sends-today count and the sender errors resolved.
    assert len(queries) <= {Channel.SMS: 14, Channel.EMAIL: 18}[channel], [q["sql"][:80] for q in queries]


@pytest.mark.django_db
@responses.activate
def test_a_batch_of_sends_takes_as_many_statements_as_one(ws):
    """A click on a hundred drafts is a few batches: the claim and the sender pick are a few
    statements for the whole batch, and each group of calls that end together is finished in
    a fixed few; nothing is a statement a draft."""
    ids = itertools.count(9000)
    answer = lambda request: (200, {}, json.dumps({"messageId": f"m-{next(ids)}", "data": {"id": next(ids)}}))  # noqa: E731
    responses.add_callback(responses.POST, SEND_URL, callback=answer)
    responses.add_callback(responses.POST, re.compile(EB_REPLY.format(r"\d+")), callback=answer)
    SenderEmail.objects.create(workspace=ws, sender_id="7", email="a@acme.test", is_sendable=True)
    replies = itertools.count(5000)

    def email():
        return _emailbison_reply_draft(ws, reply_id=str(next(replies)))

    def statements(drafts):
        with CaptureQueriesContext(connection) as queries:
            outcomes = drafts_send(draft_ids=[d.pk for d in drafts], workspace_id=ws.pk)
        assert set(outcomes.values()) == {Outcome.SENT}
        sql = [q["sql"] for q in queries]
        # The calls end in groups as they come back (how many depends on the threads' timing).
        groups = sum(1 for q in sql if q.startswith('UPDATE "drafts_draft" SET "status"'))
        return len(sql), groups

    one, one_groups = statements([_draft(ws), email()])
    many, many_groups = statements([_draft(ws) for _ in range(10)] + [email() for _ in range(10)])
    # A group: its savepoint and release, the rows (in a savepoint of their own, for GHL's copy
    # of our message), the drafts, the leads' times, the errors it resolves.
    per_group = 8
    assert many - one <= (many_groups - one_groups) * per_group, (one, one_groups, many, many_groups)
    assert len(_posts(SEND_URL)) == 11 and len(_posts(EB)) == 11


# --- batches ---------------------------------------------------------------------------------


def _unique_answers():
    """Provider answers with an id of their own each (GHL messageId, EmailBison reply id)."""
    ids = itertools.count(9000)

    def answer(request):
        return 200, {}, json.dumps({"messageId": f"m-{next(ids)}", "data": {"id": next(ids)}})

    responses.add_callback(responses.POST, SEND_URL, callback=answer)
    responses.add_callback(responses.POST, re.compile(EB_REPLY.format(r"\d+")), callback=answer)


@pytest.mark.django_db
@responses.activate
def test_a_batch_gives_each_draft_its_own_outcome_and_sends_only_the_sendable(ws):
    _unique_answers()
    SenderEmail.objects.create(workspace=ws, sender_id="7", email="a@acme.test", is_sendable=True)
    sms, email = _draft(ws), _emailbison_reply_draft(ws, reply_id="6001")
    blacklisted = _draft(ws, status=DraftStatus.APPROVED)
    Lead.objects.filter(pk=blacklisted.lead_id).update(status=LeadStatus.BLACKLISTED, sentiment="Blacklist")
    night = _draft(ws, timezone="Pacific/Kiritimati")  # UTC+14: outside the window some of the day
    stale = _draft(ws)
    message_create(lead=stale.lead, body="Actually, Thursday instead?", sentiment="Meeting Request")
    rejected = _draft(ws, status=DraftStatus.REJECTED)
    already = _draft(ws)
    assert draft_send(draft_id=already.pk, workspace_id=ws.pk) == Outcome.SENT
    posts_before = len(_posts())

    ids = [d.pk for d in (sms, email, blacklisted, stale, rejected, already)]
    outcomes = drafts_send(draft_ids=[*ids, 999999], workspace_id=ws.pk)

    assert outcomes == {
        sms.pk: Outcome.SENT,
        email.pk: Outcome.SENT,
        blacklisted.pk: Outcome.SKIPPED,
        stale.pk: Outcome.STALE,
        rejected.pk: Outcome.NOT_SENDABLE,
        already.pk: Outcome.NOT_SENDABLE,
        999999: Outcome.NOT_SENDABLE,  # not a draft of this workspace
    }
    assert len(_posts()) - posts_before == 2
    for draft in (sms, email):
        draft.refresh_from_db()
        outbound = Message.objects.get(draft_source=draft)
        assert (draft.status, draft.sent_message_id, outbound.delivery) == (DraftStatus.SENT, outbound.pk, "sent")
    assert Message.objects.get(draft_source=email).emailbison_reply_id.isdigit()
    assert Message.objects.get(draft_source=sms).ghl_message_id.startswith("m-")
    assert Lead.objects.get(pk=sms.lead_id).last_outbound_at is not None
    assert not Message.objects.filter(draft_source__in=[blacklisted, stale, rejected]).exists()
    # The window's own rules are tested above; in a batch it is one more outcome.
    assert drafts_send(draft_ids=[night.pk], workspace_id=ws.pk)[night.pk] in (Outcome.SENT, Outcome.SCHEDULED)


@pytest.mark.django_db
@responses.activate
def test_a_batch_heals_a_dead_sender_once_for_all_the_replies_it_refused(ws):
    """Five replies whose thread went through sender 7 (dead: listed as connected, refusing):
    all five are refused at once, the sender list is read once, and each goes out through
    another sender exactly once."""
    for sender_id in ("7", "8", "9"):
        SenderEmail.objects.create(workspace=ws, sender_id=sender_id, email=f"s{sender_id}@acme.test", is_sendable=True)
    refused_by_7 = []

    def reply(request):
        body = json.loads(request.body)
        if body["sender_email_id"] == 7:
            refused_by_7.append(request.url)
            return 422, {}, json.dumps({"message": "The selected sender email id is invalid."})
        return 200, {}, json.dumps({"data": {"id": 7000 + len(_posts(EB))}})

    responses.add_callback(responses.POST, re.compile(EB_REPLY.format(r"\d+")), callback=reply)
    listing = [{"id": n, "email": f"s{n}@acme.test", "status": "Connected"} for n in (7, 8, 9)]
    responses.get(EB_SENDERS, json={"data": listing})
    drafts = [_emailbison_reply_draft(ws, thread_sender="7", reply_id=str(6100 + n)) for n in range(5)]
    drafts.append(_emailbison_reply_draft(ws, thread_sender="8", reply_id="6200"))

    outcomes = drafts_send(draft_ids=[d.pk for d in drafts], workspace_id=ws.pk)

    assert set(outcomes.values()) == {Outcome.SENT}
    assert len(refused_by_7) == 5
    assert [c.request.method for c in responses.calls].count("GET") == 1  # one heal for the batch
    posted = [(c.request.url, json.loads(c.request.body)) for c in responses.calls if c.request.method == "POST"]
    delivered = [(url, body["sender_email_id"]) for url, body in posted if body["sender_email_id"] != 7]
    assert len(delivered) == 6 and len({url for url, _ in delivered}) == 6  # each reply once
    assert not SenderEmail.objects.get(workspace=ws, sender_id="7").is_sendable
    counts = dict(SenderEmail.objects.filter(workspace=ws).values_list("sender_id", "sends_today"))
    assert counts["8"] + counts["9"] == 6 and counts["7"] == 0
    assert IntegrationError.objects.get(workspace=ws, code="sender_invalid").resolved_at is None


@pytest.mark.django_db
@responses.activate
def test_a_batch_with_every_sender_dead_fails_each_reply_reads_the_list_once_and_sends_nothing(ws):
    responses.get(EB_SENDERS, json={"data": [{"id": 7, "email": "a@acme.test", "status": "Disconnected"}]})
    drafts = [_emailbison_reply_draft(ws, reply_id=str(6300 + n)) for n in range(4)]
    outcomes = drafts_send(draft_ids=[d.pk for d in drafts], workspace_id=ws.pk)
    assert set(outcomes.values()) == {Outcome.FAILED}
    assert _posts() == [] and len(responses.calls) == 1  # the list, read once for the batch
    assert set(Draft.objects.filter(pk__in=[d.pk for d in drafts]).values_list("failure_reason", flat=True)) == {
        "no_sendable_sender"
    }
    error = IntegrationError.objects.get(workspace=ws, source="emailbison", code="no_sendable_sender")
    assert error.count == 1 and error.resolved_at is None


@pytest.mark.django_db
@responses.activate
def test_out_of_time_with_calls_in_flight_every_unfinished_send_is_unconfirmed(ws):
    """The task's soft limit strikes while the batch waits for its calls (Celery raises it in
    the task's thread): the calls may have gone out, so none of them is ever sent again."""
    from celery.exceptions import SoftTimeLimitExceeded

    _unique_answers()
    drafts = [_draft(ws) for _ in range(3)]
    with (
        mock.patch("drafts.sending.wait", side_effect=SoftTimeLimitExceeded()),
        pytest.raises(SoftTimeLimitExceeded),
    ):
        drafts_send(draft_ids=[d.pk for d in drafts], workspace_id=ws.pk)
    for draft in drafts:
        draft.refresh_from_db()
        assert (draft.status, draft.failure_reason) == (DraftStatus.FAILED, "send_unconfirmed")
        assert Message.objects.get(draft_source=draft).delivery == Delivery.UNCONFIRMED
    assert drafts_send(draft_ids=[d.pk for d in drafts], workspace_id=ws.pk) == dict.fromkeys(
        [d.pk for d in drafts], Outcome.NOT_SENDABLE
    )


@pytest.mark.django_db(transaction=True)
@responses.activate
def test_two_batches_over_the_same_drafts_at_once_send_each_draft_once(workspace):
    """Two tasks holding overlapping batches (a redelivery racing the original, two clicks):
    the claim locks the drafts in id order, so whichever claims second finds the sends."""

    def slow(request):
        time.sleep(0.3)
        return 200, {}, json.dumps({"messageId": f"m-{time.monotonic_ns()}"})

    responses.add_callback(responses.POST, SEND_URL, callback=slow)
    drafts = [_draft(workspace) for _ in range(6)]
    ids = [d.pk for d in drafts]
    batches = [ids[:4], list(reversed(ids[2:]))]
    results, barrier = [], threading.Barrier(2)

    def task(batch):
        barrier.wait()
        try:
            results.append(drafts_send(draft_ids=batch, workspace_id=workspace.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=task, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(_posts(SEND_URL)) == 6
    assert Message.objects.filter(draft_source__in=drafts).count() == 6
    for draft_id in ids[2:4]:  # in both batches: sent by one, in flight or done for the other
        assert sorted(result[draft_id] for result in results) in (
            [Outcome.IN_FLIGHT, Outcome.SENT],
            [Outcome.NOT_SENDABLE, Outcome.SENT],
        )
    assert set(Draft.objects.filter(pk__in=ids).values_list("status", flat=True)) == {DraftStatus.SENT}


@pytest.mark.django_db
def test_a_click_on_many_drafts_is_handed_over_in_batches_and_a_broker_failure_stops_it(settings):
    from drafts.sending import drafts_send_enqueue

    settings.DRAFT_SEND_BATCH_SIZE = 50
    with mock.patch("drafts.tasks.drafts_send.apply_async") as apply_async:
        assert drafts_send_enqueue(draft_ids=list(range(1, 121)), workspace_id=7) == 120
    assert [call.kwargs["args"] for call in apply_async.call_args_list] == [
        [list(range(1, 51)), 7],
        [list(range(51, 101)), 7],
        [list(range(101, 121)), 7],
    ]
    with mock.patch("drafts.tasks.drafts_send.apply_async", side_effect=[None, ConnectionError("broker down")]):
        assert drafts_send_enqueue(draft_ids=list(range(1, 121)), workspace_id=7) == 50  # the sweep sends the rest
