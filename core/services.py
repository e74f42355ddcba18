from __future__ import annotations

import json

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

MANAGED_PREFIX = "leadline: "


@transaction.atomic
def periodic_tasks_install() -> list[tuple[str, str]]:
    """Create/update the beat entries by name; disable managed entries no longer declared.

    Running it twice changes nothing the second time (returns "unchanged").
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    results: list[tuple[str, str]] = []
    declared = set()
    # The schedule is declared in config (above every app); core reads it through settings.
    for entry in import_string(settings.BEAT_ENTRIES)():
        declared.add(entry.name)
        interval, _ = IntervalSchedule.objects.get_or_create(every=entry.every_seconds, period=IntervalSchedule.SECONDS)
        wanted = {
            "task": entry.task,
            "interval": interval,
            "crontab": None,
            "enabled": True,
            "description": entry.description,
            "args": json.dumps([]),
            "kwargs": json.dumps({}),
        }
        task = PeriodicTask.objects.filter(name=entry.name).first()
        if task is None:
            PeriodicTask.objects.create(name=entry.name, **wanted)
            results.append((entry.name, "created"))
            continue
        changed = [k for k, v in wanted.items() if getattr(task, k) != v]
        if changed:
            for key in changed:
                setattr(task, key, wanted[key])
            task.save()
            results.append((entry.name, "updated"))
        else:
            results.append((entry.name, "unchanged"))
    for task in PeriodicTask.objects.filter(name__startswith=MANAGED_PREFIX, enabled=True).exclude(name__in=declared):
        task.enabled = False
        task.save()
        results.append((task.name, "disabled"))
    return results
