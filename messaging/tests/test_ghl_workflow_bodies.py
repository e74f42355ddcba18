"""GHL workflow / Custom Webhook bodies, as people type them: each is either stored with the
right contact, text, channel, direction and time, or refused (400) naming what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from leads.models import Lead
from messaging.models import Message, WebhookEvent
from messaging.serializers import ghl_workflow_read
from messaging.tests.factories import ghl_custom, ghl_inbound, post

pytestmark = pytest.mark.django_db

LOCATION = "LOC_ACME_123"
# A fixed distance before now, at millisecond precision (what every format below can carry).
WHEN = (datetime.now(UTC) - timedelta(minutes=7)).replace(microsecond=123000)
ISO = WHEN.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Stored:
    text: str
    channel: str = "sms"
    direction: str = "inbound"
    contact_id: str = ""
    phone: str = ""  # E.164, when the lead is known by phone
    email: str = ""
    sent_at: datetime | None = WHEN  # None: "now" (the body gives no usable time)


@dataclass(frozen=True)
class Refused:
    fragments: tuple[str, ...]


CASES: list[tuple[str, dict[str, Any], Stored | Refused]] = [
    (
        "marketplace InboundMessage (strict path)",
        ghl_inbound(contactId="mp-1", messageId="mp-msg-1", body="Quote please", dateAdded=ISO),
        Stored("Quote please", contact_id="mp-1"),
    ),
    (
        "standard workflow webhook (snake_case, message object, numeric type)",
        ghl_custom(contact_id="wf-1", message={"type": 2, "body": "Call me"}, date_created=ISO),
        Stored("Call me", contact_id="wf-1", phone="+14155552671", email="jane.doe@example.com"),
    ),
    (
        "type InboundMessage with message as a string (main answered 'type: is required')",
        {"type": "InboundMessage", "locationId": LOCATION, "contactId": "cw-2", "phone": "+14155550111",
         "message": "Is this still available?", "dateAdded": ISO},
        Stored("Is this still available?", contact_id="cw-2", phone="+14155550111"),
    ),
    (
        "top-level contactId with a message object (main answered 'contact_id: is required')",
        {"contactId": "cw-3", "location": {"id": LOCATION}, "message": {"type": "SMS", "body": "Yes"},
         "date_created": ISO},
        Stored("Yes", contact_id="cw-3"),
    ),
    (
        "contact object, messageBody, named Email channel, naive time read as UTC",
        {"locationId": LOCATION, "contact": {"id": "cw-4", "email": "Ann@Example.com", "firstName": "Ann"},
         "messageBody": "Send me the brochure", "messageType": "Email",
         "dateAdded": WHEN.replace(tzinfo=None).isoformat(timespec="milliseconds")},
        Stored("Send me the brochure", channel="email", contact_id="cw-4", email="ann@example.com"),
    ),
    (
        "contact.contactId, channel key, message.timestamp in epoch milliseconds",
        {"locationId": LOCATION, "contact": {"contactId": "cw-5"}, "body": "ok", "channel": "sms",
         "message": {"timestamp": int(WHEN.timestamp() * 1000)}},
        Stored("ok", contact_id="cw-5"),
    ),
    (
        "numeric type as a string and TYPE_* name agree",
        {"locationId": LOCATION, "contact_id": "cw-6", "email": "bo@example.com",
         "message": {"type": "3", "body": "Thanks"}, "messageType": "TYPE_EMAIL", "date_created": ISO},
        Stored("Thanks", channel="email", contact_id="cw-6", email="bo@example.com"),
    ),
    (
        "the same contact id under two aliases is not ambiguous",
        {"locationId": LOCATION, "contactId": "cw-7", "contact_id": "cw-7", "contact": {"id": "cw-7"},
         "body": "Sure", "messageType": 2, "dateAdded": ISO},
        Stored("Sure", contact_id="cw-7"),
    ),
    (
        "unrendered contact id: the phone identifies the lead, no channel means SMS",
        {"locationId": LOCATION, "contactId": "{{contact.id}}", "phone": "(415) 555-0122", "body": "Hello",
         "dateAdded": ISO},
        Stored("Hello", phone="+14155550122"),
    ),
    (
        "unrendered locationId next to a rendered location.id; message.dateAdded before date_created",
        {"locationId": "{{location.id}}", "location": {"id": LOCATION}, "contact_id": "cw-8",
         "message": {"body": "Friday works", "type": 2, "dateAdded": ISO},
         "date_created": "2020-01-01T00:00:00Z"},
        Stored("Friday works", contact_id="cw-8"),
    ),
    (
        "an OutboundMessage typed in a Custom Webhook",
        {"type": "OutboundMessage", "locationId": LOCATION, "contactId": "cw-9", "message": {"body": "On my way"},
         "messageType": "SMS", "dateAdded": ISO},
        Stored("On my way", direction="outbound", contact_id="cw-9"),
    ),
    (
        "unparseable time: now is used",
        {"locationId": LOCATION, "contactId": "cw-10", "body": "hey", "messageType": "SMS",
         "dateAdded": "{{message.date_added}}", "date_created": "yesterday"},
        Stored("hey", contact_id="cw-10", sent_at=None),
    ),
    (
        "unrendered message text",
        {"locationId": LOCATION, "contactId": "cw-11", "phone": "+14155550133", "body": "{{message.body}}"},
        Refused(("no message text: looked for body, message, message.body, messageBody",
                 "found keys: locationId, contactId, phone, body", "blank or unrendered merge fields: body")),
    ),
    (
        "empty strings everywhere for the contact",
        {"locationId": LOCATION, "contactId": "", "contact": {"id": "", "phone": ""}, "email": "",
         "body": "hi", "messageType": "SMS"},
        Refused(("no contact: looked for contactId, contact_id, contact.id, contact.contactId "
                 "(or email, contact.email, phone, contact.phone)",
                 "blank or unrendered merge fields: contactId, contact.id, email, contact.phone")),
    ),
    (
        "two different contact ids",
        {"locationId": LOCATION, "contactId": "abc", "contact": {"id": "xyz"}, "body": "hi", "messageType": "SMS"},
        Refused(("two different contact ids: contactId='abc', contact.id='xyz'",)),
    ),
    (
        "two different message texts (named, never quoted)",
        {"locationId": LOCATION, "contactId": "cw-12", "body": "first", "message": {"body": "second"},
         "messageType": "SMS"},
        Refused(("two different message texts: body, message.body",)),
    ),
    (
        "two different channels",
        {"locationId": LOCATION, "contactId": "cw-13", "body": "hi", "messageType": "SMS", "channel": "Email"},
        Refused(("two different channels: messageType='SMS', channel='Email'",)),
    ),
    (
        "two different directions",
        {"type": "OutboundMessage", "locationId": LOCATION, "contactId": "cw-14", "message": "hi",
         "direction": "inbound", "messageType": "SMS"},
        Refused(("two different directions: type='OutboundMessage', direction='inbound'",)),
    ),
    (
        "no channel and no phone: not guessed",
        {"locationId": LOCATION, "contactId": "cw-15", "email": "x@example.com", "body": "hi"},
        Refused(("no channel: looked for messageType, message.type, channel (SMS is assumed only when a phone",)),
    ),
    (
        "everything missing: every missing piece named at once",
        {"locationId": LOCATION, "type": "InboundMessage", "message": {"direction": "inbound"}},
        Refused(("no contact: looked for", "no message text: looked for", "no channel: looked for",
                 "found keys: locationId, type, message.direction")),
    ),
    (
        "a contact id that is an object",
        {"locationId": LOCATION, "contactId": {"id": "c"}, "body": "hi", "phone": "+14155550144"},
        Refused(("contactId: must be a string or a number, not an object",)),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "body", "expected"), CASES, ids=[case[0] for case in CASES])
def test_ghl_body_is_stored_or_refused_naming_the_missing_piece(workspace, enqueued, name, body, expected):
    before = datetime.now(UTC)
    response = post(Client(), "ghl", body)
    if isinstance(expected, Refused):
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        for fragment in expected.fragments:
            assert fragment in error, error
        event = WebhookEvent.objects.get()
        assert event.status == "rejected" and event.error == error
        assert Lead.objects.count() == Message.objects.count() == 0 and enqueued.calls == []
        return
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "created"
    message = Message.objects.select_related("lead").get(pk=response.json()["message_id"])
    lead = message.lead
    assert (message.body, message.channel, message.direction) == (expected.text, expected.channel, expected.direction)
    assert lead.ghl_contact_id == expected.contact_id
    if expected.phone:
        assert lead.phone_e164 == expected.phone
    if expected.email:
        assert lead.email == expected.email
    if expected.sent_at is None:
        assert before <= message.sent_at <= datetime.now(UTC)
    else:
        assert message.sent_at == expected.sent_at
    assert WebhookEvent.objects.get().status == "processed"


def test_an_unhandled_channel_is_ignored_not_refused(workspace, enqueued):
    body = {"locationId": LOCATION, "contactId": "c-call", "message": {"type": 1, "body": ""}}
    response = post(Client(), "ghl", body)
    assert response.json() == {"status": "ignored", "message_id": None, "lead_id": None}
    assert WebhookEvent.objects.get().error == "message.type '1' is not SMS or Email"
    assert Lead.objects.count() == Message.objects.count() == 0


def test_a_message_id_in_a_workflow_body_deduplicates_like_the_marketplace_event(workspace, enqueued):
    body = {"locationId": LOCATION, "contactId": "c-dup", "body": "hi", "messageType": "SMS", "messageId": "m-77"}
    first = post(Client(), "ghl", body).json()
    marketplace = post(Client(), "ghl", ghl_inbound(contactId="c-dup", messageId="m-77", body="hi")).json()
    assert first["status"] == "created" and marketplace == {**first, "status": "duplicate"}
    assert Message.objects.get().ghl_message_id == "m-77"


def test_a_body_naming_another_tenants_location_under_any_alias_is_403(workspace, other_workspace, enqueued):
    body = {"locationId": LOCATION, "location": {"id": "LOC_GLOBEX_456"}, "contactId": "c", "body": "x"}
    assert post(Client(), "ghl", body).status_code == 403
    assert WebhookEvent.objects.count() == Lead.objects.count() == 0


def test_the_reading_says_where_each_piece_came_from():
    reading = ghl_workflow_read(
        {"contact": {"id": "c-1"}, "message": "hi", "phone": "+14155550100", "date_created": ISO, "fullName": "Al Bo"}
    )
    assert reading.problems == ()
    assert reading.sources["contact id"] == "contact.id" and reading.sources["message text"] == "message"
    assert (
        reading.sources["channel"] == "default: sms, the body gives a phone"
        and reading.sources["time"] == "date_created"
    )
    delivery = reading.to_delivery()
    assert (delivery.identity.first_name, delivery.identity.last_name) == ("Al", "Bo")
