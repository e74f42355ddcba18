"""Acceptance: concurrent deliveries end in one row and "duplicate", never a 5xx (PostgreSQL)."""

import threading
from collections import Counter

import pytest
from django.db import connection
from django.test import Client

from leads.models import Lead
from messaging.models import Message, WebhookEvent
from messaging.tests.factories import emailbison, ghl_custom, ghl_inbound, post

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 50


def _post_concurrently(payloads: list, provider: str = "ghl") -> list:
    """Post each payload from its own thread, all released at once; returns responses."""
    barrier = threading.Barrier(len(payloads))
    results: list = [None] * len(payloads)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            client = Client()
            barrier.wait(timeout=30)
            response = post(client, provider, payloads[index])
            results[index] = (response.status_code, response.json())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    return results


def test_same_ghl_delivery_from_50_threads_is_one_message_one_lead_one_task(workspace, enqueued):
    payload = ghl_inbound(contactId="race-contact", messageId="race-message")
    results = _post_concurrently([payload] * THREADS)

    assert Counter(code for code, _ in results) == {200: THREADS}
    statuses = Counter(body["status"] for _, body in results)
    assert statuses == {"created": 1, "duplicate": THREADS - 1}
    message = Message.objects.get()
    assert Lead.objects.count() == 1
    assert {(body["message_id"], body["lead_id"]) for _, body in results} == {(message.pk, message.lead_id)}
    assert enqueued.calls == [message.pk]
    assert WebhookEvent.objects.filter(status="processed").count() == 1
    assert WebhookEvent.objects.filter(status="duplicate").count() == THREADS - 1


def test_same_custom_webhook_without_ids_from_50_threads_is_one_message(workspace, enqueued):
    results = _post_concurrently([ghl_custom(contact_id="", email="solo@example.com")] * THREADS)
    assert Counter(body["status"] for _, body in results) == {"created": 1, "duplicate": THREADS - 1}
    assert Message.objects.count() == 1 and Lead.objects.count() == 1
    assert len(enqueued.calls) == 1


def test_50_different_messages_for_one_new_contact_make_one_lead_and_50_messages(workspace, enqueued):
    payloads = [ghl_inbound(contactId="new-contact", body=f"message number {i}") for i in range(THREADS)]
    results = _post_concurrently(payloads)

    assert Counter(code for code, _ in results) == {200: THREADS}
    assert Counter(body["status"] for _, body in results) == {"created": THREADS}
    lead = Lead.objects.get()
    assert Message.objects.filter(lead=lead).count() == THREADS
    assert len({body["lead_id"] for _, body in results}) == 1
    assert sorted(enqueued.calls) == sorted(Message.objects.values_list("id", flat=True))
    lead.refresh_from_db()
    assert lead.last_inbound_at == max(Message.objects.values_list("sent_at", flat=True))


def test_50_custom_webhooks_for_one_new_contact_known_by_phone_only(workspace, enqueued):
    payloads = [
        ghl_custom(contact_id="", email="", phone="+1 415 555 2671", message={"type": 2, "body": f"text {i}"})
        for i in range(THREADS)
    ]
    results = _post_concurrently(payloads)
    assert Counter(code for code, _ in results) == {200: THREADS}
    assert Lead.objects.count() == 1 and Message.objects.count() == THREADS


def test_same_emailbison_reply_from_50_threads(workspace, enqueued):
    results = _post_concurrently([emailbison("LEAD_REPLIED")] * THREADS, provider="emailbison")
    assert Counter(body["status"] for _, body in results) == {"created": 1, "duplicate": THREADS - 1}
    assert Message.objects.count() == 1 and Lead.objects.count() == 1 and len(enqueued.calls) == 1
