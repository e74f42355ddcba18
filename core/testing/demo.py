"""The demo of ``make dev``: what the fake providers hold and the inbound script replayed over the
real webhooks (signed and authenticated as production requires).

The script: a lead texting to ask for times, an interested email lead, an SMS opt-out, an
out-of-office email, a bounce, and a booking page whose widget never answers (the refresh
falls back to the calendar id and records an integration error). Then a GHL sync of the
location. No app code is imported: everything goes through HTTP and ``manage.py``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SLUG = "demo"
LOCATION_ID = "DemoLocation00000001"
CALENDAR_ID = "DemoCalendar00000001"  # answers free-slots through the API (the fallback)
HANGING_CALENDAR_ID = "DemoHangingCal000001"  # its public widget endpoint never answers
GHL_TOKEN = "pit-demo0000-0000-0000-0000-000000000000"
EMAILBISON_TOKEN = "demo-emailbison-token-not-real"

SMS_LEADS = [
    # (contact id, first name, last name, phone, inbound text)
    (
        "DemoContactDana00001",
        "Dana",
        "Whitfield",
        "+14155550101",
        "Hi! Yes, we'd like someone to look at the roof. What times do you have to meet this week?",
    ),
    ("DemoContactOwen00002", "Owen", "Marsh", "+14155550102", "STOP. Please remove me from this list."),
]
EMAIL_LEADS = [
    # (lead id, reply id, first, last, email, event type, subject, text)
    (
        9101,
        88001,
        "Priya",
        "Natarajan",
        "priya@northwind.example",
        "LEAD_INTERESTED",
        "Re: Roof inspection for Northwind",
        "This sounds good and I'm interested. Could we talk about an inspection for our warehouse?",
    ),
    (
        9102,
        88002,
        "Marco",
        "Bellini",
        "marco@contoso.example",
        "LEAD_REPLIED",
        "Automatic reply: Roof inspection",
        "I am out of the office until Monday with limited access to email.",
    ),
]
BOUNCED = (9103, "nobody@bounced.example", "Terry", "Vance")


def workspace_changes(plan: dict) -> dict[str, str]:
    """What ``bootstrap_demo --fakes FILE`` configures on the demo workspace."""
    return {
        "webhook_secret": plan["webhook_secret"],
        "ghl_location_id": LOCATION_ID,
        "ghl_token": GHL_TOKEN,
        "booking_provider": "ghl",
        "ghl_calendar_id": CALENDAR_ID,
        "ghl_booking_url": f"{plan['urls']['ghl']}/widget/booking/{HANGING_CALENDAR_ID}",
        "emailbison_base_url": plan["urls"]["emailbison"],
        "emailbison_token": EMAILBISON_TOKEN,
    }


def seed_fakes(stack) -> None:
    """The demo location's calendars and contacts on the fake GHL, the replies on EmailBison."""
    ghl = stack.ghl
    ghl.location_id = LOCATION_ID
    # Working hours in New York (the demo workspace's zone): 10:00, 13:00 and 15:30 EST.
    ghl.slot_hours_utc = (15, 18, 20)
    ghl.add_calendar(CALENDAR_ID, name="Roof inspection", slug="roof-inspection")
    ghl.add_calendar(HANGING_CALENDAR_ID, name="Old widget", slug="old-widget", behaviour="hang")
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    for contact_id, first, last, phone, _ in SMS_LEADS:
        ghl.add_contact(
            contact_id,
            firstName=first,
            lastName=last,
            phone=phone,
            timezone="America/New_York",
            messages=[
                {
                    "id": f"{contact_id}-out1",
                    "direction": "outbound",
                    "messageType": "TYPE_SMS",
                    "body": f"Hi {first}, this is Alex from Demo Co: free roof inspections this month. Interested?",
                    "dateAdded": earlier.isoformat(),
                }
            ],
        )
    for lead_id, reply_id, first, last, email, _, subject, _text in EMAIL_LEADS:
        stack.emailbison.add_reply(
            reply_id, lead_id=lead_id, from_email_address=email, from_name=f"{first} {last}", email_subject=subject
        )


# --- the inbound script --------------------------------------------------------------------


def _sign(raw: bytes, signing_key_b64: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(signing_key_b64))
    return base64.b64encode(key.sign(raw)).decode()


def ghl_inbound_body(*, contact_id: str, text: str, message_id: str) -> dict:
    now = dt.datetime.now(dt.UTC)
    return {
        "type": "InboundMessage",
        "locationId": LOCATION_ID,
        "contactId": contact_id,
        "conversationId": f"conv{contact_id}"[:30],
        "messageId": message_id,
        "body": text,
        "messageType": "SMS",
        "direction": "inbound",
        "status": "delivered",
        "contentType": "text/plain",
        "dateAdded": now.isoformat().replace("+00:00", "Z"),
        "attachments": [],
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "webhookId": str(uuid.uuid4()),
    }


def emailbison_body(*, event_type: str, lead: dict, reply: dict | None = None) -> dict:
    data: dict = {"lead": lead, "campaign": {"id": 7, "name": "Roof inspections Q4"}}
    if reply is not None:
        data["reply"] = reply
    if event_type == "EMAIL_BOUNCED":
        data["scheduled_email"] = {"id": f"bounce-{lead['id']}", "email_subject": "Roof inspection"}
    return {"event": {"type": event_type, "name": event_type.replace("_", " ").title()}, "data": data}


def post_webhook(url: str, body: dict, *, secret: str, signing_key: str = "", timeout: float = 10.0) -> int:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Webhook-Secret": secret}
    if signing_key:
        headers["X-GHL-Signature"] = _sign(raw, signing_key)
    return requests.post(url, data=raw, headers=headers, timeout=timeout).status_code


def _wait_healthy(base_url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{base_url}/healthz did not answer 200 within {timeout:.0f}s")


def _manage(*args: str) -> None:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"demo: manage.py {' '.join(args)} -> exit {done.returncode}: {last}", flush=True)


def replay(*, base_url: str, plan: dict) -> None:
    """Wait for the app, refresh availability, post the script's webhooks, then sync GHL."""
    # Slots first, so the drafts offer them (the hanging widget costs one fetch timeout):
    # refreshed while the web process starts.
    refresh = threading.Thread(target=_manage, args=("refresh_availability", "--workspace", SLUG))
    refresh.start()
    _wait_healthy(base_url)
    refresh.join()
    secret, key = plan["webhook_secret"], plan["ghl_signing_key"]
    ghl_url = f"{base_url}/webhooks/ghl/{SLUG}/"
    eb_url = f"{base_url}/webhooks/emailbison/{SLUG}/"
    statuses = []
    for contact_id, _, _, _, text in SMS_LEADS:
        body = ghl_inbound_body(contact_id=contact_id, text=text, message_id=f"{contact_id}-in1")
        statuses.append(post_webhook(ghl_url, body, secret=secret, signing_key=key))
    now = dt.datetime.now(dt.UTC).isoformat()
    for lead_id, reply_id, first, last, email, event_type, subject, text in EMAIL_LEADS:
        lead = {"id": lead_id, "email": email, "first_name": first, "last_name": last}
        reply = {
            "id": reply_id,
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, str(reply_id))),
            "email_subject": subject,
            "text_body": text,
            "from_email_address": email,
            "from_name": f"{first} {last}",
            "date_received": now,
            "folder": "Inbox",
        }
        statuses.append(
            post_webhook(eb_url, emailbison_body(event_type=event_type, lead=lead, reply=reply), secret=secret)
        )
    lead_id, email, first, last = BOUNCED
    bounce = emailbison_body(
        event_type="EMAIL_BOUNCED", lead={"id": lead_id, "email": email, "first_name": first, "last_name": last}
    )
    statuses.append(post_webhook(eb_url, bounce, secret=secret))
    print(f"demo: replayed {len(statuses)} webhooks, answers {statuses}", flush=True)
    _manage("sync_all", "--workspace", SLUG)
    print(f"demo: ready. Log in at {base_url}/admin/ and open the inbox ({base_url}/admin/inbox/)", flush=True)
