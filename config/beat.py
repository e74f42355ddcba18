"""The project's celery-beat schedule, declared once.

Beat runs it whether or not anybody ran ``setup_periodic_tasks``:
``config.celery_app`` puts :func:`beat_schedule` into Celery's
``beat_schedule``, which django-celery-beat's ``DatabaseScheduler`` writes into
its tables (by name) every time beat starts. ``manage.py setup_periodic_tasks``
installs the same entries explicitly (and disables managed entries that are no
longer declared).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings

# With the periodic GHL sync off, its entry stays declared at this period and the task does
# nothing: turning the sync off takes effect at once, whatever beat's tables still hold.
GHL_SYNC_OFF_PERIOD_S = 24 * 3600


@dataclass(frozen=True)
class PeriodicEntry:
    name: str
    task: str
    every_seconds: int
    description: str


def beat_entries() -> list[PeriodicEntry]:
    return [
        PeriodicEntry(
            name="leadline: sweep inbound messages without classification/draft work",
            task="drafts.tasks.sweep_unprocessed_messages",
            every_seconds=60,
            description="Enqueues classify_and_draft for inbound messages the webhook could not enqueue.",
        ),
        PeriodicEntry(
            name="leadline: send due drafts",
            task="drafts.tasks.drafts_send_due",
            every_seconds=60,
            description="Sends scheduled drafts whose send window opened, and approved drafts whose enqueue was lost.",
        ),
        PeriodicEntry(
            name="leadline: speed-to-lead SLA scan",
            task="inbox.tasks.sla_scan",
            every_seconds=60,
            description="Raises an SLA breach for each lead waiting past the SLA, resolves it once answered.",
        ),
        PeriodicEntry(
            name="leadline: refresh availability",
            task="availability.tasks.availability_refresh_dispatch",
            every_seconds=settings.AVAILABILITY_REFRESH_MINUTES * 60,
            description="Fans out one availability refresh per active, due workspace.",
        ),
        PeriodicEntry(
            name="leadline: incremental GHL sync",
            task="ghl.tasks.ghl_sync_dispatch",
            every_seconds=settings.GHL_SYNC_INTERVAL_S or GHL_SYNC_OFF_PERIOD_S,
            description="Starts an incremental sync of every active GHL workspace "
            "(does nothing while GHL_SYNC_INTERVAL_S is 0, the default).",
        ),
    ]


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The entries in Celery's ``beat_schedule`` form (what django-celery-beat installs at start)."""
    return {
        entry.name: {"task": entry.task, "schedule": timedelta(seconds=entry.every_seconds)} for entry in beat_entries()
    }
