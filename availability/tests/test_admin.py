from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from availability.models import AvailabilitySnapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def snapshot(workspace):
    return AvailabilitySnapshot.objects.create(
        workspace=workspace,
        provider="ghl",
        slots_utc=[(timezone.now() + dt.timedelta(days=1)).isoformat()],
        fetched_at=timezone.now() - dt.timedelta(hours=2),
        stale_at=timezone.now() - dt.timedelta(hours=1),
        last_error="calendar_config: ghl GET /calendars/x/free-slots -> 500: HTTP 500",
        fallback_used="last_good_slots",
    )


def test_workspace_admin_shows_the_availability_inline(admin_client, workspace, snapshot):
    response = admin_client.get(reverse("admin:workspaces_workspace_change", args=[workspace.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "last_good_slots" in html
    assert "HTTP 500" in html
    assert workspace.ghl_token not in html


def test_snapshot_admin_list_and_detail(admin_client, snapshot):
    response = admin_client.get(reverse("admin:availability_availabilitysnapshot_changelist"))
    assert response.status_code == 200
    assert "last_good_slots" in response.content.decode()
    response = admin_client.get(reverse("admin:availability_availabilitysnapshot_change", args=[snapshot.pk]))
    assert response.status_code == 200
