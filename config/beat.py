"""The celery-beat schedule, installed into django-celery-beat's tables by
``manage.py setup_periodic_tasks`` (idempotent: entries are matched by name)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


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
            task="messaging.tasks.sweep_unprocessed_messages",
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
    ]
