from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from ghl.services import SyncCannotRun, sync_dispatch_periodic, sync_run_abort, sync_run_execute


@shared_task(
    name="ghl.tasks.ghl_sync_run",
    soft_time_limit=settings.GHL_SYNC_TASK_SOFT_TIME_LIMIT_S,
    time_limit=settings.GHL_SYNC_TASK_TIME_LIMIT_S,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def ghl_sync_run(run_id: int, shard: int = 0) -> None:
    """One shard of a SyncRun ("Sync all now", the periodic sync). Idempotent: message import is
    keyed by GHL message id, and a run that is no longer running is left alone."""
    try:
        sync_run_execute(run_id=run_id, shard=shard)
    except SyncCannotRun:
        pass  # recorded on the run and as an IntegrationError
    except SoftTimeLimitExceeded:
        sync_run_abort(run_id=run_id, reason="stopped at the task's soft time limit")
        raise


@shared_task(name="ghl.tasks.ghl_sync_dispatch", soft_time_limit=50, time_limit=58, acks_late=True, ignore_result=True)
def ghl_sync_dispatch() -> int:
    """celery beat: start an incremental sync of every active GHL workspace (when enabled)."""
    return sync_dispatch_periodic()
