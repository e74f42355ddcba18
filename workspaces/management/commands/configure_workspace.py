from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.redaction import mask_secret
from workspaces.models import SECRET_FIELDS, Workspace
from workspaces.selectors import workspace_webhook_urls
from workspaces.services import workspace_configure

# flag -> model field
FLAGS = {
    "name": "name",
    "timezone": "timezone",
    "webhook_secret": "webhook_secret",
    "ghl_location_id": "ghl_location_id",
    "ghl_token": "ghl_token",
    "emailbison_base_url": "emailbison_base_url",
    "emailbison_token": "emailbison_token",
    "calendly_token": "calendly_token",
    "booking_provider": "booking_provider",
    "ghl_calendar_id": "ghl_calendar_id",
    "ghl_booking_url": "ghl_booking_url",
    "calendly_event_type_uri": "calendly_event_type_uri",
    "calendly_booking_url": "calendly_booking_url",
    "persona_name": "persona_name",
    "persona_tone": "persona_tone",
    "company_name": "company_name",
    "offer_description": "offer_description",
    "signature": "signature",
    "slots_to_offer": "slots_to_offer",
    "sms_send_window": "sms_send_window",
    "sla_sms_minutes": "sla_sms_minutes",
    "sla_email_minutes": "sla_email_minutes",
    "sla_notify_email": "sla_notify_email",
    "sla_notify_webhook_url": "sla_notify_webhook_url",
}


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
        for flag in FLAGS:
            kwargs = {"dest": flag}
            if flag in ("slots_to_offer", "sla_sms_minutes", "sla_email_minutes"):
                kwargs["type"] = int
            parser.add_argument(f"--{flag.replace('_', '-')}", **kwargs)
        active = parser.add_mutually_exclusive_group()
        active.add_argument("--active", dest="is_active", action="store_true", default=None)
        active.add_argument("--inactive", dest="is_active", action="store_false")

    def handle(self, *args, slug: str, **options):
        changes = {field: options[flag] for flag, field in FLAGS.items() if options.get(flag) is not None}
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
