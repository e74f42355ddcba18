from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from availability.services import availability_refresh_many
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Refresh availability now, synchronously (all active workspaces with a booking provider, "
        "or one with --workspace), and print a summary. Ignores the failure backoff."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", metavar="SLUG", help="only this workspace")
        parser.add_argument("--concurrency", type=int, default=8, help="workspaces refreshed at once (default 8)")

    def handle(self, *args, **options):
        slug = options.get("workspace")
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        qs = Workspace.objects.filter(is_active=True)
        if slug:
            workspace = Workspace.objects.filter(slug=slug).first()
            if workspace is None:
                raise CommandError(f"--workspace: no workspace with slug {slug!r}")
            if not workspace.is_active:
                raise CommandError(f"--workspace: workspace {slug!r} is not active")
            ids = [workspace.pk]
        else:
            ids = list(qs.exclude(booking_provider="").order_by("pk").values_list("pk", flat=True))
        started = time.monotonic()
        outcomes = availability_refresh_many(workspace_ids=ids, force=True, concurrency=options["concurrency"])
        elapsed = time.monotonic() - started
        for o in outcomes:
            errors = ", ".join(f"{e.path or 'config'}:{e.code}" for e in o.errors) or "-"
            fallback = f" fallback={o.fallback_used}" if o.fallback_used else ""
            self.stdout.write(
                f"{o.slug}: {o.status} provider={o.provider or '-'} slots={o.slots}{fallback} "
                f"errors={errors} ({o.duration_s:.2f}s)"
            )
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing to refresh"
        self.stdout.write(f"refreshed {len(outcomes)} workspace(s) in {elapsed:.2f}s: {summary}")
