"""Webhook event log rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

import pytest
from django.test import Client

from messaging.models import Message, WebhookEvent
from messaging.serializers import ghl_delivery_parse
from messaging.services import (
    IngestResult,
    WebhookEventNotReprocessable,
    webhook_delivery_ingest,
    webhook_event_log,
    webhook_event_reprocess,
)
from messaging.tests.factories import ghl_inbound, post

pytestmark = pytest.mark.django_db


def test_a_body_that_is_not_json_is_stored_without_an_event_type(workspace):
    assert post(Client(), "ghl", b'{"type": "InboundMessage",').status_code == 400

    event = WebhookEvent.objects.get(workspace=workspace)
    assert (event.status, event.event_type, event.body) == ("rejected", "", None)


def test_an_event_log_that_cannot_be_written_is_logged_and_the_answer_stands(workspace, monkeypatch, caplog):
    def database_down(**fields):
        raise RuntimeError("database down")

    monkeypatch.setattr(WebhookEvent.objects, "create", database_down)

    logged = webhook_event_log(
        workspace_id=workspace.pk, provider="ghl", event_type="x", body={}, headers={}, status="rejected", error="e"
    )

    assert logged is None
    assert caplog.messages == ["could not log the rejected webhook delivery"]
    assert caplog.records[0].exc_info[0] is RuntimeError


def test_reprocessing_rewrites_only_that_event(workspace, enqueued):
    post(Client(), "ghl", ghl_inbound(contactId=None))  # rejected: no contact
    other = WebhookEvent.objects.get()
    event = WebhookEvent.objects.create(
        workspace=workspace, provider="ghl", body=ghl_inbound(), status="failed", error="OperationalError"
    )

    result = webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)

    event.refresh_from_db()
    message = Message.objects.get()
    assert result == IngestResult("created", message.pk, message.lead_id, event.pk)
    assert event.status == "processed"
    assert (event.message_id, event.lead_id, event.error) == (message.pk, message.lead_id, "")
    assert event.processed_at is not None
    assert WebhookEvent.objects.get(pk=other.pk).status == "rejected"


def test_reprocessing_a_delivery_that_is_ignored_answers_no_message_and_no_lead(workspace, enqueued):
    event = WebhookEvent.objects.create(
        workspace=workspace, provider="ghl", body=ghl_inbound(messageType="CALL"), status="failed"
    )

    result = webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)

    assert result == IngestResult("ignored", None, None, event.pk)
    assert WebhookEvent.objects.get(pk=event.pk).status == "ignored"


def test_reprocessing_a_body_that_is_still_invalid_rejects_that_event(workspace):
    event = WebhookEvent.objects.create(workspace=workspace, provider="ghl", body={"type": "InboundMessage"})

    result = webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)

    event.refresh_from_db()
    assert (result.status, result.message_id, result.lead_id, result.event_id) == ("ignored", None, None, event.pk)
    assert event.status == "rejected" and event.error and event.processed_at is not None


def test_reprocessing_never_reaches_another_workspaces_event(workspace, other_workspace, enqueued):
    event = WebhookEvent.objects.create(workspace=workspace, provider="ghl", body=ghl_inbound(), status="failed")

    with pytest.raises(WebhookEvent.DoesNotExist):
        webhook_event_reprocess(event_id=event.pk, workspace_id=other_workspace.pk)
    assert Message.objects.count() == 0


def test_a_refused_reprocess_names_the_event(workspace):
    event = WebhookEvent.objects.create(workspace=workspace, provider="ghl", body=ghl_inbound(), reprocessable=False)

    with pytest.raises(WebhookEventNotReprocessable, match=f"webhook event #{event.pk} failed its signature checks"):
        webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)


def test_a_replayed_delivery_is_logged_as_a_duplicate_of_its_original(workspace, enqueued):
    payload = ghl_inbound(webhookId="wh-replayed-1")
    first = post(Client(), "ghl", payload, **{"X-Request-Id": "req-1"}).json()

    second = post(Client(), "ghl", payload, **{"X-Request-Id": "req-2"}).json()

    assert second == {**first, "status": "duplicate"}
    original, copy = WebhookEvent.objects.order_by("id")
    assert (copy.provider, copy.event_type, copy.status) == ("ghl", "InboundMessage", "duplicate")
    assert copy.error == f"duplicate of webhook event #{original.pk}"
    assert (copy.message_id, copy.lead_id) == (original.message_id, original.lead_id)
    assert copy.body == payload and copy.headers.get("X-Request-Id") == "req-2"
    assert copy.processed_at is not None


def test_ingesting_a_replayed_delivery_answers_the_copys_event(workspace, enqueued):
    delivery = ghl_delivery_parse(ghl_inbound(webhookId="wh-replayed-2"))

    def ingest():
        return webhook_delivery_ingest(
            workspace_id=workspace.pk, provider="ghl", delivery=delivery, body={}, headers={}
        )

    first = ingest()
    second = ingest()

    original, copy = WebhookEvent.objects.order_by("id")
    assert first == IngestResult("created", Message.objects.get().pk, first.lead_id, original.pk)
    assert second == IngestResult("duplicate", first.message_id, first.lead_id, copy.pk)


def test_a_processed_delivery_is_stored_whole_with_its_outcome(workspace, enqueued):
    payload = ghl_inbound()

    answer = post(Client(), "ghl", payload, **{"X-Request-Id": "req-7"}).json()

    event = WebhookEvent.objects.get(workspace=workspace)
    assert (event.provider, event.event_type, event.status) == ("ghl", "InboundMessage", "processed")
    assert (event.message_id, event.lead_id) == (answer["message_id"], answer["lead_id"])
    assert event.body == payload and event.headers.get("X-Request-Id") == "req-7"
    assert event.processed_at is not None


def test_an_ignored_delivery_keeps_why_it_was_ignored(workspace, enqueued):
    assert post(Client(), "ghl", ghl_inbound(messageType="CALL")).json()["status"] == "ignored"

    event = WebhookEvent.objects.get(workspace=workspace)
    assert (event.status, event.error) == ("ignored", "messageType 'CALL' is not SMS or Email")
