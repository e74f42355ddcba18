"""``workspace_report --json``: the sections the apps above workspaces register (leads, messages,
drafts, speed to lead, senders), from known rows."""

import json

import pytest

from workspaces.tests.test_commands import run


@pytest.mark.django_db
def test_workspace_report_speed_to_lead_and_senders_from_known_rows(workspace):
    import datetime as dt

    from django.utils import timezone

    from drafts.models import Draft
    from emailbison.models import SenderEmail
    from leads.models import Lead
    from messaging.models import Message

    workspace.business_hours_start, workspace.business_hours_end = dt.time(0), dt.time(23, 59, 59)
    workspace.business_days = "0,1,2,3,4,5,6"
    workspace.save()
    now = timezone.now()
    lead = Lead.objects.create(workspace=workspace, email="w@example.com")
    waiting = Message.objects.create(
        workspace=workspace,
        lead=lead,
        channel="sms",
        direction="inbound",
        body="call me",
        sent_at=now,
        sentiment="Interested",
    )
    Message.objects.filter(pk=waiting.pk).update(created_at=now - dt.timedelta(minutes=20))
    Draft.objects.create(workspace=workspace, lead=lead, message=waiting, channel="sms", status="ready", content="hi")
    answered = Lead.objects.create(workspace=workspace, email="a@example.com")
    asked = Message.objects.create(
        workspace=workspace,
        lead=answered,
        channel="sms",
        direction="inbound",
        body="price?",
        sent_at=now,
        sentiment="Information Requested",
    )
    reply = Message.objects.create(
        workspace=workspace,
        lead=answered,
        channel="sms",
        direction="outbound",
        body="$99",
        sent_at=now,
        origin="sent",
        delivery="sent",
    )
    Message.objects.filter(pk=asked.pk).update(created_at=now - dt.timedelta(hours=2, minutes=3))
    Message.objects.filter(pk=reply.pk).update(created_at=now - dt.timedelta(hours=2))
    SenderEmail.objects.create(workspace=workspace, sender_id="1", is_sendable=True)
    SenderEmail.objects.create(workspace=workspace, sender_id="2", is_sendable=False)

    data = json.loads(run("workspace_report", "acme", "--json"))
    assert data["speed_to_lead"]["waiting"] == 1
    assert data["speed_to_lead"]["oldest_wait_s"] == pytest.approx(20 * 60, abs=5)
    # 3 minutes, less the one second a day the around-the-clock hours leave out when crossed.
    assert data["speed_to_lead"]["median_reply_s"] == pytest.approx(180, abs=1)
    assert data["senders"] == {"sendable": 1, "unsendable": 1}


@pytest.mark.django_db
def test_workspace_report_counts_leads_and_messages(workspace):
    from django.utils import timezone

    from leads.models import Lead
    from messaging.models import Message

    lead = Lead.objects.create(workspace=workspace, ghl_contact_id="c1", sentiment="Interested")
    Lead.objects.create(workspace=workspace, ghl_contact_id="c2")
    Message.objects.create(workspace=workspace, lead=lead, channel="sms", direction="inbound", sent_at=timezone.now())
    data = json.loads(run("workspace_report", "acme", "--json"))
    assert data["leads"] == 2
    assert data["leads_by_sentiment"] == {"Interested": 1, "New": 1}
    assert data["messages"] == {"inbound": 1, "outbound": 0}
