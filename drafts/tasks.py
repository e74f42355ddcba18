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
    from drafts import llm
    from drafts.services.pipeline import message_classify_and_draft

    # Failures end the message's open draft inside the service (under its lock); an unexpected
    # exception is re-raised from there, for the worker log and Sentry.
    started = getattr(self.request, "drafts_started_at", None) or time.monotonic()
    try:
        message_classify_and_draft(message_id=message_id, started=started)
    finally:
        llm.calls_ordered_by(None)  # this worker thread's next task sets its own order


_SEND_TASK_OPTIONS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S,
    "time_limit": settings.DRAFT_SEND_TASK_TIME_LIMIT_S,
    "ignore_result": True,
}


@shared_task(name="drafts.tasks.drafts_send", **_SEND_TASK_OPTIONS)
def drafts_send(draft_ids: list[int], workspace_id: int) -> dict[int, str]:
    """Send approved drafts of one workspace together (up to DRAFT_SEND_BATCH_SIZE), each at
    most once (a redelivery finds the sends already claimed)."""
    from drafts.sending import drafts_send as drafts_send_service

    return drafts_send_service(draft_ids=[int(draft_id) for draft_id in draft_ids], workspace_id=workspace_id)


@shared_task(name="drafts.tasks.draft_send", **_SEND_TASK_OPTIONS)
def draft_send(draft_id: int, workspace_id: int) -> str:
    """One draft's send: what versions before ``drafts_send`` queued (kept so that a task
    still in the broker at deploy runs), and a handy entry for one draft."""
    from drafts.sending import draft_send as draft_send_service

    return draft_send_service(draft_id=draft_id, workspace_id=workspace_id)


@shared_task(name="drafts.tasks.drafts_send_due", acks_late=True, soft_time_limit=50, time_limit=58, ignore_result=True)
def drafts_send_due() -> int:
    """Every minute (celery beat): scheduled sends whose window opened, lost enqueues, stuck sends."""
    from drafts.sending import drafts_send_due as drafts_send_due_service

    return drafts_send_due_service()


@shared_task(
    name="drafts.tasks.sweep_unprocessed_messages",
    acks_late=True,
    soft_time_limit=50,
    time_limit=58,
    ignore_result=True,
)
def sweep_unprocessed_messages() -> int:
    """Every minute (celery beat): enqueue classify+draft work the webhooks could not enqueue."""
    from drafts.services.sweeper import message_sweep_unprocessed

    return message_sweep_unprocessed()
