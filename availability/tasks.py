"""Thin Celery tasks: the beat dispatcher fans out one refresh per due workspace."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

# Above the per-workspace deadline, so the service always finishes (and saves) first.
REFRESH_SOFT_TIME_LIMIT_S = int(settings.AVAILABILITY_WORKSPACE_DEADLINE_S) + 15
REFRESH_TIME_LIMIT_S = int(settings.AVAILABILITY_WORKSPACE_DEADLINE_S) + 30


@shared_task(
    name="availability.tasks.availability_refresh_dispatch",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=30,
    time_limit=60,
    ignore_result=True,
)
def availability_refresh_dispatch() -> int:
    """Enqueue one refresh task per active, due workspace; returns how many were enqueued."""
    from availability.selectors import availability_due_workspace_ids

    workspace_ids = availability_due_workspace_ids()
    for workspace_id in workspace_ids:
        availability_refresh_workspace.delay(workspace_id)
    return len(workspace_ids)


@shared_task(
    name="availability.tasks.availability_refresh_workspace",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=REFRESH_SOFT_TIME_LIMIT_S,
    time_limit=REFRESH_TIME_LIMIT_S,
    ignore_result=True,
)
def availability_refresh_workspace(workspace_id: int) -> None:
    from availability.services import availability_refresh_by_id

    availability_refresh_by_id(workspace_id=workspace_id)
