import pytest
from django.test import Client
from django.urls import reverse

from messaging.models import Message, WebhookEvent
from messaging.tests.factories import SECRET, ghl_inbound, post
from workspaces.models import Membership

pytestmark = pytest.mark.django_db


def test_webhook_event_list_filters_by_workspace_and_never_shows_bodies(
    admin_client_logged, workspace, other_workspace, enqueued
):
    post(Client(), "ghl", ghl_inbound(body="very private words"))
    post(
        Client(),
        "ghl",
        ghl_inbound(locationId="LOC_GLOBEX_456", body="globex private words"),
        slug="globex",
        secret="whsec-globex-0123456789abcdef",
    )
    ours = WebhookEvent.objects.get(workspace=workspace, status="processed")
    theirs = WebhookEvent.objects.get(workspace=other_workspace, status="processed")
    url = reverse("admin:messaging_webhookevent_changelist")

    def change_link(event):
        return reverse("admin:messaging_webhookevent_change", args=[event.pk])

    unfiltered = admin_client_logged.get(url).content.decode()
    assert change_link(ours) in unfiltered and change_link(theirs) in unfiltered
    response = admin_client_logged.get(url, {"workspace__id__exact": workspace.pk, "status__exact": "processed"})
    assert response.status_code == 200
    content = response.content.decode()
    assert change_link(ours) in content and change_link(theirs) not in content
    assert "InboundMessage" in content and "very private words" not in content and SECRET not in content
    assert "globex private words" not in unfiltered
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


def _signature_refused_event(workspace, settings):
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    workspace.verify_ghl_signatures = True
    workspace.save()
    forged = base64.b64encode(b"\x01" * 64).decode()
    response = post(Client(), "ghl", ghl_inbound(webhookId="wh-forged", timestamp=1), **{"X-GHL-Signature": forged})
    assert response.status_code == 401
    return WebhookEvent.objects.get(status="rejected")


def test_signature_refusals_are_never_reprocessed(admin_client_logged, workspace, settings, enqueued):
    from messaging.services import WebhookEventNotReprocessable, webhook_event_reprocess

    event = _signature_refused_event(workspace, settings)
    assert event.reprocessable is False
    with pytest.raises(WebhookEventNotReprocessable):
        webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)
    url = reverse("admin:messaging_webhookevent_changelist")
    response = admin_client_logged.post(url, {"action": "reprocess", "_selected_action": [event.pk]}, follow=True)
    assert response.status_code == 200 and "not reprocessable" in response.content.decode()
    event.refresh_from_db()
    assert event.status == "rejected" and event.message_id is None
    assert Message.objects.count() == 0 and enqueued.calls == []


def test_validation_rejections_stay_reprocessable(workspace, enqueued):
    post(Client(), "ghl", ghl_inbound(contactId=None))
    assert WebhookEvent.objects.get().reprocessable is True


def test_reprocess_action_needs_change_permission(workspace, django_user_model, enqueued):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("viewer", "v@example.com", "pw-123456789", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    # An operator of the workspace (scoping: a non-superuser sees only their workspaces).
    Membership.objects.create(user=user, workspace=workspace, role="operator")
    client = Client()
    client.force_login(user)
    event = WebhookEvent.objects.create(
        workspace=workspace, provider="ghl", event_type="InboundMessage", body=ghl_inbound(), status="failed"
    )
    url = reverse("admin:messaging_webhookevent_changelist")
    listing = client.get(url)
    assert listing.status_code == 200 and 'value="reprocess"' not in listing.content.decode()
    client.post(url, {"action": "reprocess", "_selected_action": [event.pk]}, follow=True)
    event.refresh_from_db()
    assert event.status == "failed" and Message.objects.count() == 0

    user.user_permissions.add(Permission.objects.get(codename="change_webhookevent"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    assert 'value="reprocess"' in client.get(url).content.decode()
    client.post(url, {"action": "reprocess", "_selected_action": [event.pk]}, follow=True)
    event.refresh_from_db()
    assert event.status == "processed" and Message.objects.count() == 1
