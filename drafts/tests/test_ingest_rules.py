"""Ingestion rules whose effect is on drafts' side: an opt-out skips the lead's drafts; a late
interest flag is left to the sweeper when the broker refuses it (messaging/tests/test_ingest_rules.py
has the rest)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from drafts.models import Draft, DraftStatus
from drafts.services.sweeper import message_sweep_unprocessed
from messaging.models import Message
from messaging.tests.factories import emailbison, post
from messaging.tests.test_ingest_rules import _interested, _reply_classified_neutral

pytestmark = pytest.mark.django_db


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


def test_an_opt_out_skips_the_leads_drafts_waiting_for_review(workspace, enqueued, django_capture_on_commit_callbacks):
    client = Client()
    replied = emailbison("LEAD_REPLIED")
    with django_capture_on_commit_callbacks(execute=True):
        post(client, "emailbison", replied)
    message = Message.objects.get()
    draft = Draft.objects.create(
        workspace=workspace, lead=message.lead, message=message, channel="email", status=DraftStatus.READY
    )

    post(client, "emailbison", emailbison("LEAD_UNSUBSCRIBED", lead=replied["data"]["lead"]))

    draft.refresh_from_db()
    assert (draft.status, draft.failure_reason) == (DraftStatus.SKIPPED, "blacklisted")
