from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings


@shared_task(
    name="drafts.tasks.classify_and_draft",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.DRAFT_TASK_SOFT_TIME_LIMIT_S,
    time_limit=settings.DRAFT_TASK_TIME_LIMIT_S,
)
def classify_and_draft(message_id: int) -> None:
    """Classify one inbound message and, for warm leads, write its reply draft."""
    from drafts.services import draft_fail_open, message_classify_and_draft

    try:
        message_classify_and_draft(message_id=message_id)
    except SoftTimeLimitExceeded:
        # Generation handles this itself; this covers the steps around it.
        draft_fail_open(message_id=message_id, failure_reason="timeout", error="the task's soft time limit was reached")
