"""Small ORM factories for drafts tests (leads and messages straight in the DB)."""

from __future__ import annotations

import datetime as dt
import itertools

from django.utils import timezone

from leads.models import Lead
from messaging.models import Channel, Direction, Message

_seq = itertools.count(1)


def lead_create(*, workspace, **fields) -> Lead:
    n = next(_seq)
    defaults = {
        "first_name": "Dana",
        "last_name": f"Lead{n}",
        "email": f"dana{n}@example.com",
        "phone_e164": f"+1415555{n:04d}",
        "ghl_contact_id": f"contact-{n}",
    }
    defaults.update(fields)
    return Lead.objects.create(workspace=workspace, **defaults)


def message_create(
    *,
    lead: Lead,
    body: str,
    channel: str = Channel.SMS,
    direction: str = Direction.INBOUND,
    sent_at: dt.datetime | None = None,
    **fields,
) -> Message:
    n = next(_seq)
    return Message.objects.create(
        workspace=lead.workspace,
        lead=lead,
        channel=channel,
        direction=direction,
        body=body,
        sent_at=sent_at or timezone.now(),
        ghl_message_id=f"msg-{n}" if channel == Channel.SMS else "",
        emailbison_reply_id=f"reply-{n}" if channel == Channel.EMAIL else "",
        **fields,
    )
