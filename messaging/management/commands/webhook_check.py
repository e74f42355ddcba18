from __future__ import annotations

import json
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from messaging.selectors import ghl_delivery_preview
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Dry run of a GHL webhook body (read from stdin) for a workspace: how Leadline would read it "
        "(lead match, channel, text, time, dedupe key) or the precise refusal. Writes nothing. "
        "Exits 1 when the body would be refused."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args, slug: str, **options):
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is None:
            raise CommandError(f"slug: no workspace {slug!r}")
        stream = options.get("stdin") or sys.stdin
        raw = getattr(stream, "buffer", stream).read(settings.WEBHOOK_MAX_BODY_BYTES + 1)
        preview = ghl_delivery_preview(workspace=workspace, raw=raw.encode() if isinstance(raw, str) else raw)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "workspace": workspace.slug,
                        "status": preview.status,
                        "outcome": preview.outcome,
                        "error": preview.error,
                        "reading": dict(preview.rows),
                        "notes": list(preview.notes),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            self.stdout.write(f"Dry run for workspace {workspace.slug} (nothing is written)")
            self.stdout.write(f"would answer: {preview.status} {preview.outcome}")
            if preview.error:
                self.stdout.write(f"  error: {preview.error}")
            width = max((len(label) for label, _ in preview.rows), default=0)
            for label, value in preview.rows:
                self.stdout.write(f"  {label.ljust(width)}  {value}")
            for note in preview.notes:
                self.stdout.write(f"  note: {note}")
        if preview.outcome == "refused":
            raise CommandError(f"refused ({preview.status}): {preview.error}", returncode=1)
