"""Where the project's tasks go (``CELERY_TASK_ROUTES``): each queue has its worker in the Procfile."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.celery_app import app

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("drafts.tasks.drafts_send", "sends"),
        ("drafts.tasks.draft_send", "sends"),
        ("drafts.tasks.classify_and_draft", "drafts"),
        ("availability.tasks.availability_refresh_workspace", "availability"),
        ("drafts.tasks.drafts_send_due", "celery"),
    ],
)
def test_each_task_goes_to_a_queue_a_procfile_worker_serves(task, queue):
    routed = app.amqp.router.route({}, task)["queue"].name
    assert routed == queue
    served = [line for line in PROCFILE.read_text().splitlines() if f"--queues={queue}" in line]
    assert served, f"no Procfile worker serves the {queue} queue"
