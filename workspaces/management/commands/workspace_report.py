from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from workspaces.models import Workspace
from workspaces.selectors import workspace_report


class Command(BaseCommand):
    help = "Print a workspace's state (leads, messages, drafts, open errors, availability, last sync)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout, nothing else")

    def handle(self, *args, slug: str, **options):
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is None:
            raise CommandError(f"slug: no workspace {slug!r}")
        report = workspace_report(workspace=workspace)
        if options["json"]:
            self.stdout.write(json.dumps(report))
            return
        self.stdout.write(f"Workspace {report['workspace']}")
        self.stdout.write(f"  leads: {report['leads']}  {report['leads_by_sentiment']}")
        self.stdout.write(f"  messages: {report['messages']}")
        self.stdout.write(f"  drafts: {report['drafts']}")
        self.stdout.write(f"  availability: {report['availability']}")
        self.stdout.write(f"  last sync: {report['last_sync']}")
        self.stdout.write(f"  open errors: {len(report['open_errors'])}")
        for err in report["open_errors"]:
            self.stdout.write(
                f"    [{err['source']}/{err['code']}] x{err['count']} last {err['last_seen']}: {err['message']}"
            )
