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


def _refresh_now(admin_client, snapshot):
    return admin_client.post(
        reverse("admin:availability_availabilitysnapshot_changelist"),
        {"action": "refresh_now", "_selected_action": [snapshot.pk]},
        follow=True,
    )


def test_refresh_now_enqueues_a_forced_refresh(admin_client, snapshot, monkeypatch):
    from availability import tasks

    published = []
    monkeypatch.setattr(
        tasks.availability_refresh_workspace,
        "apply_async",
        lambda *args, **kwargs: published.append(kwargs),
    )
    response = _refresh_now(admin_client, snapshot)
    assert response.status_code == 200
    assert "Refresh enqueued for 1 workspace(s)." in response.content.decode()
    assert published == [{"args": [snapshot.workspace_id], "kwargs": {"force": True}, "expires": None, "retry": False}]


def test_refresh_now_with_the_broker_down_shows_a_message_instead_of_a_500(admin_client, snapshot, monkeypatch):
    from kombu.exceptions import OperationalError

    from availability import tasks

    def down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.availability_refresh_workspace, "apply_async", down)
    response = _refresh_now(admin_client, snapshot)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Could not enqueue the refresh (OperationalError" in html
    assert "0 of 1 workspace(s) enqueued" in html


def test_forced_task_refreshes_a_workspace_in_failure_backoff(snapshot, monkeypatch):
    from availability import services, tasks
    from availability.services import RefreshOutcome, Status

    AvailabilitySnapshot.objects.filter(pk=snapshot.pk).update(
        consecutive_failures=3, next_attempt_at=timezone.now() + dt.timedelta(hours=2)
    )
    assert services.availability_refresh_by_id(workspace_id=snapshot.workspace_id).status == Status.NOT_DUE
    calls = []

    def refresh(*, workspace, force=False):
        calls.append(force)
        return RefreshOutcome(workspace_id=workspace.pk, slug=workspace.slug, status=Status.FRESH)

    monkeypatch.setattr(services, "availability_refresh", refresh)
    tasks.availability_refresh_workspace.run(snapshot.workspace_id, force=True)
    assert calls == [True]
