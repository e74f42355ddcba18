"""Payload builders for webhook tests (shapes from API-NOTES.md)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django.test import Client

SECRET = "whsec-acme-0123456789abcdef"
_seq = itertools.count(1)


def iso_ago(*, z: bool = True, **delta: float) -> str:
    """An ISO 8601 UTC time ``delta`` before now (``minutes=5``): payload dates stay
    recent whatever day the suite runs on. ``z=False`` writes ``+00:00``."""
    text = (datetime.now(UTC) - timedelta(**delta)).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if z else text


def ghl_inbound(**overrides: Any) -> dict[str, Any]:
    n = next(_seq)
    payload = {
        "type": "InboundMessage",
        "locationId": "LOC_ACME_123",
        "contactId": f"contact-{n}",
        "conversationId": f"conv-{n}",
        "messageId": f"msg-{n}",
        "body": "Yes, I'd like a quote for the roof",
        "messageType": "SMS",
        "direction": "inbound",
        "status": "delivered",
        "contentType": "text/plain",
        "dateAdded": iso_ago(minutes=2),
        "attachments": [],
    }
    payload.update(overrides)
    return payload


def ghl_custom(**overrides: Any) -> dict[str, Any]:
    payload = {
        "contact_id": "cw-contact-1",
        "first_name": "Jane",
        "last_name": "Doe",
        "full_name": "Jane Doe",
        "email": "Jane.Doe@Example.com",
        "phone": "(415) 555-2671",
        "tags": "lead,roof",
        "location": {"id": "LOC_ACME_123", "name": "Acme"},
        "workflow": {"id": "wf1", "name": "Inbound"},
        "message": {"type": 2, "body": "Can you call me tomorrow?", "direction": "inbound"},
        "customData": {"source": "sms"},
        "date_created": iso_ago(minutes=3),
    }
    payload.update(overrides)
    return payload


def emailbison(event_type: str = "LEAD_REPLIED", **data_overrides: Any) -> dict[str, Any]:
    n = next(_seq)
    data = {
        "reply": {
            "id": 1000 + n,
            "uuid": f"uuid-{n}",
            "email_subject": "Re: your roof",
            "text_body": "Sounds interesting, tell me more",
            "html_body": "<p>Sounds interesting, tell me more</p>",
            "from_email_address": f"lead{n}@example.com",
            "from_name": "Lead Person",
            "date_received": iso_ago(minutes=4),
            "interested": False,
            "automated_reply": False,
            "folder": "Inbox",
        },
        "lead": {"id": 500 + n, "email": f"lead{n}@example.com", "first_name": "Lee", "last_name": "Person"},
        "campaign": {"id": 1, "name": "Roofs"},
        "sender_email": {"id": 7, "email": "sales@acme.test", "status": "Connected"},
        "scheduled_email": {"id": 9000 + n, "email_subject": "Roofs", "email_body": "Hi there", "sent_at": None},
    }
    data.update(data_overrides)
    return {
        "event": {"type": event_type, "name": event_type.title(), "instance_url": "https://eb.test", "workspace_id": 1},
        "data": data,
    }


def post(client: Client, provider: str, payload: Any, *, slug: str = "acme", secret: str | None = SECRET, **headers):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    if secret is not None:
        extra["HTTP_X_WEBHOOK_SECRET"] = secret
    return client.post(f"/webhooks/{provider}/{slug}/", data=body, content_type="application/json", **extra)
