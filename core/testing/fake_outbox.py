"""A local fake of the providers' send endpoints: GHL ``POST /conversations/messages`` and
EmailBison (``/api/...``: the sender list, replies and leads read back, and the reply-in-thread
send), on one loopback port. The full GHL fake is ``core/testing/fake_ghl.py``; this one serves
GHL sends only, for tests about sending.

    with fake_outbox_server(dead_senders={"3"}) as fake:
        fake.ghl_base_url        # for GHL_API_BASE_URL
        fake.emailbison_base_url # for a workspace's emailbison_base_url
        fake.sends               # accepted sends, in order: OutboxSend(provider, received_at, body, sender_id)
        fake.refusals            # refused sends (dead senders)

Senders ``1..senders`` are all listed as Connected; the ``dead_senders`` among them refuse every
send with EmailBison's 422 "The selected sender email id is invalid." (listed but dead: what
self-healing exists for). ``latency_s`` delays every answer. EmailBison requests need a Bearer
token (401 otherwise); a reply send must carry ``sender_email_id``, ``to_emails`` (a list of
``{email_address}``) and ``message`` (422 naming the field otherwise). ``add_reply`` seeds what
``GET /api/replies/<id>`` and ``GET /api/leads/<id>/replies`` answer. ``GET /_fake/sends``
lists the accepted sends as JSON.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from core.testing.serving import serving


@dataclass(frozen=True)
class OutboxSend:
    provider: str  # "ghl" | "emailbison"
    received_at: float  # time.time() when the request arrived
    body: dict
    sender_id: str = ""


@dataclass
class FakeOutbox:
    senders: int = 10
    dead_senders: frozenset[str] = frozenset()
    latency_s: float = 0.0
    sends: list[OutboxSend] = field(default_factory=list)
    refusals: list[OutboxSend] = field(default_factory=list)
    ghl_base_url: str = ""
    emailbison_base_url: str = ""
    replies: dict[str, dict] = field(default_factory=dict)  # reply id -> reply (with "lead_id")
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add_reply(self, reply_id: str | int, *, lead_id: str | int, **fields) -> None:
        self.replies[str(reply_id)] = {"id": int(reply_id), "lead_id": int(lead_id), **fields}


def _reply_send_problem(body: dict) -> str:
    if not body.get("sender_email_id"):
        return "The sender email id field is required."
    recipients = body.get("to_emails")
    if not isinstance(recipients, list) or not all(isinstance(r, dict) and r.get("email_address") for r in recipients):
        return "The to emails field must be a list of {email_address}."
    if not body.get("message"):
        return "The message field is required."
    return ""


def _make_handler(fake: FakeOutbox):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self, status: int, payload: dict) -> None:
            if fake.latency_s:
                time.sleep(fake.latency_s)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _unauthenticated(self) -> bool:
            if self.path.startswith("/emailbison/") and not self.headers.get("Authorization", "").startswith("Bearer "):
                self._answer(401, {"message": "Unauthenticated."})
                return True
            return False

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/_fake/sends":
                with fake.lock:
                    sends = [{"provider": s.provider, "sender_id": s.sender_id, **s.body} for s in fake.sends]
                return self._answer(200, sends)
            if self._unauthenticated():
                return None
            if m := re.fullmatch(r"/emailbison/api/replies/(\d+)", path):
                reply = fake.replies.get(m.group(1))
                return self._answer(200, {"data": reply}) if reply else self._answer(404, {"message": "not found"})
            if m := re.fullmatch(r"/emailbison/api/leads/(\d+)/replies", path):
                data = [r for r in fake.replies.values() if str(r["lead_id"]) == m.group(1)]
                return self._answer(200, {"data": data, "links": {"next": None}, "meta": {"last_page": 1}})
            if path.startswith("/emailbison/api/sender-emails"):  # one page
                data = [
                    {"id": n, "email": f"sender{n}@outbox.test", "name": f"Sender {n}", "status": "Connected"}
                    for n in range(1, fake.senders + 1)
                ]
                return self._answer(200, {"data": data, "links": {"next": None}, "meta": {"last_page": 1}})
            return self._answer(404, {"message": "not found"})

        def do_POST(self):
            received = time.time()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path == "/ghl/conversations/messages":
                with fake.lock:
                    fake.sends.append(OutboxSend("ghl", received, body))
                    n = next(fake.ids)
                return self._answer(200, {"conversationId": f"conv-{n}", "messageId": f"out-{n}", "msg": "queued"})
            if self._unauthenticated():
                return None
            if self.path.startswith("/emailbison/api/replies/") and self.path.endswith("/reply"):
                if problem := _reply_send_problem(body):
                    return self._answer(422, {"message": problem})
                sender = str(body.get("sender_email_id", ""))
                with fake.lock:
                    if sender in fake.dead_senders:
                        fake.refusals.append(OutboxSend("emailbison", received, body, sender))
                        refused = True
                    else:
                        fake.sends.append(OutboxSend("emailbison", received, body, sender))
                        refused = False
                        n = next(fake.ids)
                if refused:
                    return self._answer(422, {"message": "The selected sender email id is invalid."})
                return self._answer(200, {"data": {"id": 100000 + n, "status": "queued"}})
            return self._answer(404, {"message": "not found"})

    return Handler


@contextlib.contextmanager
def fake_outbox_server(
    *,
    senders: int = 10,
    dead_senders: set[str] | frozenset[str] = frozenset(),
    latency_s: float = 0.0,
    port: int = 0,
) -> Iterator[FakeOutbox]:
    fake = FakeOutbox(senders=senders, dead_senders=frozenset(dead_senders), latency_s=latency_s)
    with serving(_make_handler(fake), port=port) as base:
        fake.ghl_base_url, fake.emailbison_base_url = f"{base}/ghl", f"{base}/emailbison"
        yield fake
