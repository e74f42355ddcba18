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
    """Enqueue one refresh task per active, due workspace; returns how many were enqueued.

    Each workspace is marked queued first, so a workspace whose task still
    waits in the queue is not enqueued again by the next beat; the task
    expires when the mark lapses. If the broker fails, the workspaces not
    enqueued are unmarked (the next beat tries again).
    """
    from availability.services import availability_mark_queued, availability_unmark_queued

    workspace_ids, expires = availability_mark_queued()
    for index, workspace_id in enumerate(workspace_ids):
        try:
            enqueue_refresh(workspace_id, expires=expires)
        except Exception:
            availability_unmark_queued(workspace_ids=workspace_ids[index:])
            raise
    return len(workspace_ids)


def enqueue_refresh(workspace_id: int, *, force: bool = False, expires=None) -> None:
    """Publish one refresh task; raises (kombu ``OperationalError``) at once if the broker is down.

    ``retry=False``: no publish retries, so a caller (the admin) is never held
    up by an unreachable broker.
    """
    availability_refresh_workspace.apply_async(
        args=[workspace_id], kwargs={"force": force} if force else {}, expires=expires, retry=False
    )


@shared_task(
    name="availability.tasks.availability_refresh_workspace",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=REFRESH_SOFT_TIME_LIMIT_S,
    time_limit=REFRESH_TIME_LIMIT_S,
    ignore_result=True,
)
def availability_refresh_workspace(workspace_id: int, force: bool = False) -> None:
    """Refresh one workspace. ``force`` (the admin's "refresh now") ignores the failure backoff."""
    from availability.services import availability_refresh_by_id

    availability_refresh_by_id(workspace_id=workspace_id, force=force)
