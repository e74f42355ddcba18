"""Speed-to-lead clocks, SLA breaches and the report's figures, from known timestamps."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import pytest
import responses
from django.utils import timezone

from drafts.tests.factories import lead_create
from inbox.businesstime import BusinessHours
from inbox.models import SlaBreach
from inbox.selectors import reply_history, running_clocks, speed_to_lead_summary
from inbox.services import sla_scan
from messaging.models import Message
from workspaces.models import IntegrationError

pytestmark = pytest.mark.django_db

NY = zoneinfo.ZoneInfo("America/New_York")
HOURS = BusinessHours(zone=NY, start=dt.time(9), end=dt.time(17), weekdays=frozenset(range(5)))


def ny(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=NY)


# --- business time -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "seconds"),
    [
        (ny(2030, 6, 12, 10, 0), ny(2030, 6, 12, 10, 7), 7 * 60),  # a Wednesday morning
        (ny(2030, 6, 12, 18, 0), ny(2030, 6, 13, 9, 5), 5 * 60),  # overnight
        (ny(2030, 6, 14, 16, 55), ny(2030, 6, 17, 9, 5), 10 * 60),  # Friday -> Monday: the weekend is free
        (ny(2030, 6, 15, 11, 0), ny(2030, 6, 16, 15, 0), 0),  # all weekend
        # DST ends Sun Nov 3, 2030: Friday 16:00 EDT -> Monday 10:00 EST is 1 h + 1 h.
        (ny(2030, 11, 1, 16, 0), ny(2030, 11, 4, 10, 0), 2 * 3600),
        # DST starts Sun Mar 10, 2030: same.
        (ny(2030, 3, 8, 16, 0), ny(2030, 3, 11, 10, 0), 2 * 3600),
    ],
)
def test_business_seconds(start, end, seconds):
    assert HOURS.seconds_between(start, end) == seconds


def test_hours_that_span_the_dst_change_count_real_seconds():
    around_the_clock = BusinessHours(zone=NY, start=dt.time(0), end=dt.time(23, 59, 59), weekdays=frozenset(range(7)))
    # Saturday 12:00 EST -> Monday 12:00 EDT across the spring-forward night: 47 real hours, all
    # inside the hours but for the two 1-second gaps at 23:59:59.
    start, end = ny(2030, 3, 9, 12, 0), ny(2030, 3, 11, 12, 0)
    assert (end - start.astimezone(dt.UTC)).total_seconds() == 47 * 3600
    assert around_the_clock.seconds_between(start, end) == 47 * 3600 - 2
    assert around_the_clock.add(ny(2030, 3, 10, 1, 30), 3600) == ny(2030, 3, 10, 3, 30).astimezone(dt.UTC)


def test_business_add_skips_nights_weekends_and_dst():
    assert HOURS.add(ny(2030, 6, 14, 16, 58), 5 * 60) == ny(2030, 6, 17, 9, 3).astimezone(dt.UTC)
    assert HOURS.add(ny(2030, 11, 1, 16, 58), 5 * 60) == ny(2030, 11, 4, 9, 3).astimezone(dt.UTC)
    assert HOURS.add(ny(2030, 6, 15, 3, 0), 0) == ny(2030, 6, 17, 9, 0).astimezone(dt.UTC)


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def notes_inline(monkeypatch):
    """The SLA note task runs at once, in the test's transaction (what a worker would do)."""
    from inbox.services import sla_breach_notify
    from inbox.tasks import sla_breach_notify as task

    sent = []

    def run(args=None, **options):
        sent.append(args[0])
        sla_breach_notify(breach_id=args[0], workspace_id=args[1])

    monkeypatch.setattr(task, "apply_async", run)
    return sent


@pytest.fixture
def ws(workspace):
    workspace.timezone = "America/New_York"
    workspace.sla_sms_minutes = 5
    workspace.sla_email_minutes = 30
    workspace.save()
    return workspace


def _msg(lead, at: dt.datetime, *, direction="inbound", channel="sms", sentiment="Interested", **fields):
    message = Message.objects.create(
        workspace=lead.workspace,
        lead=lead,
        channel=channel,
        direction=direction,
        body="hello",
        sent_at=at,
        sentiment=sentiment if direction == "inbound" else "",
        **fields,
    )
    Message.objects.filter(pk=message.pk).update(created_at=at)  # when Leadline received it
    return message


# --- clocks ------------------------------------------------------------------------------------------


def test_machine_replies_and_opt_outs_start_no_clock(ws):
    t = ny(2030, 6, 12, 10, 0)
    ooo = lead_create(workspace=ws)
    _msg(ooo, t, sentiment="Out of Office")
    auto = lead_create(workspace=ws)
    _msg(auto, t, sentiment="Automated Reply")
    stop = lead_create(workspace=ws)
    _msg(stop, t, sentiment="Blacklist")
    person = lead_create(workspace=ws)
    first = _msg(person, t)
    _msg(person, t + dt.timedelta(minutes=3))  # a second message does not restart the clock
    assert [(c.lead_id, c.message_id) for c in running_clocks(workspace_id=ws.pk)] == [(person.pk, first.pk)]


def test_an_answer_stops_the_clock_and_a_reopened_thread_starts_a_new_one(ws):
    lead = lead_create(workspace=ws)
    t = ny(2030, 6, 12, 10, 0)
    _msg(lead, t)
    _msg(lead, t + dt.timedelta(minutes=4), direction="outbound", origin="sent", delivery="sent")
    assert running_clocks(workspace_id=ws.pk) == []
    reopened = _msg(lead, t + dt.timedelta(minutes=30))
    assert [c.message_id for c in running_clocks(workspace_id=ws.pk)] == [reopened.pk]
    # Our failed or unconfirmed send is no answer.
    _msg(lead, t + dt.timedelta(minutes=31), direction="outbound", origin="sent", delivery="failed")
    assert [c.message_id for c in running_clocks(workspace_id=ws.pk)] == [reopened.pk]


# --- SLA breaches ----------------------------------------------------------------------------------


def test_sla_breach_raised_over_a_weekend_and_dst_then_resolved_when_we_reply(ws, mailoutbox, notes_inline):
    ws.sla_notify_email = "manager@acme.test"
    ws.save()
    lead = lead_create(workspace=ws)
    # Friday 16:58 EDT before DST ends: 2 business minutes on Friday, the rest Monday (EST).
    inbound = _msg(lead, ny(2030, 11, 1, 16, 58))
    assert sla_scan(now=ny(2030, 11, 3, 12, 0)).breached == 0  # Sunday: no business time passes
    assert sla_scan(now=ny(2030, 11, 4, 9, 2)).breached == 0  # Monday 09:02: 4 business minutes
    result = sla_scan(now=ny(2030, 11, 4, 9, 3, 30))
    assert result.breached == 1
    breach = SlaBreach.objects.get()
    assert (breach.lead_id, breach.message_id, breach.channel) == (lead.pk, inbound.pk, "sms")
    assert breach.due_at == ny(2030, 11, 4, 9, 3)
    error = IntegrationError.objects.get(workspace=ws, source="speed_to_lead", code="sla_breached")
    assert error.resolved_at is None and error.context["lead_ids"] == [lead.pk]
    assert len(mailoutbox) == 1 and "hello" not in mailoutbox[0].body  # no message text
    assert SlaBreach.objects.get().notified_at is not None
    assert sla_scan(now=ny(2030, 11, 4, 9, 10)).breached == 0  # one breach per clock

    _msg(lead, ny(2030, 11, 4, 9, 12), direction="outbound", origin="sent", delivery="sent")
    assert sla_scan(now=ny(2030, 11, 4, 9, 13)).resolved == 1
    assert SlaBreach.objects.get().resolved_at == ny(2030, 11, 4, 9, 13)
    error.refresh_from_db()
    assert error.resolved_at is not None


def test_email_has_its_own_sla_and_machine_replies_never_breach(ws):
    t = ny(2030, 6, 12, 10, 0)
    email_lead = lead_create(workspace=ws)
    _msg(email_lead, t, channel="email")
    _msg(lead_create(workspace=ws), t, sentiment="Out of Office")
    assert sla_scan(now=t + dt.timedelta(minutes=29)).breached == 0
    assert sla_scan(now=t + dt.timedelta(minutes=31)).breached == 1
    assert list(SlaBreach.objects.values_list("lead_id", flat=True)) == [email_lead.pk]


def test_a_breach_resolves_when_the_message_turns_out_to_be_a_machine_reply(ws):
    lead = lead_create(workspace=ws)
    t = ny(2030, 6, 12, 10, 0)
    message = _msg(lead, t, sentiment="")
    sla_scan(now=t + dt.timedelta(minutes=6))
    Message.objects.filter(pk=message.pk).update(sentiment="Automated Reply")
    assert sla_scan(now=t + dt.timedelta(minutes=7)).resolved == 1


@responses.activate
def test_the_webhook_note_carries_no_text_keeps_its_secret_path_and_is_retried_a_few_times(ws, notes_inline):
    hook = "https://hooks.acme.test/services/T000/B000/s3cr3tPathToken"
    ws.sla_notify_webhook_url = hook
    ws.save()
    responses.post(hook, status=500)
    lead = lead_create(workspace=ws)
    t = ny(2030, 6, 12, 10, 0)
    _msg(lead, t)
    for minute in (6, 7, 8, 9, 10):
        sla_scan(now=t + dt.timedelta(minutes=minute))
    note = json.loads(responses.calls[0].request.body)
    assert note["lead_id"] == lead.pk and note["sla_minutes"] == 5 and "hello" not in json.dumps(note)
    error = IntegrationError.objects.get(workspace=ws, code="notify_failed", resolved_at=None)
    assert "s3cr3tPathToken" not in error.message and "hooks.acme.test" in error.message
    breach = SlaBreach.objects.get()
    assert breach.notified_at is None and breach.notify_attempts == 3
    assert len(notes_inline) == 3  # three attempts over three scans, then it stops

    responses.replace(responses.POST, hook, status=200)
    other = lead_create(workspace=ws)
    _msg(other, t + dt.timedelta(minutes=10))
    sla_scan(now=t + dt.timedelta(minutes=16))
    assert SlaBreach.objects.get(lead=other).notified_at is not None
    error.refresh_from_db()
    assert error.resolved_at is not None


# --- the report's figures ----------------------------------------------------------------------------


def test_report_figures_from_known_timestamps(ws):
    now = ny(2030, 6, 14, 16, 0)  # a Friday afternoon
    waits_min = [2, 4, 6, 10, 60]  # business minutes to our reply, one lead each, this week
    for i, minutes in enumerate(waits_min):
        lead = lead_create(workspace=ws)
        start = ny(2030, 6, 10 + i % 4, 10, 0)
        _msg(lead, start)
        _msg(lead, start + dt.timedelta(minutes=minutes), direction="outbound", origin="sent", delivery="sent")
    # Answered 8 days ago: outside the 7 days.
    old = lead_create(workspace=ws)
    _msg(old, now - dt.timedelta(days=8))
    _msg(
        old, now - dt.timedelta(days=8) + dt.timedelta(minutes=90), direction="outbound", origin="sent", delivery="sent"
    )
    # An out-of-office answered by nobody starts no clock; a machine reply between does not count.
    _msg(lead_create(workspace=ws), now - dt.timedelta(hours=1), sentiment="Out of Office")

    summary = speed_to_lead_summary(workspace=ws, now=now)
    assert summary["median_reply_s"] == 6 * 60
    assert summary["p90_reply_s"] == 60 * 60
    assert summary["waiting"] == 0 and summary["oldest_wait_s"] is None

    days = {d.day: d for d in reply_history(workspace=ws, now=now)}
    assert days[dt.date(2030, 6, 10)].replies_sent == 2  # leads 0 and 4 answered Monday
    assert days[dt.date(2030, 6, 10)].median_reply_s == (2 * 60 + 60 * 60) / 2
    assert days[dt.date(2030, 6, 11)].median_reply_s == 4 * 60


def test_report_waiting_and_oldest_wait_come_from_ready_drafts(ws):
    from drafts.models import Draft

    now = timezone.now()
    lead = lead_create(workspace=ws)
    message = _msg(lead, now - dt.timedelta(minutes=42))
    Draft.objects.create(workspace=ws, lead=lead, message=message, channel="sms", status="ready", content="hi")
    summary = speed_to_lead_summary(workspace=ws, now=now)
    assert summary["waiting"] == 1 and summary["oldest_wait_s"] == pytest.approx(42 * 60, abs=1)


def test_only_messages_awaiting_an_answer_run_a_clock_and_campaign_emails_answer_nothing(ws):
    from drafts.models import Draft

    t = ny(2030, 6, 12, 10, 0)
    _msg(lead_create(workspace=ws), t, sentiment="Not Interested")
    _msg(lead_create(workspace=ws), t, sentiment="Neutral")
    rejected_lead = lead_create(workspace=ws)
    rejected = _msg(rejected_lead, t)
    Draft.objects.create(workspace=ws, lead=rejected_lead, message=rejected, channel="sms", status="rejected")
    campaign_lead = lead_create(workspace=ws)
    waiting = _msg(campaign_lead, t, channel="email")
    # An EmailBison campaign step (EMAIL_SENT) after the reply is no answer to it.
    _msg(campaign_lead, t + dt.timedelta(minutes=1), direction="outbound", channel="email")
    # A reply a person sent from GHL's own inbox is one.
    ghl_lead = lead_create(workspace=ws)
    _msg(ghl_lead, t)
    _msg(ghl_lead, t + dt.timedelta(minutes=2), direction="outbound", ghl_message_id="ghl-out-77")
    # History older than the lookback is not waited on.
    _msg(lead_create(workspace=ws), t - dt.timedelta(days=9))

    assert [c.message_id for c in running_clocks(workspace_id=ws.pk, now=t + dt.timedelta(minutes=5))] == [waiting.pk]
