"""Bench-only worker settings for ``bench/drafts/run.py --reuse-db-connections``: the project's
settings plus the change proposed for ``config/`` (not applied there; another team owns it).

Celery's Django fixup closes every database connection before and after each task unless
``CELERY_DB_REUSE_MAX`` is set, so each task pays a new PostgreSQL connection (and a backend with
cold catalog caches): ~7-8 ms per draft here. With it set, the fixup leaves connections open and
``close_old_connections`` around each task applies Django's own ``CONN_MAX_AGE`` and
``CONN_HEALTH_CHECKS`` instead (as for a web request).
"""

from celery.signals import task_postrun, task_prerun

from config.settings import *  # noqa: F403

CELERY_DB_REUSE_MAX = 1000


def _close_old_connections(**kwargs) -> None:
    from django.db import close_old_connections

    close_old_connections()


task_prerun.connect(_close_old_connections, weak=False, dispatch_uid="bench.close_old_connections.pre")
task_postrun.connect(_close_old_connections, weak=False, dispatch_uid="bench.close_old_connections.post")
