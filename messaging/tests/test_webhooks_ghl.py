import datetime as dt
import io
import json

import pytest
from django.test import Client, RequestFactory

from leads.models import Lead
from messaging.models import Message, WebhookEvent
from messaging.tests.factories import SECRET, ghl_custom, ghl_inbound, iso_ago, post
from messaging.views import GhlWebhookView

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client()


def test_inbound_sms_creates_lead_message_and_enqueues_after_commit(
    client, workspace, enqueued, django_capture_on_commit_callbacks
):
    payload = ghl_inbound(contactId="c-1", messageId="m-1")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "ghl", payload)
    assert response.status_code == 200
    data = response.json()
    message = Message.objects.get(pk=data["message_id"])
    assert data == {"status": "created", "message_id": message.pk, "lead_id": message.lead_id}
    assert (message.channel, message.direction, message.ghl_message_id) == ("sms", "inbound", "m-1")
    assert message.body == payload["body"]
    assert message.lead.ghl_contact_id == "c-1"
    assert message.lead.last_inbound_at == message.sent_at == message.lead.last_message_at
    assert enqueued.calls == [message.pk]
    message.refresh_from_db()
    assert message.work_enqueued_at is not None and message.work_enqueue_count == 1
    event = WebhookEvent.objects.get(workspace=workspace)
    assert (event.status, event.message_id, event.lead_id) == ("processed", message.pk, message.lead_id)
    assert event.idempotency_key == "message:m-1"
    assert "X-Webhook-Secret" not in event.headers and "x-webhook-secret" not in {k.lower() for k in event.headers}


def test_nothing_is_enqueued_before_commit(client, workspace, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client, "ghl", ghl_inbound())
    assert response.status_code == 200
    assert enqueued.calls == [] and len(callbacks) == 1


def test_same_message_twice_is_duplicate_with_original_ids(client, workspace, enqueued):
    payload = ghl_inbound()
    first = post(client, "ghl", payload).json()
    second = post(client, "ghl", payload).json()
    assert second == {**first, "status": "duplicate"}
    assert Message.objects.count() == 1
    assert list(WebhookEvent.objects.order_by("id").values_list("status", flat=True)) == ["processed", "duplicate"]


def test_a_message_id_reused_for_another_contact_is_a_duplicate_and_leaves_no_lead_behind(client, workspace, enqueued):
    """Another delivery (its own webhookId) names a known messageId with another contact: it is
    the known message, answered as a duplicate with its own ids; no lead is made for it."""
    first = post(client, "ghl", ghl_inbound(contactId="c-1", messageId="m-1", webhookId="wh-1")).json()
    second = post(client, "ghl", ghl_inbound(contactId="c-2", messageId="m-1", webhookId="wh-2")).json()
    assert second == {**first, "status": "duplicate"}
    assert list(Lead.objects.values_list("ghl_contact_id", flat=True)) == ["c-1"]
    assert Message.objects.count() == 1
    event = WebhookEvent.objects.order_by("id").last()
    assert (event.status, event.lead_id, event.message_id) == ("duplicate", first["lead_id"], first["message_id"])


def test_outbound_message_recorded_without_enqueue(client, workspace, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "ghl", ghl_inbound(type="OutboundMessage", direction="outbound"))
    assert response.json()["status"] == "created"
    message = Message.objects.get()
    assert message.direction == "outbound" and enqueued.calls == []
    assert message.lead.last_outbound_at is not None and message.lead.last_inbound_at is None


def test_email_variant_takes_subject_and_lead_email(client, workspace, enqueued):
    payload = ghl_inbound(messageType="Email", subject="Re: Quote", **{"from": "Bob <Bob@Example.com>"})
    payload["to"] = ["sales@acme.test"]
    assert post(client, "ghl", payload).status_code == 200
    message = Message.objects.get()
    assert (message.channel, message.subject, message.lead.email) == ("email", "Re: Quote", "bob@example.com")


def test_other_channels_and_event_types_are_ignored(client, workspace, enqueued):
    assert post(client, "ghl", ghl_inbound(messageType="CALL")).json() == {
        "status": "ignored",
        "message_id": None,
        "lead_id": None,
    }
    assert post(client, "ghl", {"type": "ContactCreate", "locationId": "LOC_ACME_123"}).json()["status"] == "ignored"
    assert Message.objects.count() == 0 and Lead.objects.count() == 0
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"ignored"}


def test_custom_webhook_creates_lead_with_normalised_phone(client, workspace, enqueued):
    response = post(client, "ghl", ghl_custom())
    assert response.status_code == 200, response.content
    lead = Lead.objects.get()
    assert (lead.ghl_contact_id, lead.email, lead.first_name) == ("cw-contact-1", "jane.doe@example.com", "Jane")
    assert (lead.phone_e164, lead.phone_raw) == ("+14155552671", "(415) 555-2671")
    message = Message.objects.get()
    assert message.ghl_message_id == "" and message.body == "Can you call me tomorrow?"


def test_custom_webhook_without_message_id_deduplicates_on_body_within_60s(client, workspace, enqueued):
    first = post(client, "ghl", ghl_custom(date_created=iso_ago(minutes=10))).json()
    retry = post(client, "ghl", ghl_custom(date_created=iso_ago(minutes=10, seconds=-40))).json()
    later = post(client, "ghl", ghl_custom(date_created=iso_ago(minutes=8))).json()
    other = post(client, "ghl", ghl_custom(message={"type": 2, "body": "Something else"})).json()
    assert first["status"] == "created"
    assert retry == {**first, "status": "duplicate"}
    assert later["status"] == "created" and later["message_id"] != first["message_id"]
    assert other["status"] == "created"
    assert Message.objects.count() == 3 and Lead.objects.count() == 1


def test_invalid_phone_keeps_raw_only(client, workspace, enqueued):
    post(client, "ghl", ghl_custom(phone="555-0000-not-a-phone"))
    lead = Lead.objects.get()
    assert lead.phone_e164 == "" and lead.phone_raw == "555-0000-not-a-phone"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (ghl_inbound(contactId=None), "contactId"),
        ({k: v for k, v in ghl_inbound().items() if k != "messageType"}, "messageType"),
        (ghl_inbound(body=["not", "text"]), "body"),
        (ghl_custom(message={"type": 2}), "no message text: looked for body, message, message.body, messageBody"),
        (ghl_custom(contact_id="", email="", phone=""), "no contact: looked for contactId, contact_id, contact.id"),
        ({"hello": "world"}, "no location id: looked for locationId, location.id"),
        ([1, 2, 3], "payload"),
    ],
)
def test_schema_errors_answer_400_naming_the_field_and_store_only_the_rejected_event(
    client, workspace, enqueued, payload, field
):
    response = post(client, "ghl", payload)
    assert response.status_code == 400
    assert response.json()["error"].startswith(field), response.json()
    event = WebhookEvent.objects.get()
    assert event.status == "rejected" and event.error.startswith(field)
    assert Lead.objects.count() == 0 and Message.objects.count() == 0 and enqueued.calls == []


def test_malformed_json_answers_400(client, workspace):
    response = post(client, "ghl", b'{"type": "InboundMessage",')
    assert response.status_code == 400 and response.json()["error"].startswith("body: malformed JSON")
    assert WebhookEvent.objects.get().status == "rejected"


def test_nul_and_lone_surrogates_do_not_crash(client, workspace, enqueued):
    raw = json.dumps(ghl_inbound(body="hi\u0000 there \ud800")).encode()
    response = post(client, "ghl", raw)
    assert response.status_code == 200
    assert Message.objects.get().body == "hi there ?"


def test_unknown_workspace_is_404_and_not_stored(client, workspace):
    from messaging.views import webhook_refusal_counts

    before = webhook_refusal_counts().get("ghl:unknown_workspace", 0)
    response = post(client, "ghl", ghl_inbound(), slug="nope")
    assert response.status_code == 404
    assert WebhookEvent.objects.count() == 0
    assert webhook_refusal_counts()["ghl:unknown_workspace"] == before + 1


@pytest.mark.parametrize("secret", [None, "", "wrong-secret-value-123456", SECRET + "x"])
def test_bad_or_missing_secret_is_401_and_not_stored(client, workspace, secret):
    response = post(client, "ghl", ghl_inbound(), secret=secret)
    assert response.status_code == 401
    assert "error" in response.json()
    assert WebhookEvent.objects.count() == 0 and Message.objects.count() == 0


def test_secret_in_query_string_is_accepted(client, workspace, enqueued):
    response = client.post(
        f"/webhooks/ghl/acme/?secret={SECRET}", data=json.dumps(ghl_inbound()), content_type="application/json"
    )
    assert response.status_code == 200


def test_other_workspaces_secret_does_not_open_this_one(client, workspace, other_workspace):
    response = post(client, "ghl", ghl_inbound(), secret="whsec-globex-0123456789abcdef")
    assert response.status_code == 401


def test_tenant_mismatch_is_403_and_writes_nothing(client, workspace, other_workspace, enqueued):
    marketplace = post(client, "ghl", ghl_inbound(locationId="LOC_GLOBEX_456"))
    custom = post(client, "ghl", ghl_custom(location={"id": "LOC_GLOBEX_456"}))
    assert (marketplace.status_code, custom.status_code) == (403, 403)
    assert marketplace.json()["error"].startswith("locationId")
    assert WebhookEvent.objects.count() == Lead.objects.count() == Message.objects.count() == 0
    assert enqueued.calls == []


def test_body_over_cap_is_413_by_content_length_and_by_actual_size(client, workspace, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 1000
    big = json.dumps(ghl_inbound(body="x" * 2000))
    assert post(client, "ghl", big).status_code == 413
    # A lying Content-Length: the body actually read is what counts.
    request = RequestFactory().post(
        "/webhooks/ghl/acme/", data=big, content_type="application/json", HTTP_X_WEBHOOK_SECRET=SECRET
    )
    request.META["CONTENT_LENGTH"] = "10"
    request._stream = io.BytesIO(big.encode())
    response = GhlWebhookView.as_view()(request, slug="acme")
    assert response.status_code == 413
    assert WebhookEvent.objects.count() == 0 and Message.objects.count() == 0


def test_inactive_workspace_is_404(client, workspace):
    workspace.is_active = False
    workspace.save()
    assert post(client, "ghl", ghl_inbound()).status_code == 404


def test_body_field_named_secret_is_masked_in_the_stored_event(client, workspace, enqueued):
    post(client, "ghl", ghl_custom(customData={"secret": SECRET, "note": f"pasted {SECRET}"}))
    body = WebhookEvent.objects.get().body
    assert SECRET not in json.dumps(body)


def test_broker_down_still_answers_200_and_records_error_once(
    client, workspace, enqueued, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from messaging.services import broker_health
    from workspaces.models import IntegrationError

    enqueued.fail_with = OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            response = post(client, "ghl", ghl_inbound())
        assert response.status_code == 200 and response.json()["status"] == "created"
        broker_health.down_until = 0.0  # let each request try the broker
    assert Message.objects.count() == 3
    assert not Message.objects.filter(work_enqueued_at__isnull=False).exists()
    error = IntegrationError.objects.get(workspace=workspace, source="broker")
    assert error.count == 1 and error.resolved_at is None

    enqueued.fail_with = None
    with django_capture_on_commit_callbacks(execute=True):
        post(client, "ghl", ghl_inbound())
    error.refresh_from_db()
    assert error.resolved_at is not None


def test_after_a_broker_failure_requests_skip_the_broker_briefly(
    client, workspace, enqueued, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    enqueued.fail_with = OperationalError("down")
    with django_capture_on_commit_callbacks(execute=True):
        post(client, "ghl", ghl_inbound())
    enqueued.fail_with = None
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, "ghl", ghl_inbound()).status_code == 200
    assert enqueued.calls == []  # left to the sweeper while the breaker is open


def _chunked_request(body: bytes):
    request = RequestFactory().post(
        "/webhooks/ghl/acme/", data=b"", content_type="application/json", HTTP_X_WEBHOOK_SECRET=SECRET
    )
    request.META.pop("CONTENT_LENGTH", None)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.META["wsgi.input"] = io.BytesIO(body)
    return request


def test_chunked_body_without_content_length_is_read_and_capped(workspace, enqueued, settings):
    ok = GhlWebhookView.as_view()(_chunked_request(json.dumps(ghl_inbound()).encode()), slug="acme")
    assert ok.status_code == 200 and Message.objects.count() == 1
    settings.WEBHOOK_MAX_BODY_BYTES = 1000
    big = GhlWebhookView.as_view()(_chunked_request(json.dumps(ghl_inbound(body="x" * 2000)).encode()), slug="acme")
    assert big.status_code == 413 and Message.objects.count() == 1


@pytest.mark.parametrize("junk", ["²", "1" * 4400, "٣", "2026-13-45T00:00:00Z", 10**30])
def test_junk_dates_fall_back_to_now_instead_of_500(client, workspace, enqueued, junk):
    from django.utils import timezone

    before = timezone.now()
    marketplace = post(client, "ghl", ghl_inbound(dateAdded=junk))
    custom = post(client, "ghl", ghl_custom(date_created=junk))
    assert (marketplace.status_code, custom.status_code) == (200, 200)
    assert all(sent_at >= before for sent_at in Message.objects.values_list("sent_at", flat=True))


def test_naive_iso_dates_are_read_as_utc(client, workspace, enqueued):
    an_hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    post(client, "ghl", ghl_inbound(dateAdded=an_hour_ago.replace(tzinfo=None).isoformat(sep=" ")))
    assert Message.objects.get().sent_at == an_hour_ago


def test_custom_webhook_timezone_that_is_not_a_zone_is_dropped(client, workspace, enqueued):
    assert post(client, "ghl", ghl_custom(timezone="America")).status_code == 200
    assert Lead.objects.get().timezone == ""
    assert post(client, "ghl", ghl_custom(timezone="America/Chicago", message={"body": "again"})).status_code == 200
    assert Lead.objects.get().timezone == "America/Chicago"


def test_crash_during_ingest_logs_a_failed_event_with_the_error_type_only(workspace, enqueued, monkeypatch):
    from messaging import views

    def boom(**kwargs):
        raise RuntimeError(f"secret detail {SECRET}")

    monkeypatch.setattr(views, "webhook_delivery_ingest", boom)
    response = post(Client(raise_request_exception=False), "ghl", ghl_inbound())
    assert response.status_code == 500
    event = WebhookEvent.objects.get()
    assert (event.status, event.error, event.processed_at) == ("failed", "RuntimeError", None)
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({k: v for k, v in ghl_custom().items() if k != "location"}, "no location id: looked for locationId"),
        (ghl_custom(location={"name": "Acme"}), "no location id"),
        (ghl_custom(location={"id": "  "}), "no location id"),
        (ghl_custom(location={"id": "{{location.id}}"}), "no location id"),
        ({"type": "ContactCreate"}, "locationId"),
        ({k: v for k, v in ghl_inbound().items() if k != "locationId"}, "locationId"),
    ],
)
def test_ghl_body_without_location_is_400_when_the_workspace_has_one(client, workspace, enqueued, payload, field):
    response = post(client, "ghl", payload)
    assert response.status_code == 400 and response.json()["error"].startswith(field), response.json()
    event = WebhookEvent.objects.get()
    assert event.status == "rejected" and event.error.startswith(field)
    assert Lead.objects.count() == Message.objects.count() == 0 and enqueued.calls == []


def test_reprocess_rechecks_the_location(workspace, enqueued):
    from messaging.services import webhook_event_reprocess

    body = {k: v for k, v in ghl_custom().items() if k != "location"}
    event = WebhookEvent.objects.create(workspace=workspace, provider="ghl", body=body, status="failed")
    webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)
    event.refresh_from_db()
    assert event.status == "rejected" and event.error.startswith("no location id")
    assert Message.objects.count() == 0


def test_custom_webhook_without_location_is_fine_for_a_workspace_without_one(client, workspace, enqueued):
    workspace.ghl_location_id = ""
    workspace.save()
    payload = {k: v for k, v in ghl_custom().items() if k != "location"}
    assert post(client, "ghl", payload).status_code == 200


def test_body_hash_dedupe_keeps_an_inbound_with_the_text_of_an_outbound(client, workspace, enqueued):
    """Within 60 s and with the same text, only a message of the same direction is a duplicate."""
    text = {"type": 2, "body": "Sounds good, see you Tuesday"}
    sent = post(client, "ghl", ghl_custom(message={**text, "direction": "outbound"}, date_created=iso_ago(minutes=3)))
    answer = post(client, "ghl", ghl_custom(message={**text, "direction": "inbound"}, date_created=iso_ago(minutes=3)))
    echo = post(
        client,
        "ghl",
        ghl_custom(message={**text, "direction": "inbound"}, date_created=iso_ago(minutes=3, seconds=-20)),
    )
    assert sent.json()["status"] == answer.json()["status"] == "created"
    assert echo.json() == {**answer.json(), "status": "duplicate"}
    assert sorted(Message.objects.values_list("direction", flat=True)) == ["inbound", "outbound"]


def _padded_to(size: int) -> bytes:
    """A valid marketplace delivery of exactly ``size`` bytes (padding in an unknown field)."""
    payload = ghl_inbound(padding="")
    raw = json.dumps(payload).encode()
    payload["padding"] = "p" * (size - len(raw))
    raw = json.dumps(payload).encode()
    assert len(raw) == size
    return raw


def test_a_body_of_exactly_the_cap_is_accepted_and_one_byte_more_is_413(client, workspace, enqueued, settings):
    from django.conf import settings as django_settings

    cap = django_settings.WEBHOOK_MAX_BODY_BYTES
    assert cap == 1024 * 1024  # the documented default: 1 MiB
    exact = post(client, "ghl", _padded_to(cap))
    assert exact.status_code == 200 and exact.json()["status"] == "created"
    over = _padded_to(cap + 1)
    assert post(client, "ghl", over).status_code == 413  # refused by its Content-Length
    # And by the bytes actually read, when the Content-Length claims the cap.
    request = RequestFactory().post(
        "/webhooks/ghl/acme/", data=b"", content_type="application/json", HTTP_X_WEBHOOK_SECRET=SECRET
    )
    request.META["CONTENT_LENGTH"] = str(cap)
    request._stream = io.BytesIO(over)
    request.META["wsgi.input"] = io.BytesIO(over)
    assert GhlWebhookView.as_view()(request, slug="acme").status_code == 413
    assert Message.objects.count() == 1


def test_saving_a_workspace_takes_effect_on_the_webhook_at_once(client, workspace, enqueued):
    """The webhook's per-process workspace cache (10 s) is cleared when a workspace is saved."""
    assert post(client, "ghl", ghl_inbound()).status_code == 200  # the workspace is cached now
    workspace.webhook_secret = "whsec-acme-rotated-0123456789"
    workspace.save()
    assert post(client, "ghl", ghl_inbound()).status_code == 401  # the old secret, within the TTL
    assert post(client, "ghl", ghl_inbound(), secret="whsec-acme-rotated-0123456789").status_code == 200
    workspace.is_active = False
    workspace.save()
    assert post(client, "ghl", ghl_inbound(), secret="whsec-acme-rotated-0123456789").status_code == 404


def test_refusals_are_logged_at_most_once_a_second_and_all_counted(client, workspace, monkeypatch, caplog):
    from types import SimpleNamespace

    from messaging import views

    clock = [10_000_000.0]  # far beyond this process's real monotonic clock
    monkeypatch.setattr(views, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(views, "_refusal_logged_at", {})
    before = views.webhook_refusal_counts().get("ghl:bad_secret", 0)

    def refuse(times: int) -> int:
        caplog.clear()
        with caplog.at_level("WARNING", logger="messaging.views"):
            for _ in range(times):
                assert post(client, "ghl", ghl_inbound(), secret="wrong-secret-value-123456").status_code == 401
        return sum("webhook refused" in r.getMessage() for r in caplog.records)

    assert refuse(5) == 1
    clock[0] += 0.999
    assert refuse(3) == 0
    clock[0] += 0.001  # a second after the last line
    assert refuse(3) == 1
    assert views.webhook_refusal_counts()["ghl:bad_secret"] == before + 11
    assert "wrong-secret" not in caplog.text
