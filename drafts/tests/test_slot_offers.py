"""The slots a reply offers: none this lead was offered before (by a draft it saw)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from availability.tests.test_selectors import cache, local, make_lead, next_monday, starts_of
from drafts.models import Draft
from drafts.selectors import slots_to_offer
from messaging.models import Message

pytestmark = pytest.mark.django_db


def offered_draft(workspace, lead, slots, status="sent") -> Draft:
    message = Message.objects.create(
        workspace=workspace, lead=lead, channel="sms", direction="inbound", body="hi", sent_at=timezone.now()
    )
    return Draft.objects.create(
        workspace=workspace, lead=lead, message=message, channel="sms", status=status, offered_slots=slots
    )


def test_slots_already_offered_to_this_lead_are_not_offered_again(workspace):
    monday = next_monday()
    tuesday = monday + dt.timedelta(days=1)
    cache(workspace, [local(monday, 9), local(monday, 10), local(tuesday, 9)])
    lead = make_lead(workspace)
    other = make_lead(workspace, first_name="Other")
    offered_draft(workspace, lead, [{"start_utc": local(monday, 9).astimezone(dt.UTC).isoformat(), "label": "x"}])
    # A draft the lead never saw does not count as declined.
    offered_draft(workspace, lead, [{"start_utc": local(tuesday, 9).astimezone(dt.UTC).isoformat()}], "rejected")
    offered_draft(workspace, other, [{"start_utc": local(monday, 10).astimezone(dt.UTC).isoformat()}])

    assert starts_of(slots_to_offer(workspace=workspace, lead=lead, count=3)) == [
        local(monday, 10),
        local(tuesday, 9),
    ]
    assert local(monday, 9) in starts_of(slots_to_offer(workspace=workspace, lead=other, count=3))
