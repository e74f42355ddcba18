import pytest
from django.test import Client
from django.urls import reverse

from messaging.models import Message, WebhookEvent
from messaging.tests.factories import SECRET, ghl_inbound, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged(django_user_model):
    user = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-123456789")
    client = Client()
    client.force_login(user)
    return client


def test_webhook_event_list_filters_by_workspace_and_never_shows_bodies(
    admin_client_logged, workspace, other_workspace, enqueued
):
    post(Client(), "ghl", ghl_inbound(body="very private words"))
    url = reverse("admin:messaging_webhookevent_changelist")
    response = admin_client_logged.get(url, {"workspace__id__exact": workspace.pk, "status__exact": "processed"})
    assert response.status_code == 200
    content = response.content.decode()
    assert "InboundMessage" in content and "very private words" not in content and SECRET not in content
    messages = admin_client_logged.get(reverse("admin:messaging_message_changelist"))
    assert messages.status_code == 200 and "very private words" not in messages.content.decode()
    leads = admin_client_logged.get(reverse("admin:leads_lead_changelist"), {"q": "contact"})
    assert leads.status_code == 200


def test_reprocess_action_applies_a_failed_event_once(admin_client_logged, workspace, enqueued):
    event = WebhookEvent.objects.create(
        workspace=workspace, provider="ghl", event_type="InboundMessage", body=ghl_inbound(), status="failed"
    )
    url = reverse("admin:messaging_webhookevent_changelist")
    for _ in range(2):
        response = admin_client_logged.post(url, {"action": "reprocess", "_selected_action": [event.pk]}, follow=True)
        assert response.status_code == 200
    event.refresh_from_db()
    message = Message.objects.get()
    assert event.message_id == message.pk and event.status == "duplicate"  # second run found it
    detail = admin_client_logged.get(reverse("admin:messaging_webhookevent_change", args=[event.pk]))
    assert detail.status_code == 200


def test_reprocess_of_an_invalid_body_stays_rejected(workspace):
    from messaging.services import webhook_event_reprocess

    event = WebhookEvent.objects.create(workspace=workspace, provider="ghl", body=None, status="rejected")
    result = webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)
    event.refresh_from_db()
    assert result.status == "ignored" and event.status == "rejected" and event.error.startswith("payload")
