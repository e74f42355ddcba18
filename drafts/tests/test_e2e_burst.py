"""End to end (issue 18): a burst of drafts on the production worker layout: one threads
worker on the drafts queue, many LLM calls in flight, few database connections."""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
from django.db import connection

from core.testing.fake_openai import fake_openai_server
from core.testing.processes import celery_worker, live_database_url, wait_until
from drafts.models import Draft, DraftStatus, MessageWorkClaim
from drafts.tasks import classify_and_draft
from drafts.tests.factories import lead_create, message_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POOL_MAX = 4


class ConnectionSampler(threading.Thread):
    """The most connections the worker (its ``application_name``) held at once (sampled from
    the ``postgres`` database)."""

    def __init__(self, *, application_name: str) -> None:
        super().__init__(daemon=True)
        self.application_name, self.peak, self.peak_rows = application_name, 0, []
        self._done = threading.Event()

    def run(self) -> None:
        settings_dict = connection.settings_dict
        with psycopg.connect(
            dbname="postgres",
            user=settings_dict["USER"],
            host=settings_dict["HOST"] or None,
            port=settings_dict["PORT"] or None,
            autocommit=True,
        ) as conn:
            while not self._done.is_set():
                rows = conn.execute(
                    "SELECT pid, state, left(query, 60) FROM pg_stat_activity WHERE application_name = %s",
                    [self.application_name],
                ).fetchall()
                if len(rows) > self.peak:
                    self.peak, self.peak_rows = len(rows), rows
                self._done.wait(0.02)

    def stop(self) -> int:
        self._done.set()
        self.join(timeout=5)
        return self.peak


def test_100_drafts_in_flight_hold_no_more_connections_than_the_pool(workspace):
    broker = os.environ.get("CELERY_BROKER_URL") or os.environ["TEST_REDIS_URL"]
    messages = [
        message_create(lead=lead_create(workspace=workspace), body=f"Interested, can we meet next week? #{n}")
        for n in range(100)
    ]
    application_name = f"leadline-burst-test-{os.getpid()}"
    with fake_openai_server(latency_s=2.0) as fake:
        env = {
            "DATABASE_URL": live_database_url(),
            "CELERY_BROKER_URL": broker,
            "RATE_LIMIT_REDIS_URL": broker,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": f"sk-test-burst-{time.monotonic_ns()}",  # a limiter key of its own
            "DATABASE_POOL_MAX_SIZE": str(POOL_MAX),
            "DRAFT_ONE_CALL": "true",  # production's default: one LLM call per draft
            "PGAPPNAME": application_name,  # libpq names the worker's sessions
        }
        sampler = ConnectionSampler(application_name=application_name)
        with celery_worker(env=env, pool="threads", concurrency=100, queues="drafts"):
            sampler.start()
            for message in messages:
                classify_and_draft.delay(message.pk)
            wait_until(
                lambda: Draft.objects.filter(status=DraftStatus.READY).count() == 100,
                timeout=180,
                what="100 ready drafts",
                interval=0.5,
            )
        peak = sampler.stop()

    # Each call waited 2 s on the LLM and at least 90 were in flight together...
    assert fake.max_in_flight >= 90, fake.max_in_flight
    # ...yet the worker never held more connections than its pool allows (none during the calls).
    assert 1 <= peak <= POOL_MAX, sampler.peak_rows
    assert not MessageWorkClaim.objects.exists()  # every claim given back
    assert Draft.objects.filter(status=DraftStatus.READY).count() == 100
