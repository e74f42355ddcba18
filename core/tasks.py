from __future__ import annotations

from celery import shared_task


@shared_task(name="core.tasks.ping", soft_time_limit=5, time_limit=10)
def ping() -> str:
    """Liveness probe: proves a worker consumes from the configured broker."""
    return "pong"
