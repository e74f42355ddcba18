from __future__ import annotations

from django.core.management.base import BaseCommand

from workspaces.services import workspace_credentials_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored credential with the first FIELD_ENCRYPTION_KEY. "
        "Rotate by prepending a new key, running this, then removing the old key."
    )

    def handle(self, *args, **options):
        count = workspace_credentials_reencrypt()
        self.stdout.write(f"re-encrypted credentials of {count} workspace(s)")
