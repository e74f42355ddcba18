from __future__ import annotations

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from core.testing import demo
from core.testing.fakes import plan_write
from workspaces.models import Workspace
from workspaces.services import workspace_configure


def _has_real_credentials() -> bool:
    """Whether the demo workspace holds a provider token that is not the fakes' demo one."""
    workspace = Workspace.objects.filter(slug=demo.SLUG).first()
    if workspace is None:
        return False
    tokens = {workspace.ghl_token or "", workspace.emailbison_token or "", workspace.calendly_token or ""}
    return bool(tokens - {"", demo.GHL_TOKEN, demo.EMAILBISON_TOKEN})


class Command(BaseCommand):
    help = "Create the demo workspace and an admin user (prints the password once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--reset-password", action="store_true", help="give the existing admin a new password")
        parser.add_argument(
            "--fakes",
            metavar="FILE",
            help="plan the local provider fakes into FILE (python -m core.testing.fakes --serve FILE runs them) "
            "and point the demo workspace at them",
        )
        parser.add_argument(
            "--fakes-unless-credentials",
            action="store_true",
            help="with --fakes: only when the demo workspace holds no real provider credentials",
        )

    def handle(self, *args, username: str, reset_password: bool, fakes: str | None, **options):
        if fakes and options["fakes_unless_credentials"] and _has_real_credentials():
            self.stdout.write("workspace 'demo' holds provider credentials: no fakes")
            fakes = None
        workspace, created = workspace_configure(
            slug=demo.SLUG,
            changes={
                "name": "Demo Workspace",
                "timezone": "America/New_York",
                "persona_name": "Alex",
                "company_name": "Demo Co",
                "offer_description": "Roof inspections and repairs",
            },
        )
        self.stdout.write(f"workspace 'demo' {'created' if created else 'already there'}")
        if fakes:
            plan = plan_write(Path(fakes))
            workspace, _ = workspace_configure(slug=demo.SLUG, changes=demo.workspace_changes(plan))
            # The fakes sign GHL events as GHL does: the demo checks them as production would.
            Workspace.objects.filter(pk=workspace.pk).update(verify_ghl_signatures=True)
            self.stdout.write("workspace 'demo' points at the local provider fakes")
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None or reset_password:
            password = secrets.token_urlsafe(12)
            if user is None:
                User.objects.create_superuser(username=username, email="", password=password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            self.stdout.write(f"admin user: {username}  password: {password}")
        else:
            self.stdout.write(
                f"admin user {username!r} already exists (password unchanged; "
                "`manage.py bootstrap_demo --reset-password` prints a new one)"
            )
