from __future__ import annotations

import sys
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ghl.services import (
    LeadSyncOutcome,
    SyncAlreadyRunning,
    SyncCannotRun,
    sync_run_abort,
    sync_run_execute,
    sync_run_start,
)
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Sync every lead of a workspace with GHL (contacts, conversations, missing messages). "
        "Progress bar on a TTY, a summary at the end; exits 0 unless the sync as a whole could not run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="workspace slug")
        parser.add_argument(
            "--concurrency", type=int, default=None, help="leads synced in parallel (default SYNC_ALL_CONCURRENCY)"
        )
        parser.add_argument("--incremental", action="store_true", help="stop at the first known page of messages")

    def handle(self, *args, workspace: str, concurrency: int | None, incremental: bool, **options):
        if concurrency is not None and not (1 <= concurrency <= 32):
            raise CommandError("--concurrency: must be between 1 and 32")
        ws = Workspace.objects.filter(slug=workspace).first()
        if ws is None:
            raise CommandError(f"--workspace: no workspace {workspace!r}")
        started = time.monotonic()
        try:
            run = sync_run_start(workspace=ws, trigger="command", mode="incremental" if incremental else "full")
        except SyncAlreadyRunning as exc:
            raise CommandError(f"{exc}; try again when it ends") from exc

        bar = tqdm(total=run.leads_total, unit="lead", file=sys.stderr, disable=not sys.stderr.isatty())
        lock = threading.Lock()

        def on_lead(outcome: LeadSyncOutcome) -> None:
            with lock:
                bar.update(1)

        try:
            run = sync_run_execute(run_id=run.pk, concurrency=concurrency, on_lead=on_lead)
        except SyncCannotRun as exc:
            raise CommandError(f"sync of {ws.slug} could not run: {exc}") from exc
        except BaseException:  # Ctrl-C or a crash: the run must not stay "running"
            sync_run_abort(run_id=run.pk, reason="interrupted")
            raise
        finally:
            bar.close()
        wall = time.monotonic() - started
        self.stdout.write(
            f"sync {ws.slug} #{run.pk} {run.status}: ok {run.leads_ok}, skipped {run.leads_skipped}, "
            f"failed {run.leads_failed} of {run.leads_total} leads; messages imported {run.messages_imported}; "
            f"429s {run.rate_limited}; requests {run.requests}; wall {wall:.1f}s"
        )
        for code, entry in sorted(run.errors.items()):
            self.stdout.write(f"  {code}: {entry['count']} ({entry['message']})")
