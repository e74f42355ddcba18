from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from drafts.models import Draft
from drafts.services.sweeper import message_sweep_unprocessed
from drafts.tasks import sweep_unprocessed_messages
from leads.models import Lead
from messaging.models import Message

pytestmark = pytest.mark.django_db


def _message(workspace, *, age_s=120, direction="inbound", **fields):
    lead = fields.pop("lead", None) or Lead.objects.create(
        workspace=workspace, email=f"l{Message.objects.count()}@x.io"
    )
    message = Message.objects.create(
        workspace=workspace,
        lead=lead,
        channel="sms",
        direction=direction,
        body="hello",
        sent_at=timezone.now() - timedelta(seconds=age_s),
        **fields,
    )
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(seconds=age_s))
    return message


def test_sweeper_enqueues_only_lost_inbound_work(workspace, other_workspace, enqueued, settings):
    settings.DRAFT_SWEEP_AFTER_S = 120
    now = timezone.now()
    never_enqueued = _message(workspace)
    stale_enqueue = _message(workspace, work_enqueued_at=now - timedelta(seconds=300), work_enqueue_count=1)
    other_tenant = _message(other_workspace)
    _message(workspace, age_s=2)  # the webhook's own enqueue may still be in flight
    _message(workspace, work_enqueued_at=now - timedelta(seconds=30), work_enqueue_count=1)  # recently enqueued
    _message(workspace, direction="outbound")
    _message(workspace, classified_at=now)
    drafted = _message(workspace)
    Draft.objects.create(workspace=workspace, lead=drafted.lead, message=drafted, channel="sms")
    _message(workspace, work_enqueued_at=now - timedelta(hours=1), work_enqueue_count=5)  # gave up
    _message(workspace, age_s=3 * 86400)  # history, not live traffic

    assert sweep_unprocessed_messages() == 3
    assert sorted(enqueued.calls) == sorted([never_enqueued.pk, stale_enqueue.pk, other_tenant.pk])
    never_enqueued.refresh_from_db()
    assert never_enqueued.work_enqueued_at is not None and never_enqueued.work_enqueue_count == 1
    # Nothing is due again right after.
    assert message_sweep_unprocessed() == 0


def test_sweeper_stops_at_first_broker_failure_and_records_it(workspace, enqueued):
    from workspaces.models import IntegrationError

    _message(workspace)
    _message(workspace)
    enqueued.fail_with = OperationalError("Connection refused")
    assert message_sweep_unprocessed() == 0
    assert not Message.objects.filter(work_enqueued_at__isnull=False).exists()
    assert IntegrationError.objects.get(workspace=workspace, source="broker").count == 1


def test_soft_time_limit_is_not_mistaken_for_a_broker_outage(workspace, enqueued):
    from celery.exceptions import SoftTimeLimitExceeded

    from messaging.services import broker_health
    from workspaces.models import IntegrationError

    _message(workspace)
    enqueued.fail_with = SoftTimeLimitExceeded()
    with pytest.raises(SoftTimeLimitExceeded):
        message_sweep_unprocessed()
    assert not IntegrationError.objects.filter(workspace=workspace, source="broker").exists()
    assert broker_health.down_until == 0.0


def test_sweep_window_counts_from_when_leadline_received_the_message(workspace, enqueued):
    """The payload's date (a late redelivery, a wrong clock, a contact's creation date) does not
    decide: a message stored a minute ago is swept even when its provider date is a week old."""
    week_old_payload = _message(workspace, age_s=60)
    Message.objects.filter(pk=week_old_payload.pk).update(sent_at=timezone.now() - timedelta(days=7))
    stored_long_ago = _message(workspace, age_s=25 * 3600)
    Message.objects.filter(pk=stored_long_ago.pk).update(sent_at=timezone.now() - timedelta(minutes=5))

    assert message_sweep_unprocessed() == 1
    assert enqueued.calls == [week_old_payload.pk]


def test_imported_history_never_starts_draft_work(workspace, enqueued):
    """A sync imports old conversations just now: only an inbound recent by its own date is swept."""
    old_history = _message(workspace, age_s=60, origin="sync")
    Message.objects.filter(pk=old_history.pk).update(sent_at=timezone.now() - timedelta(days=3))
    recent_import = _message(workspace, age_s=60, origin="sync")

    assert message_sweep_unprocessed() == 1
    assert enqueued.calls == [recent_import.pk]
