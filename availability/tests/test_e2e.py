"""End to end against local fake providers: hanging and failing providers do not hold up the others."""

from __future__ import annotations

import os
import time

import pytest
from django.utils import timezone

from availability.models import AvailabilitySnapshot
from availability.services import Status, availability_refresh_many
from availability.tests.fake_providers import FakeProviders
from workspaces.models import IntegrationError
from workspaces.services import workspace_configure

TOKEN = "pit-11111111-2222-3333-4444-555555555555"
IDS = {name: (name * 20)[:20] for name in ("healthy", "hangfb", "failing", "pageid")}


def _setup(fake: FakeProviders):
    fake.backend[IDS["healthy"]] = "ok"
    fake.backend[IDS["hangfb"]] = "hang"
    fake.api[IDS["hangfb"]] = "ok"
    fake.api[IDS["failing"]] = "500"
    fake.pages["stuck-page"] = ("hang", IDS["pageid"])
    common = {"booking_provider": "ghl", "ghl_token": TOKEN}
    workspaces = {
        "healthy": {"ghl_booking_url": f"https://book.example.com/widget/booking/{IDS['healthy']}"},
        "hangfb": {
            "ghl_booking_url": f"https://book.example.com/widget/booking/{IDS['hangfb']}",
            "ghl_calendar_id": IDS["hangfb"],
        },
        "stuck": {"ghl_booking_url": f"{fake.base}/pages/widget/bookings/stuck-page", "ghl_token": ""},
        "failing": {"ghl_calendar_id": IDS["failing"]},
    }
    return {
        slug: workspace_configure(slug=slug, changes={**common, **changes})[0] for slug, changes in workspaces.items()
    }


@pytest.mark.django_db(transaction=True)
def test_concurrent_refresh_is_bounded_by_the_deadline(settings):
    settings.AVAILABILITY_FETCH_TIMEOUT_S = 1.0
    settings.AVAILABILITY_WORKSPACE_DEADLINE_S = 2.5
    with FakeProviders() as fake:
        for name, url in fake.urls.items():
            setattr(settings, name, url)
        workspaces = _setup(fake)
        started = time.monotonic()
        outcomes = {
            o.slug: o
            for o in availability_refresh_many(workspace_ids=[w.pk for w in workspaces.values()], concurrency=4)
        }
        elapsed = time.monotonic() - started

    # The workspaces ran side by side: the cycle took less than their durations added up.
    durations = [o.duration_s for o in outcomes.values()]
    assert elapsed < sum(durations), f"one cycle took {elapsed:.2f}s for {durations}"
    # Each ended by its 2.5 s deadline, not by the hanging fakes (they never answer): within one
    # more deadline of slack.
    assert max(durations) < 2 * settings.AVAILABILITY_WORKSPACE_DEADLINE_S, durations
    assert outcomes["healthy"].status == Status.FRESH and outcomes["healthy"].slots > 0
    assert outcomes["hangfb"].status == Status.FRESH
    assert outcomes["hangfb"].fallback_used == "calendar_config"
    assert [e.code for e in outcomes["hangfb"].errors] == ["booking_page_timeout"]
    assert outcomes["stuck"].status == Status.FAILED
    assert [e.code for e in outcomes["stuck"].errors] == ["booking_page_timeout"]
    assert outcomes["failing"].status == Status.FAILED
    assert [e.code for e in outcomes["failing"].errors] == ["provider_error"]
    open_codes = set(
        IntegrationError.objects.filter(source="availability", resolved_at=None).values_list("workspace__slug", "code")
    )
    assert open_codes == {
        ("hangfb", "booking_page_timeout"),
        ("stuck", "booking_page_timeout"),
        ("failing", "provider_error"),
    }


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_beat_dispatch_fans_out_on_a_real_celery_worker(settings):
    from availability.tasks import availability_refresh_dispatch
    from core.testing.processes import celery_worker, live_database_url

    broker = os.environ.get("CELERY_BROKER_URL") or os.environ.get("TEST_REDIS_URL")
    if not broker or not broker.startswith("redis://"):
        pytest.skip("needs CELERY_BROKER_URL / TEST_REDIS_URL pointing at Redis")
    with FakeProviders() as fake:
        workspaces = _setup(fake)
        env = {
            **fake.urls,
            "DATABASE_URL": live_database_url(),
            "CELERY_BROKER_URL": broker,
            "AVAILABILITY_FETCH_TIMEOUT_S": "1",
            "AVAILABILITY_WORKSPACE_DEADLINE_S": "3",
        }
        # Availability tasks are routed to their own queue (CELERY_TASK_ROUTES).
        with celery_worker(env=env, pool="threads", concurrency=8, queues="availability"):
            cycle_started = timezone.now()
            availability_refresh_dispatch.delay()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                done = AvailabilitySnapshot.objects.filter(
                    workspace__in=workspaces.values(), last_attempt_at__gte=cycle_started
                ).count()
                if done == len(workspaces):
                    break
                time.sleep(0.2)

    snaps = {s.workspace.slug: s for s in AvailabilitySnapshot.objects.select_related("workspace")}
    assert set(snaps) == set(workspaces), snaps
    assert all(s.last_attempt_at and s.last_attempt_at >= cycle_started for s in snaps.values()), snaps
    # Each refresh (as the task measured it, without queue time) ended by its 3 s deadline, not
    # by the hanging fakes: within one more deadline of slack.
    assert all(s.last_duration_ms < 2 * 3000 for s in snaps.values()), snaps
    assert snaps["healthy"].fetched_at is not None and snaps["healthy"].slot_count > 0
    assert snaps["hangfb"].fallback_used == "calendar_config"
    assert snaps["failing"].consecutive_failures == 1
