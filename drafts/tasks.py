from __future__ import annotations

import time

from celery import shared_task
from celery.signals import task_prerun
from django.conf import settings

TASK_NAME = "drafts.tasks.classify_and_draft"


@task_prerun.connect(weak=False, dispatch_uid="drafts.tasks.mark_started")
def _mark_started(sender=None, task=None, **kwargs) -> None:
    """Stamp when the worker starts running the task (before Celery's own pre-run work and
    Django's connection housekeeping), so a draft's ``total_ms`` includes them."""
    if getattr(task, "name", None) == TASK_NAME:
        task.request.drafts_started_at = time.monotonic()


@shared_task(
    name=TASK_NAME,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.DRAFT_TASK_SOFT_TIME_LIMIT_S,
    time_limit=settings.DRAFT_TASK_TIME_LIMIT_S,
)
def classify_and_draft(self, message_id: int) -> None:
    """Classify one inbound message and, for warm leads, write its reply draft."""
    from drafts.services import message_classify_and_draft

    # Failures end the message's open draft inside the service (under its lock); an unexpected
    # exception is re-raised from there, for the worker log and Sentry.
    started = getattr(self.request, "drafts_started_at", None) or time.monotonic()
    message_classify_and_draft(message_id=message_id, started=started)
