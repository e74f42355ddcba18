"""End to end: a real Celery worker is SIGKILLed while it waits on GHL's answer to a send.

The task is redelivered (``acks_late``, a short Redis visibility timeout) to a second real
worker; the outbound row written before the provider call makes it send nothing, and once the
lease is over the beat sweep settles the draft as unconfirmed. GHL saw one request in all.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from core.testing.clock import midday_zone
from core.testing.processes import celery_worker, live_database_url, wait_until
from drafts.models import Draft, DraftStatus
from drafts.tests.factories import lead_create, message_create
from messaging.models import Delivery, Message

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class _HangingGhl(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.sends: list[dict] = []
        self.stop = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.sends.append(json.loads(body or b"{}"))
        self.server.stop.wait(30)  # accepted, but the answer never comes in time
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_worker_killed_mid_send_never_sends_twice(workspace, tmp_path):
    from config.celery_app import app
    from drafts.sending import drafts_send_due, send_lease
    from drafts.tasks import draft_send

    broker = os.environ.get("TEST_REDIS_URL") or os.environ["CELERY_BROKER_URL"]
    lead = lead_create(workspace=workspace, timezone=midday_zone())
    message = message_create(lead=lead, body="Call me", sentiment="Interested")
    draft = Draft.objects.create(
        workspace=workspace, lead=lead, message=message, channel="sms", status=DraftStatus.APPROVED, content="Hi!"
    )
    ghl = _HangingGhl()
    threading.Thread(target=ghl.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    env = {
        "DATABASE_URL": live_database_url(),
        "CELERY_BROKER_URL": broker,
        "GHL_API_BASE_URL": f"http://127.0.0.1:{ghl.server_address[1]}",
        "CELERY_VISIBILITY_TIMEOUT_S": "2",
        "DRAFT_SEND_TIMEOUT_S": "20",
        "DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S": "25",
        "DRAFT_SEND_TASK_TIME_LIMIT_S": "30",
        "DRAFT_SEND_LEASE_MARGIN_S": "0",
    }
    app.conf.broker_url = broker
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "visibility_timeout": 2}
    app.control.purge()
    try:
        with celery_worker(env=env, concurrency=1) as first:
            draft_send.apply_async(args=[draft.pk, workspace.pk])
            wait_until(lambda: ghl.sends, 30, "the send to reach GHL")
            os.killpg(first.pid, signal.SIGKILL)  # mid-send: GHL has the request, we have no answer
            first.wait(10)
        outbound = Message.objects.get(draft_source=draft)
        assert outbound.delivery == Delivery.SENDING

        # kombu restores unacknowledged tasks under a Redis mutex that expires after 5 minutes; a
        # worker killed earlier in the suite may have left it held: this test is about our
        # redelivery, not that wait.
        redis.Redis.from_url(broker).delete("unacked_mutex")
        # A starting worker restores the unacknowledged tasks older than the visibility timeout
        # (2 s here) once; the next sweep comes ~100 s later. Let the timeout pass first.
        time.sleep(2.5)
        second_log = tmp_path / "second-worker.log"
        with celery_worker(env=env, concurrency=1, log_path=second_log):
            # The unacknowledged task comes back to the new worker: it finds the claimed send.
            wait_until(lambda: "'in_flight'" in second_log.read_text(), 60, "the redelivered task to run")
            assert len(ghl.sends) == 1
            assert Draft.objects.get(pk=draft.pk).status == DraftStatus.APPROVED
            # Past the lease (the hard limit: no worker can still be in that call) the sweep settles it.
            # (Backdated by the longer of the two processes' leases.)
            Message.objects.filter(pk=outbound.pk).update(created_at=outbound.created_at - send_lease())
            assert drafts_send_due() >= 1
            settled = wait_until(
                lambda: Draft.objects.filter(pk=draft.pk, status=DraftStatus.FAILED).first(), 30, "the draft to settle"
            )
    finally:
        ghl.stop.set()
        ghl.shutdown()
    assert settled.failure_reason == "send_unconfirmed"
    assert Message.objects.get(pk=outbound.pk).delivery == Delivery.UNCONFIRMED
    assert len(ghl.sends) == 1, "a killed worker's send was sent again"
