from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.redaction import mask_secret
from workspaces.models import SECRET_FIELDS, Workspace
from workspaces.selectors import workspace_webhook_urls
from workspaces.services import CONFIGURABLE, workspace_configure


def workspace_public_json(workspace: Workspace) -> dict:
    data = {
        "slug": workspace.slug,
        "name": workspace.name,
        "timezone": workspace.timezone,
        "is_active": workspace.is_active,
        "ghl_location_id": workspace.ghl_location_id,
        "emailbison_base_url": workspace.emailbison_base_url,
        "booking_provider": workspace.booking_provider or None,
        "ghl_calendar_id": workspace.ghl_calendar_id,
        "ghl_booking_url": workspace.ghl_booking_url,
        "calendly_event_type_uri": workspace.calendly_event_type_uri,
        "calendly_booking_url": workspace.calendly_booking_url,
        "persona_name": workspace.persona_name,
        "company_name": workspace.company_name,
        "slots_to_offer": workspace.slots_to_offer,
        "sms_send_window": f"{workspace.sms_send_start:%H:%M}-{workspace.sms_send_end:%H:%M}",
        "sla_minutes": {"sms": workspace.sla_sms_minutes, "email": workspace.sla_email_minutes},
    }
    data.update({name: mask_secret(getattr(workspace, name)) or None for name in SECRET_FIELDS})
    data["webhook_urls"] = workspace_webhook_urls(workspace=workspace)
    return data


class Command(BaseCommand):
    help = "Create or update a workspace; prints its JSON (secrets masked) with its webhook URLs."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        for field in CONFIGURABLE:
            if field.flag:
                parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=field.parse)
        active = parser.add_mutually_exclusive_group()
        active.add_argument("--active", dest="is_active", action="store_true", default=None)
        active.add_argument("--inactive", dest="is_active", action="store_false")

    def handle(self, *args, slug: str, **options):
        changes = {f.name: options[f.name] for f in CONFIGURABLE if f.flag and options.get(f.name) is not None}
        if options.get("is_active") is not None:
            changes["is_active"] = options["is_active"]
        try:
            workspace, created = workspace_configure(slug=slug, changes=changes)
        except ValidationError as exc:
            problems = []
            for field, messages in exc.message_dict.items():
                flag = "slug" if field == "slug" else f"--{field.replace('_', '-')}"
                problems.append(f"{flag}: {'; '.join(messages)}")
            raise CommandError(
                "invalid workspace configuration, nothing changed:\n  " + "\n  ".join(problems)
            ) from None
        out = workspace_public_json(workspace)
        out["created"] = created
        self.stdout.write(json.dumps(out, indent=2))
