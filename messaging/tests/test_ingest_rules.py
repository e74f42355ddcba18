"""Ingestion rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from leads.models import Lead, Sentiment
from messaging.models import Message
from messaging.services import message_provider_interest_note, message_sweep_unprocessed
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
    assert enqueued.calls[-1] == message.pk


def test_noting_interest_answers_the_message_as_written(workspace, enqueued, django_capture_on_commit_callbacks):
    _, message = _reply_classified_neutral(Client(), django_capture_on_commit_callbacks)
    lead = Lead.objects.get(pk=message.lead_id)

    noted = message_provider_interest_note(message=message, lead=lead)

    assert (noted.provider_interested, noted.sentiment, noted.work_enqueue_count) == (True, Sentiment.INTERESTED, 0)
    assert noted.work_enqueued_at is None
