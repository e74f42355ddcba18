import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init

from config.beat import beat_schedule

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("leadline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _install_beat_schedule(sender: Celery, **kwargs) -> None:
    """Beat runs the project's schedule on any database: django-celery-beat writes
    ``beat_schedule`` into its tables when beat starts (config/beat.py)."""
    sender.conf.beat_schedule = beat_schedule()


def _close_old_connections(task=None, **kwargs) -> None:
    """Around each task, Django's own per-request rule for database connections: close one that
    is older than ``CONN_MAX_AGE``, failed its health check or saw an error; keep the rest.

    Without this (and ``CELERY_DB_REUSE_MAX`` in settings) Celery's Django fixup closes the
    connection before and after every task, and each draft pays a new PostgreSQL connection
    (~7 ms here: docs/benchmarks.md).
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return  # run in the caller's process (``apply()``, eager mode): its connection, maybe its transaction
    from django.db import close_old_connections

    close_old_connections()


task_prerun.connect(_close_old_connections, weak=False, dispatch_uid="config.close_old_connections.pre")
task_postrun.connect(_close_old_connections, weak=False, dispatch_uid="config.close_old_connections.post")


def _check_worker_settings(**kwargs) -> None:
    """Workers do not run Django's system checks: the ones about the worker's own settings
    (draft time limits) run at its start, and a worker with impossible limits exits at once."""
    from django.core.exceptions import ImproperlyConfigured

    from drafts.checks import check_draft_time_limits

    errors = check_draft_time_limits()
    if errors:
        # SystemExit: Celery logs and swallows ordinary exceptions raised by signal handlers.
        raise SystemExit(str(ImproperlyConfigured("; ".join(f"{e.id}: {e.msg}" for e in errors))))


worker_init.connect(_check_worker_settings, weak=False, dispatch_uid="config.check_worker_settings")
