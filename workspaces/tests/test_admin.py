import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from workspaces.models import Workspace
from workspaces.services import integration_error_record

SECRETS = ("whsec-acme-0123456789abcdef", "pit-11111111-2222-3333-4444-555555555555")


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_workspace_pages_never_show_secrets(admin_client, workspace):
    integration_error_record(
        workspace=workspace, source="ghl", code="auth_failed", message="401 for Bearer " + SECRETS[1]
    )
    pages = [
        reverse("admin:workspaces_workspace_changelist"),
        reverse("admin:workspaces_workspace_change", args=[workspace.pk]),
        reverse("admin:workspaces_integrationerror_changelist"),
    ]
    for url in pages:
        html = admin_client.get(url).content.decode()
        for secret in SECRETS:
            assert secret not in html, url
    change = admin_client.get(pages[1]).content.decode()
    assert "****5555" in change  # masked: last 4 characters only
    assert "auth_failed" in change  # open errors inline
    assert "/webhooks/ghl/acme/" in change


def _change_form_data(workspace, **overrides):
    data = {
        "slug": workspace.slug,
        "name": workspace.name,
        "timezone": workspace.timezone,
        "is_active": "on",
        "webhook_secret": "",
        "ghl_location_id": workspace.ghl_location_id,
        "ghl_token": "",
        "emailbison_base_url": "",
        "emailbison_token": "",
        "calendly_token": "",
        "booking_provider": "",
        "ghl_calendar_id": "",
        "ghl_booking_url": "",
        "calendly_event_type_uri": "",
        "calendly_booking_url": "",
        "business_hours_start": "09:00",
        "business_hours_end": "17:00",
        "business_days": "0,1,2,3,4",
        "persona_name": "",
        "persona_tone": "friendly",
        "company_name": "",
        "offer_description": "",
        "signature": "",
        "slots_to_offer": "3",
        "sms_send_start": "08:00",
        "sms_send_end": "21:00",
        "sla_sms_minutes": "5",
        "sla_email_minutes": "30",
        "sla_notify_email": "",
        "sla_notify_webhook_url": "",
        "integration_errors-TOTAL_FORMS": "0",
        "integration_errors-INITIAL_FORMS": "0",
        "integration_errors-MIN_NUM_FORMS": "0",
        "integration_errors-MAX_NUM_FORMS": "1000",
        "availability-TOTAL_FORMS": "0",
        "availability-INITIAL_FORMS": "0",
        "availability-MIN_NUM_FORMS": "0",
        "availability-MAX_NUM_FORMS": "1",
    }
    data.update(overrides)
    return data


@pytest.mark.django_db
def test_blank_secret_fields_keep_stored_values_and_new_ones_replace(admin_client, workspace):
    url = reverse("admin:workspaces_workspace_change", args=[workspace.pk])
    response = admin_client.post(url, _change_form_data(workspace, emailbison_token="eb-new-token-123456"))
    assert response.status_code == 302, response.content.decode()[:2000]
    fresh = Workspace.objects.get(pk=workspace.pk)
    assert fresh.ghl_token == SECRETS[1]
    assert fresh.webhook_secret == SECRETS[0]
    assert fresh.emailbison_token == "eb-new-token-123456"


@pytest.mark.django_db
def test_integration_error_filters(admin_client, workspace, other_workspace):
    integration_error_record(workspace=workspace, source="ghl", code="rate_limited", message="429")
    resolved = integration_error_record(workspace=other_workspace, source="calendly", code="auth_failed")
    resolved.resolved_at = resolved.last_seen
    resolved.save()
    url = reverse("admin:workspaces_integrationerror_changelist")
    open_page = admin_client.get(url, {"resolved": "no"}).content.decode()
    assert "rate_limited" in open_page and "auth_failed" not in open_page
    by_source = admin_client.get(url, {"source": "calendly"}).content.decode()
    assert "auth_failed" in by_source and "rate_limited" not in by_source
