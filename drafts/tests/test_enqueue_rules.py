"""Enqueueing rules (the sweeper, broker back-off) that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from drafts.models import Draft, DraftStatus
from drafts.services.sweeper import DRAFT_ABANDON_AFTER, message_sweep_unprocessed
from leads.models import Lead, Sentiment
from messaging import services
from messaging.models import Message
from messaging.selectors import SWEEP_MAX_ENQUEUES
from messaging.services import message_work_enqueue
from workspaces.models import IntegrationError
from workspaces.services import integration_error_record

pytestmark = pytest.mark.django_db


def _lost_inbound(workspace, *, stored_s_ago: float, now=None) -> Message:
    """An inbound message whose classify+draft work was never enqueued."""
    now = now or timezone.now()
    lead = Lead.objects.create(workspace=workspace, email=f"lost{Message.objects.count()}@x.io")
    message = Message.objects.create(
        workspace=workspace, lead=lead, channel="sms", direction="inbound", body="hello", sent_at=now
    )
    Message.objects.filter(pk=message.pk).update(created_at=now - timedelta(seconds=stored_s_ago))
    return message


def test_a_workspace_with_nothing_lost_does_not_stop_the_sweep_of_the_next(workspace, other_workspace, enqueued):
    first, second = sorted([workspace, other_workspace], key=lambda ws: ws.pk)
    lost = _lost_inbound(second, stored_s_ago=120)

    assert message_sweep_unprocessed() == 1
    assert enqueued.calls == [lost.pk]


def test_the_sweeper_enqueues_at_most_limit_messages_per_workspace(workspace, enqueued):
    for _ in range(3):
        _lost_inbound(workspace, stored_s_ago=120)

    assert message_sweep_unprocessed(limit=2) == 2
    assert len(enqueued.calls) == 2


def test_the_default_grace_leaves_the_webhooks_own_enqueue_15_seconds(workspace, enqueued):
    now = timezone.now()
    just_stored = _lost_inbound(workspace, stored_s_ago=14.5, now=now)
    past_grace = _lost_inbound(workspace, stored_s_ago=15.5, now=now)

    assert message_sweep_unprocessed(now=now) == 1
    assert enqueued.calls == [past_grace.pk]
    assert just_stored.pk not in enqueued.calls


def test_the_sweeper_tries_the_broker_even_while_webhooks_back_off(workspace, enqueued):
    """A webhook's broker failure makes webhooks skip the broker for a few seconds; the
    sweeper (the only way lost work comes back) does not wait for that."""
    failed = _lost_inbound(workspace, stored_s_ago=120)
    enqueued.fail_with = OperationalError("Connection refused")
    assert message_work_enqueue(message_id=failed.pk, workspace_id=workspace.pk) is False
    enqueued.fail_with = None

    assert message_sweep_unprocessed() == 1
    assert enqueued.calls == [failed.pk]


def _inbound_with_open_draft(workspace, **message_fields) -> Message:
    """A classified inbound message whose draft waits for a task that was lost."""
    message = _lost_inbound(workspace, stored_s_ago=120)
    Message.objects.filter(pk=message.pk).update(
        sentiment=Sentiment.INTERESTED, classified_at=timezone.now(), **message_fields
    )
    Draft.objects.create(
        workspace=workspace, lead=message.lead, message=message, channel="sms", status=DraftStatus.PENDING
    )
    return message


def test_the_sweeper_hands_back_lost_drafts_within_its_limit_and_counts_them(workspace, enqueued, settings):
    first = _inbound_with_open_draft(workspace)
    _inbound_with_open_draft(workspace)
    later = timezone.now() + timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S + 60)

    assert message_sweep_unprocessed() == 0  # the drafts are not stale yet
    assert message_sweep_unprocessed(now=later, limit=1) == 1
    assert enqueued.calls == [first.pk]


def test_the_sweeper_logs_what_it_did(workspace, enqueued, settings, caplog):
    caplog.set_level(logging.INFO, logger="messaging.services")
    gave_up = _inbound_with_open_draft(
        workspace, work_enqueue_count=SWEEP_MAX_ENQUEUES, work_enqueued_at=timezone.now()
    )
    much_later = timezone.now() + DRAFT_ABANDON_AFTER + timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S + 60)
    assert message_sweep_unprocessed(now=much_later) == 0
    assert Draft.objects.get(message=gave_up).status == DraftStatus.FAILED
    lost = _lost_inbound(workspace, stored_s_ago=120)
    assert message_sweep_unprocessed() == 1
    assert enqueued.calls == [lost.pk]
    enqueued.fail_with = OperationalError("Connection refused")
    Message.objects.filter(pk=lost.pk).update(work_enqueued_at=None)
    assert message_sweep_unprocessed() == 0

    assert caplog.messages[0] == f"sweeper: 1 abandoned drafts failed in workspace {workspace.pk}"
    assert "sweeper: enqueued classify_and_draft for 1 messages" in caplog.messages
    assert caplog.messages[-1] == "sweeper: broker unavailable after 0 enqueues; next run retries"


def test_a_fresh_process_tries_the_broker_then_records_its_first_failure(workspace, enqueued, monkeypatch):
    monkeypatch.setattr(services, "broker_health", services._BrokerHealth())  # as a new worker process starts
    message = _lost_inbound(workspace, stored_s_ago=120)

    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk) is True
    enqueued.fail_with = OperationalError("Connection refused")
    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk, force=True) is False

    assert enqueued.calls == [message.pk]
    assert IntegrationError.objects.get(workspace=workspace, source="broker").code == "enqueue_failed"


class _Clock:
    """Stands in for ``time`` in messaging.services: the broker back-off reads ``monotonic()``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_broker_outage_is_recorded_again_exactly_once_a_minute(workspace, enqueued, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(services, "time", clock)
    message = _lost_inbound(workspace, stored_s_ago=120)
    enqueued.fail_with = OperationalError("Connection refused")

    def fail_at(t: float) -> int:
        clock.now = t
        assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk, force=True) is False
        return IntegrationError.objects.get(workspace=workspace, source="broker").count

    assert fail_at(1000.0) == 1
    assert fail_at(1000.0 + services.BROKER_ERROR_RECORD_EVERY_S - 0.5) == 1
    assert fail_at(1000.0 + services.BROKER_ERROR_RECORD_EVERY_S) == 2


def test_a_broker_outage_says_what_failed_in_the_error_and_the_log(workspace, enqueued, caplog):
    message = _lost_inbound(workspace, stored_s_ago=120)
    enqueued.fail_with = OperationalError("Connection refused " + "x" * 600)

    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk) is False

    error = IntegrationError.objects.get(workspace=workspace, source="broker")
    assert error.code == "enqueue_failed"
    assert error.message.startswith("Could not enqueue classify_and_draft: OperationalError: Connection refused x")
    assert len(error.message) == 500
    assert caplog.messages == ["classify_and_draft not enqueued (broker): OperationalError; the sweeper will retry"]


def test_an_outage_that_cannot_be_recorded_is_still_only_logged(workspace, enqueued, monkeypatch, caplog):
    def database_down(**kwargs):
        raise RuntimeError("database down too")

    monkeypatch.setattr(services, "integration_error_record", database_down)
    message = _lost_inbound(workspace, stored_s_ago=120)
    enqueued.fail_with = OperationalError("Connection refused")

    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk) is False

    assert caplog.messages[-1] == "could not record the broker error"
    assert caplog.records[-1].exc_info[0] is RuntimeError


def test_broker_successes_look_for_an_open_broker_error_at_most_once_a_minute(workspace, enqueued, monkeypatch):
    """Every webhook's enqueue succeeds: closing the broker error must not cost a write each time."""
    clock = _Clock()
    monkeypatch.setattr(services, "time", clock)
    message = _lost_inbound(workspace, stored_s_ago=120)

    def enqueue_at(t: float, *, fail: bool = False) -> None:
        clock.now = t
        enqueued.fail_with = OperationalError("Connection refused") if fail else None
        message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk, force=True)

    def open_errors() -> int:
        return IntegrationError.objects.filter(workspace=workspace, source="broker", resolved_at=None).count()

    enqueue_at(1000.0)
    enqueue_at(1010.0, fail=True)
    assert open_errors() == 1
    enqueue_at(1020.0)  # the first success after this process's failure closes it
    assert open_errors() == 0
    integration_error_record(workspace=workspace, source="broker", code="enqueue_failed", message="another process")
    enqueue_at(1040.0)  # checked 20 s ago: not again yet
    assert open_errors() == 1
    enqueue_at(1020.0 + services.BROKER_ERROR_RECORD_EVERY_S)
    assert open_errors() == 0


def test_a_broker_error_that_cannot_be_closed_is_only_logged(workspace, enqueued, monkeypatch, caplog):
    def database_down(**kwargs):
        raise RuntimeError("database down")

    monkeypatch.setattr(services, "integration_error_resolve", database_down)
    message = _lost_inbound(workspace, stored_s_ago=120)

    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk) is True

    assert caplog.messages == ["could not resolve the broker error"]
    assert caplog.records[0].exc_info[0] is RuntimeError


def test_after_a_broker_failure_webhooks_try_the_broker_again_once_the_pause_is_over(workspace, enqueued, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(services, "time", clock)
    message = _lost_inbound(workspace, stored_s_ago=120)
    enqueued.fail_with = OperationalError("Connection refused")
    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk) is False
    enqueued.fail_with = None

    clock.now += services.BROKER_RETRY_AFTER_S - 0.5
    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk) is False  # still paused
    clock.now += 0.5
    assert message_work_enqueue(message_id=message.pk, workspace_id=workspace.pk) is True
    assert enqueued.calls == [message.pk]
