"""Ingestion rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

import math

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from leads.models import Lead, Sentiment
from messaging.models import Message, WebhookEvent
from messaging.services import broker_health, message_provider_interest_note
from messaging.tests.factories import emailbison, ghl_custom, ghl_inbound, iso_ago, post

pytestmark = pytest.mark.django_db


def _reply_classified_neutral(client, capture) -> tuple[dict, Message]:
    replied = emailbison("LEAD_REPLIED")
    with capture(execute=True):
        post(client, "emailbison", replied)
    message = Message.objects.get(emailbison_reply_id=str(replied["data"]["reply"]["id"]))
    Message.objects.filter(pk=message.pk).update(sentiment=Sentiment.NEUTRAL, classified_at=timezone.now())
    return replied, message


def _interested(replied: dict) -> dict:
    return {"event": {**replied["event"], "type": "LEAD_INTERESTED"}, "data": replied["data"]}


def test_late_interest_flags_only_that_reply(workspace, enqueued, django_capture_on_commit_callbacks):
    client = Client()
    replied, message = _reply_classified_neutral(client, django_capture_on_commit_callbacks)
    _, other = _reply_classified_neutral(client, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        post(client, "emailbison", _interested(replied))

    message.refresh_from_db()
    other.refresh_from_db()
    assert (message.provider_interested, message.sentiment) == (True, Sentiment.INTERESTED)
    assert (other.provider_interested, other.sentiment) == (False, Sentiment.NEUTRAL)


def test_noting_interest_answers_the_message_as_written(workspace, enqueued, django_capture_on_commit_callbacks):
    _, message = _reply_classified_neutral(Client(), django_capture_on_commit_callbacks)
    lead = Lead.objects.get(pk=message.lead_id)

    noted = message_provider_interest_note(message=message, lead=lead)

    assert (noted.provider_interested, noted.sentiment, noted.work_enqueue_count) == (True, Sentiment.INTERESTED, 0)
    assert noted.work_enqueued_at is None


def test_a_rejected_delivery_is_stored_whole_for_the_admin(workspace, enqueued):
    payload = emailbison("LEAD_REPLIED")
    del payload["data"]["reply"]["id"]

    response = post(Client(), "emailbison", payload, **{"X-Request-Id": "req-42"})

    assert response.status_code == 400
    event = WebhookEvent.objects.get(workspace=workspace)
    assert (event.provider, event.event_type, event.status) == ("emailbison", "LEAD_REPLIED", "rejected")
    assert event.body == payload
    assert event.headers.get("X-Request-Id") == "req-42"
    assert event.processed_at is not None and event.reprocessable is True


def test_late_interest_is_enqueued_even_while_webhooks_back_off_from_the_broker(
    workspace, enqueued, django_capture_on_commit_callbacks
):
    client = Client()
    replied, message = _reply_classified_neutral(client, django_capture_on_commit_callbacks)
    broker_health.down_until = math.inf  # a webhook's enqueue just failed: webhooks skip the broker

    with django_capture_on_commit_callbacks(execute=True):
        post(client, "emailbison", _interested(replied))

    assert enqueued.calls == [message.pk, message.pk]  # the reply's own work, then the upgrade's


def test_a_refused_enqueue_leaves_the_message_to_the_sweeper_as_never_enqueued(
    workspace, enqueued, django_capture_on_commit_callbacks
):
    enqueued.fail_with = OperationalError("Connection refused")

    with django_capture_on_commit_callbacks(execute=True):
        reply = post(Client(), "emailbison", emailbison("LEAD_REPLIED")).json()

    message = Message.objects.get(pk=reply["message_id"])
    assert (message.work_enqueued_at, message.work_enqueue_count) == (None, 0)


def test_a_known_provider_message_id_is_a_duplicate_whatever_its_text(workspace, enqueued):
    client = Client()
    first = post(client, "ghl", ghl_inbound(messageId="m-edited", contactId="c-2", body="Yes please")).json()

    again = post(client, "ghl", ghl_inbound(messageId="m-edited", contactId="c-2", body="Yes please!! (edited)")).json()

    assert again == {**first, "status": "duplicate"}
    assert Message.objects.count() == 1


def test_provider_message_ids_are_unique_per_workspace_only(workspace, other_workspace, enqueued):
    lead = Lead.objects.create(workspace=other_workspace, ghl_contact_id="c-other")
    Message.objects.create(
        workspace=other_workspace, lead=lead, channel="sms", direction="inbound", body="hi",
        sent_at=timezone.now(), ghl_message_id="m-shared",
    )  # fmt: skip
    client = Client()
    first = post(client, "ghl", ghl_inbound(messageId="m-shared", contactId="c-1")).json()

    again = post(client, "ghl", ghl_inbound(messageId="m-shared", contactId="c-1", webhookId="wh-again")).json()

    assert again == {**first, "status": "duplicate"}
    assert Message.objects.filter(workspace=workspace).count() == 1


def test_the_same_reply_by_another_event_keeps_the_interest_flag_as_it_was(workspace, enqueued):
    client = Client()
    replied = emailbison("LEAD_REPLIED")
    post(client, "emailbison", replied)

    untracked = {"event": {**replied["event"], "type": "UNTRACKED_REPLY_RECEIVED"}, "data": replied["data"]}
    assert post(client, "emailbison", untracked).json()["status"] == "duplicate"

    assert Message.objects.get().provider_interested is False


def test_two_leads_saying_the_same_within_a_minute_are_two_messages(workspace, enqueued):
    client = Client()
    first = post(client, "ghl", ghl_custom(contact_id="cw-a", email="a@x.io", phone="")).json()
    second = post(client, "ghl", ghl_custom(contact_id="cw-b", email="b@x.io", phone="")).json()

    assert (first["status"], second["status"]) == ("created", "created")
    assert first["lead_id"] != second["lead_id"] and Message.objects.count() == 2


def test_an_older_copy_delivered_after_a_newer_message_is_kept(workspace, enqueued):
    client = Client()
    newer = post(client, "ghl", ghl_custom(date_created=iso_ago(minutes=1))).json()

    older = post(client, "ghl", ghl_custom(date_created=iso_ago(minutes=5))).json()

    assert older["status"] == "created" and older["message_id"] != newer["message_id"]


def test_a_second_opt_out_of_a_blacklisted_lead_is_a_duplicate(workspace, enqueued):
    client = Client()
    bounced = emailbison("EMAIL_BOUNCED")
    first = post(client, "emailbison", bounced).json()
    unsubscribed = emailbison("LEAD_UNSUBSCRIBED", lead=bounced["data"]["lead"])

    second = post(client, "emailbison", unsubscribed).json()

    assert first["status"] == "created"
    assert second == {"status": "duplicate", "message_id": None, "lead_id": first["lead_id"]}
