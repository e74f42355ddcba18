from __future__ import annotations

from django.core.management.base import BaseCommand

from core.services import periodic_tasks_install


class Command(BaseCommand):
    help = "Install or refresh the celery-beat schedule (idempotent)."

    def handle(self, *args, **options):
        for name, state in periodic_tasks_install():
            self.stdout.write(f"{state}: {name}")
