from __future__ import annotations

import json
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workspaces.admin_scoping import role_groups_sync
from workspaces.models import Membership, Role
from workspaces.services import operator_configure

# service field -> the flag that sets it
FLAG_OF = {"username": "username", "workspace": "--workspace", "role": "--role", "password": "--password-stdin"}


class Command(BaseCommand):
    help = (
        "Create or update a staff user (never a superuser) who sees and acts on only the given workspaces. "
        "The password is read from stdin (--password-stdin)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--workspace", action="append", default=[], metavar="SLUG", help="repeatable")
        # Not argparse choices: a bad role must exit through the same "nothing changed" path.
        parser.add_argument("--role", default=Role.OPERATOR, help="operator (default) or viewer")
        parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        parser.add_argument("--remove", action="store_true", help="remove the user's memberships of these workspaces")

    def handle(self, *args, username: str, workspace: list[str], role: str, **options) -> None:
        password = None
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\r\n")
        try:
            user, created = operator_configure(
                username=username,
                workspace_slugs=workspace,
                role=role,
                password=password,
                remove=options["remove"],
                role_groups=role_groups_sync,
            )
        except ValidationError as exc:
            problems = [f"{FLAG_OF.get(f, f)}: {'; '.join(m)}" for f, m in exc.message_dict.items()]
            raise CommandError("invalid operator configuration, nothing changed:\n  " + "\n  ".join(problems)) from None
        memberships = Membership.objects.filter(user=user).select_related("workspace").order_by("workspace__slug")
        self.stdout.write(
            json.dumps(
                {
                    "username": user.get_username(),
                    "created": created,
                    "is_staff": user.is_staff,
                    "is_superuser": user.is_superuser,
                    "has_password": user.has_usable_password(),
                    "memberships": [{"workspace": m.workspace.slug, "role": m.role} for m in memberships],
                    "groups": sorted(user.groups.values_list("name", flat=True)),
                },
                indent=2,
            )
        )
