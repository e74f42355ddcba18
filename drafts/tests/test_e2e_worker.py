"""End to end: a real Celery worker process drafts against the fake Responses API."""

from __future__ import annotations

import os
import time

import pytest

from core.testing.fake_openai import fake_openai_server
from core.testing.processes import celery_worker, live_database_url
from drafts.models import Draft, DraftStatus
from drafts.tasks import classify_and_draft
from drafts.tests.factories import lead_create, message_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _wait_final(message, timeout: float) -> Draft:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        draft = Draft.objects.filter(message=message).first()
        if draft is not None and draft.status not in (DraftStatus.PENDING, DraftStatus.GENERATING):
            return draft
        time.sleep(0.1)
    raise AssertionError(f"no final draft for message {message.pk} within {timeout}s")


def test_worker_drafts_and_times_out_a_hanging_llm_before_its_soft_limit(workspace):
    broker = os.environ.get("CELERY_BROKER_URL") or os.environ["TEST_REDIS_URL"]
    with fake_openai_server() as fake:
        env = {
            "DATABASE_URL": live_database_url(),
            "CELERY_BROKER_URL": broker,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-test-fake-0000",
            "DRAFT_TASK_SOFT_TIME_LIMIT_S": "4",
            "DRAFT_TASK_TIME_LIMIT_S": "6",
            "OPENAI_DRAFT_TIMEOUT_S": "1",
            "OPENAI_CLASSIFY_TIMEOUT_S": "1",
        }
        with celery_worker(env=env, concurrency=1):
            ok = message_create(lead=lead_create(workspace=workspace), body="Interested, can we meet?")
            classify_and_draft.delay(ok.pk)
            draft = _wait_final(ok, timeout=30)
            assert draft.status == DraftStatus.READY and draft.content

            fake.enqueue("ok")  # classification answers, then the draft call hangs
            fake.hang = True
            hanging = message_create(lead=lead_create(workspace=workspace), body="interested")
            classify_and_draft.delay(hanging.pk)
            draft = _wait_final(hanging, timeout=30)

            fake.hang = False
            fake.enqueue("ok", *["trickle"] * 4)  # then every draft answer crawls in byte by byte
            trickled = message_create(lead=lead_create(workspace=workspace), body="interested")
            classify_and_draft.delay(trickled.pk)
            slow = _wait_final(trickled, timeout=30)

    for final in (draft, slow):
        assert final.status == DraftStatus.FAILED and final.failure_reason == "timeout" and final.content == ""
        # Our deadline ended it (chain deadline: 4 s soft limit - 1 s), not the soft-limit backstop.
        assert final.error.startswith("OpenAI call failed: timeout"), final.error
        # Measured by the task from its start (no queue time): it ended before the next mechanism,
        # the 4 s soft limit, would have (the fake hangs for an hour; trickling takes ~40 s).
        assert final.usage["timing"]["total_ms"] < 4000
