"""End to end: the broker is down while webhooks arrive; when it is back, the sweeper gets the drafts made.

Real processes: the web side under gunicorn pointed at a closed broker port,
then a real Celery worker on the real Redis (``TEST_REDIS_URL``) running the
sweeper task and ``classify_and_draft`` against a local fake OpenAI server.
"""

import json
import os
import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from core.testing.fake_openai import fake_openai_server
from core.testing.processes import celery_worker, free_port, gunicorn_server, live_database_url
from drafts.models import Draft
from messaging.models import Message
from messaging.tests.factories import SECRET, ghl_inbound, iso_ago
from workspaces.models import IntegrationError

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _broker_url() -> str:
    return os.environ.get("TEST_REDIS_URL") or os.environ["CELERY_BROKER_URL"]


def test_broker_down_webhook_answers_200_then_sweeper_gets_the_draft_made(workspace):
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    web_env = {"DATABASE_URL": live_database_url(), "CELERY_BROKER_URL": dead_broker}
    # The provider's date is a week old (a late redelivery, a wrong clock): the message was
    # received just now, so the sweeper's window still covers it.
    payload = ghl_inbound(body="Yes! Can we book a meeting tomorrow afternoon?", dateAdded=iso_ago(days=7))
    with gunicorn_server(env=web_env, workers=1) as base_url:
        # Warm the worker (imports, URL conf, DB connection) so the timing below is the
        # request's own: a webhook must answer, not wait on a broker that is not there.
        health = requests.get(f"{base_url}/healthz", timeout=10)
        assert health.status_code == 503 and health.json()["broker"] == "down"
        unauthorized = requests.post(f"{base_url}/webhooks/ghl/acme/", data="{}", timeout=10)
        assert unauthorized.status_code == 401
        started = time.monotonic()
        response = requests.post(
            f"{base_url}/webhooks/ghl/acme/",
            data=json.dumps(payload),
            headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
            timeout=10,
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "created"
    # The enqueue attempt is bounded by our own 1 s timeouts (producer pool, connect): twice that,
    # not the client's 10 s, shows the webhook never waited on the broker beyond them.
    assert elapsed < 2 * (1 + 1), f"webhook took {elapsed:.2f} s with the broker down"
    message = Message.objects.get(pk=response.json()["message_id"])
    assert message.work_enqueued_at is None
    assert timezone.now() - message.sent_at > timedelta(days=6)
    broker_error = IntegrationError.objects.get(workspace=workspace, source="broker", resolved_at__isnull=True)
    assert "enqueue" in broker_error.code

    # A minute later the broker is back: beat sends the sweeper, a real worker runs it.
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(seconds=60))
    from config.celery_app import app
    from drafts.tasks import sweep_unprocessed_messages

    app.conf.broker_url = _broker_url()
    app.control.purge()
    with fake_openai_server(latency_s=0.0, seed=1) as fake:
        worker_env = {
            "DATABASE_URL": live_database_url(),
            "CELERY_BROKER_URL": _broker_url(),
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-test-fake-0000",
        }
        with celery_worker(env=worker_env, concurrency=2):
            sweep_unprocessed_messages.apply_async(retry=False)
            deadline = time.monotonic() + 90
            draft = None
            while time.monotonic() < deadline:
                draft = Draft.objects.filter(message_id=message.pk).first()
                if draft is not None and draft.status not in ("pending", "generating"):
                    break
                time.sleep(0.25)
    assert draft is not None, "the sweeper did not get classify_and_draft run"
    assert draft.status == "ready", (draft.status, draft.error)
    assert draft.content
    message.refresh_from_db()
    assert message.classified_at is not None and message.work_enqueued_at is not None
    broker_error.refresh_from_db()
    assert broker_error.resolved_at is not None
