import pytest
from django.test import Client

from leads.models import Lead, LeadStatus, Sentiment
from messaging.models import Message, WebhookEvent
from messaging.tests.factories import emailbison, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client()


@pytest.mark.parametrize("event_type", ["LEAD_REPLIED", "LEAD_INTERESTED", "UNTRACKED_REPLY_RECEIVED"])
def test_reply_events_create_inbound_email(client, workspace, enqueued, django_capture_on_commit_callbacks, event_type):
    payload = emailbison(event_type)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "emailbison", payload)
    assert response.status_code == 200, response.content
    message = Message.objects.get(pk=response.json()["message_id"])
    reply = payload["data"]["reply"]
    assert (message.channel, message.direction) == ("email", "inbound")
    assert message.emailbison_reply_id == str(reply["id"])
    assert (message.body, message.subject) == (reply["text_body"], reply["email_subject"])
    assert message.lead.emailbison_lead_id == str(payload["data"]["lead"]["id"])
    assert message.provider_interested is (event_type == "LEAD_INTERESTED")
    assert enqueued.calls == [message.pk]


def test_untracked_reply_without_lead_matches_by_sender_email(client, workspace, enqueued):
    existing = Lead.objects.create(workspace=workspace, email="Known@Example.com")
    payload = emailbison("UNTRACKED_REPLY_RECEIVED", lead=None)
    payload["data"]["reply"]["from_email_address"] = "known@example.COM"
    response = post(client, "emailbison", payload)
    assert response.json()["lead_id"] == existing.pk


def test_html_only_reply_is_stored_as_text(client, workspace, enqueued):
    payload = emailbison()
    payload["data"]["reply"]["text_body"] = None
    post(client, "emailbison", payload)
    assert Message.objects.get().body == "Sounds interesting, tell me more"


def test_replied_then_interested_is_one_message_flagged_interested(client, workspace, enqueued):
    replied = emailbison("LEAD_REPLIED")
    interested = {"event": {**replied["event"], "type": "LEAD_INTERESTED"}, "data": replied["data"]}
    first = post(client, "emailbison", replied).json()
    second = post(client, "emailbison", interested).json()
    assert first["status"] == "created" and second == {**first, "status": "duplicate"}
    assert Message.objects.get().provider_interested is True


def _replied_then_classified(client, workspace, capture, *, sentiment, lead_status=LeadStatus.OPEN):
    from django.utils import timezone

    replied = emailbison("LEAD_REPLIED")
    with capture(execute=True):
        post(client, "emailbison", replied)
    message = Message.objects.get()
    # What the task left behind: the message classified, the lead tagged.
    Message.objects.update(sentiment=sentiment or "", classified_at=timezone.now() if sentiment else None)
    Lead.objects.update(sentiment=sentiment or Sentiment.NEW, status=lead_status)
    return replied, message


def _interested(replied):
    return {"event": {**replied["event"], "type": "LEAD_INTERESTED"}, "data": replied["data"]}


def test_interested_after_a_neutral_classification_makes_it_interested_and_drafts_it(
    client, workspace, enqueued, django_capture_on_commit_callbacks
):
    replied, message = _replied_then_classified(
        client, workspace, django_capture_on_commit_callbacks, sentiment=Sentiment.NEUTRAL
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, "emailbison", _interested(replied)).json()["status"] == "duplicate"

    message.refresh_from_db()
    assert message.provider_interested is True and message.sentiment == Sentiment.INTERESTED
    assert message.lead.sentiment == Sentiment.INTERESTED
    assert enqueued.calls == [message.pk, message.pk]  # the work again: now it gets a draft
    assert message.work_enqueue_count == 1 and message.work_enqueued_at is not None


@pytest.mark.parametrize(
    ("sentiment", "lead_status"),
    [
        (Sentiment.NOT_INTERESTED, LeadStatus.OPEN),  # the text said something specific
        (None, LeadStatus.OPEN),  # not classified yet: its task reads the flag
        (Sentiment.NEUTRAL, LeadStatus.BLACKLISTED),  # an opted-out lead stays so
    ],
)
def test_interested_after_the_reply_only_flags_other_messages(
    client, workspace, enqueued, django_capture_on_commit_callbacks, sentiment, lead_status
):
    replied, message = _replied_then_classified(
        client, workspace, django_capture_on_commit_callbacks, sentiment=sentiment, lead_status=lead_status
    )
    with django_capture_on_commit_callbacks(execute=True):
        post(client, "emailbison", _interested(replied))

    message.refresh_from_db()
    assert message.provider_interested is True and message.sentiment == (sentiment or "")
    assert enqueued.calls == [message.pk]


def test_retried_delivery_is_duplicate(client, workspace, enqueued, django_capture_on_commit_callbacks):
    payload = emailbison()
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, "emailbison", payload).json()
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, "emailbison", payload).json() == {**first, "status": "duplicate"}
    assert Message.objects.count() == 1 and len(enqueued.calls) == 1


def test_email_sent_records_outbound_without_enqueue(client, workspace, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "emailbison", emailbison("EMAIL_SENT"))
    assert response.json()["status"] == "created"
    message = Message.objects.get()
    assert (message.direction, message.body) == ("outbound", "Hi there")
    assert enqueued.calls == []


@pytest.mark.parametrize("event_type", ["EMAIL_BOUNCED", "LEAD_UNSUBSCRIBED"])
def test_bounce_and_unsubscribe_blacklist_the_lead(client, workspace, enqueued, event_type):
    payload = emailbison(event_type)
    response = post(client, "emailbison", payload)
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "created" and data["message_id"] is None
    lead = Lead.objects.get(pk=data["lead_id"])
    assert (lead.sentiment, lead.status) == (Sentiment.BLACKLIST, LeadStatus.BLACKLISTED)
    assert post(client, "emailbison", payload).json()["status"] == "duplicate"


def test_other_event_types_are_ignored(client, workspace):
    response = post(client, "emailbison", emailbison("EMAIL_OPENED"))
    assert response.json() == {"status": "ignored", "message_id": None, "lead_id": None}
    assert WebhookEvent.objects.get().status == "ignored"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("event"), "event"),
        (lambda p: p["event"].pop("type"), "event.type"),
        (lambda p: p["data"].pop("reply"), "data.reply"),
        (lambda p: p["data"]["reply"].pop("id"), "data.reply.id"),
        (lambda p: p["data"]["reply"].update(interested="maybe"), "data.reply.interested"),
        (lambda p: p.update(data="nope"), "data"),
    ],
)
def test_schema_errors_name_the_field(client, workspace, enqueued, mutate, field):
    payload = emailbison()
    mutate(payload)
    response = post(client, "emailbison", payload)
    assert response.status_code == 400
    assert response.json()["error"].startswith(field), response.json()
    assert Lead.objects.count() == Message.objects.count() == 0
    assert WebhookEvent.objects.get().status == "rejected"


@pytest.mark.parametrize("junk", ["²", "9" * 4400])
def test_junk_reply_dates_do_not_crash(client, workspace, enqueued, junk):
    payload = emailbison()
    payload["data"]["reply"]["date_received"] = junk
    assert post(client, "emailbison", payload).status_code == 200


def test_late_interest_tags_the_messages_own_lead_not_the_payloads(workspace, enqueued):
    from django.db import transaction
    from django.utils import timezone

    from messaging.services import message_provider_interest_note

    owner = Lead.objects.create(workspace=workspace, email="dana@acme.io", sentiment=Sentiment.NEUTRAL)
    other = Lead.objects.create(
        workspace=workspace, email="old@acme.io", status=LeadStatus.BLACKLISTED, sentiment=Sentiment.BLACKLIST
    )
    message = Message.objects.create(
        workspace=workspace,
        lead=owner,
        channel="email",
        direction="inbound",
        body="ok",
        sent_at=timezone.now(),
        emailbison_reply_id="r-1",
        sentiment=Sentiment.NEUTRAL,
        classified_at=timezone.now(),
    )
    with transaction.atomic():
        message_provider_interest_note(message=message, lead=other)

    owner.refresh_from_db()
    other.refresh_from_db()
    assert owner.sentiment == Sentiment.INTERESTED and other.sentiment == Sentiment.BLACKLIST
    assert Message.objects.get(pk=message.pk).sentiment == Sentiment.INTERESTED
