"""A local fake of the providers' send endpoints: GHL ``POST /conversations/messages`` and
EmailBison's sender list and reply-in-thread send (``/api/...``), on one loopback port.

    with fake_outbox_server(dead_senders={"3"}) as fake:
        fake.ghl_base_url        # for GHL_API_BASE_URL
        fake.emailbison_base_url # for a workspace's emailbison_base_url
        fake.sends               # accepted sends, in order: OutboxSend(provider, received_at, body, sender_id)
        fake.refusals            # refused sends (dead senders)

Senders ``1..senders`` are all listed as Connected; the ``dead_senders`` among them refuse every
send with EmailBison's 422 "The selected sender email id is invalid." (listed but dead: what
self-healing exists for). ``latency_s`` delays every answer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


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

        def do_GET(self):  # EmailBison sender list (one page)
            if self.path.startswith("/emailbison/api/sender-emails"):
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
            if self.path.startswith("/emailbison/api/replies/") and self.path.endswith("/reply"):
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
    *, senders: int = 10, dead_senders: set[str] | frozenset[str] = frozenset(), latency_s: float = 0.0
) -> Iterator[FakeOutbox]:
    fake = FakeOutbox(senders=senders, dead_senders=frozenset(dead_senders), latency_s=latency_s)
    server = _Server(("127.0.0.1", 0), _make_handler(fake))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    fake.ghl_base_url, fake.emailbison_base_url = f"{base}/ghl", f"{base}/emailbison"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
