from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from workspaces.services import workspace_configure


class Command(BaseCommand):
    help = "Create the demo workspace and an admin user (prints the password once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--reset-password", action="store_true", help="give the existing admin a new password")

    def handle(self, *args, username: str, reset_password: bool, **options):
        workspace, created = workspace_configure(
            slug="demo",
            changes={
                "name": "Demo Workspace",
                "timezone": "America/New_York",
                "persona_name": "Alex",
                "company_name": "Demo Co",
                "offer_description": "Roof inspections and repairs",
            },
        )
        self.stdout.write(f"workspace 'demo' {'created' if created else 'already there'}")
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
