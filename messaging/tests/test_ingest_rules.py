"""Ingestion rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from leads.models import Lead, Sentiment
from messaging.models import Message, WebhookEvent
from messaging.services import broker_health, message_provider_interest_note, message_sweep_unprocessed
from messaging.tests.factories import emailbison, post

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


def test_late_interest_with_the_broker_down_is_left_to_the_sweeper_at_once(
    workspace, enqueued, django_capture_on_commit_callbacks
):
    """The upgrade is a new job: its first enqueue failing, the sweeper takes it at its next
    run, not only once the reply's original enqueue has aged out."""
    client = Client()
    replied, message = _reply_classified_neutral(client, django_capture_on_commit_callbacks)
    enqueued.fail_with = OperationalError("Connection refused")

    with django_capture_on_commit_callbacks(execute=True):
        post(client, "emailbison", _interested(replied))

    message.refresh_from_db()
    assert (message.work_enqueued_at, message.work_enqueue_count) == (None, 0)
    enqueued.fail_with = None
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    assert message_sweep_unprocessed() == 1
    assert enqueued.calls == [message.pk, message.pk]  # the reply's own work, then the sweeper's


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
