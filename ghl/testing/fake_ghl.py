"""A local fake of the GHL v2 API parts the sync uses, enforcing a burst rate limit.

It answers contacts get/search/upsert, conversations search, messages list
(both answer shapes, paginated with ``nextPage``/``lastMessageId``) and message
send, from an in-memory location. Every request is recorded (method, path,
query, headers, JSON body, arrival time) so tests can check what was sent.

Rate limit: at most ``limit`` requests in any ``interval_s`` (a sliding window,
counted when a request arrives); over it, 429 (with ``Retry-After`` when
``retry_after`` is set). Every answer announces ``X-RateLimit-Max``,
``X-RateLimit-Remaining``, ``X-RateLimit-Interval-Milliseconds`` and the daily
headers, like GHL.

In-process::

    with fake_ghl_server(limit=100, interval_s=10) as fake:
        fake.add_contact("abcdefghij0123456789", phone="+15555550123", messages=[...])
        ... settings.GHL_API_BASE_URL = fake.base_url ...
        fake.requests, fake.rate_limited

or as a process: ``python -m ghl.testing.fake_ghl --port 8770 --limit 100 --interval 10 --seed-file f.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE_SIZE_MAX = 100


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float
    status: int = 0


@dataclass
class FakeGhl:
    limit: int = 100
    interval_s: float = 10.0
    retry_after: float | None = None
    daily_limit: int = 200_000
    latency_s: float = 0.0
    shape: str = "new"  # messages list: "new" {messages:[...]} or "old" {messages:{messages:[...]}}
    page_size: int = 20  # messages per page, whatever ``limit`` asks (GHL pages by 20)
    location_id: str = "LOC_FAKE"
    forbidden: bool = False  # 403 "The token does not have access to this location." everywhere
    pit_errors: int = 0  # the next N conversation searches fail with a point-in-time context error
    contacts: dict[str, dict] = field(default_factory=dict)
    conversations: dict[str, list[dict]] = field(default_factory=dict)  # contact id -> conversations
    messages: dict[str, list[dict]] = field(default_factory=dict)  # conversation id -> newest first
    requests: list[Recorded] = field(default_factory=list)
    base_url: str = ""
    _arrivals: collections.deque = field(default_factory=collections.deque)
    _daily_used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- seeding ---

    def add_contact(self, contact_id: str, *, messages: list[dict] | None = None, **fields: Any) -> None:
        contact = {"id": contact_id, "locationId": self.location_id, **fields}
        self.contacts[contact_id] = contact
        if messages is not None:
            conversation_id = f"conv{contact_id}"[:30]
            self.conversations[contact_id] = [{"id": conversation_id, "contactId": contact_id, "type": "TYPE_PHONE"}]
            ordered = sorted(messages, key=lambda m: m.get("dateAdded", ""), reverse=True)
            self.messages[conversation_id] = [
                {"conversationId": conversation_id, "contactId": contact_id, **m} for m in ordered
            ]

    @property
    def rate_limited(self) -> int:
        return sum(1 for r in self.requests if r.status == 429)

    # --- rate limit ---

    def _admit(self, now: float) -> tuple[bool, int]:
        with self._lock:
            while self._arrivals and self._arrivals[0] <= now - self.interval_s:
                self._arrivals.popleft()
            if len(self._arrivals) >= self.limit:
                return False, 0
            self._arrivals.append(now)
            self._daily_used += 1
            return True, self.limit - len(self._arrivals)

    def _limit_headers(self, remaining: int) -> dict[str, str]:
        return {
            "X-RateLimit-Max": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Interval-Milliseconds": str(int(self.interval_s * 1000)),
            "X-RateLimit-Limit-Daily": str(self.daily_limit),
            "X-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._daily_used)),
        }

    # --- routes ---

    def handle(self, rec: Recorded) -> tuple[int, Any]:
        path = rec.path
        if self.forbidden:
            return 403, {"statusCode": 403, "message": "The token does not have access to this location."}
        if rec.method == "GET" and (m := re.fullmatch(r"/contacts/([^/]+)", path)):
            contact = self.contacts.get(m.group(1))
            if contact is None:
                return 400, {"statusCode": 400, "message": "Contact with id not found"}
            return 200, {"contact": contact}
        if rec.method == "POST" and path == "/contacts/upsert":
            body = rec.body or {}
            for contact in self.contacts.values():
                if (body.get("email") and contact.get("email") == body["email"]) or (
                    body.get("phone") and contact.get("phone") == body["phone"]
                ):
                    return 200, {"new": False, "contact": contact, "traceId": "t"}
            contact_id = uuid.uuid4().hex[:20]
            self.add_contact(contact_id, **{k: v for k, v in body.items() if k != "locationId"})
            return 201, {"new": True, "contact": self.contacts[contact_id], "traceId": "t"}
        if rec.method == "POST" and path == "/contacts/search":
            return 200, {"contacts": list(self.contacts.values())[:20], "total": len(self.contacts)}
        if rec.method == "GET" and path == "/conversations/search":
            if self.pit_errors > 0:
                self.pit_errors -= 1
                return 400, {"statusCode": 400, "message": "Too many open point in time contexts (pit)"}
            contact_id = (rec.query.get("contactId") or [""])[0]
            if contact_id:
                found = self.conversations.get(contact_id, [])
            else:
                found = [c for cs in self.conversations.values() for c in cs]
            return 200, {"conversations": found[:20], "total": len(found)}
        if rec.method == "GET" and (m := re.fullmatch(r"/conversations/([^/]+)/messages", path)):
            return 200, self._messages_page(m.group(1), rec.query)
        if rec.method == "POST" and path == "/conversations/messages":
            return 201, {"conversationId": "c" * 20, "messageId": uuid.uuid4().hex[:20], "msg": "Message queued"}
        return 404, {"statusCode": 404, "message": f"Cannot {rec.method} {path}"}

    def _messages_page(self, conversation_id: str, query: dict[str, list[str]]) -> dict:
        items = self.messages.get(conversation_id, [])
        after = (query.get("lastMessageId") or [""])[0]
        start = 0
        if after:
            ids = [m["id"] for m in items]
            start = ids.index(after) + 1 if after in ids else len(items)
        size = min(self.page_size, int(float((query.get("limit") or [self.page_size])[0])), PAGE_SIZE_MAX)
        page = items[start : start + size]
        more = start + size < len(items)
        inner = {"lastMessageId": page[-1]["id"] if page else "", "nextPage": more, "messages": page}
        return {"messages": inner} if self.shape == "old" else inner


def _make_handler(fake: FakeGhl) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            arrived = time.monotonic()
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            rec = Recorded(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k: v for k, v in self.headers.items()},
                body=body,
                at=time.time(),
            )
            admitted, remaining = fake._admit(arrived)
            if not admitted:
                status, answer = 429, {"statusCode": 429, "message": "Too many requests"}
            else:
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                status, answer = fake.handle(rec)
            rec.status = status
            with fake._lock:
                fake.requests.append(rec)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in fake._limit_headers(remaining).items():
                self.send_header(key, value)
            if status == 429 and fake.retry_after is not None:
                self.send_header("Retry-After", str(fake.retry_after))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


@contextlib.contextmanager
def fake_ghl_server(*, port: int = 0, **kwargs: Any) -> Iterator[FakeGhl]:
    fake = FakeGhl(**kwargs)
    server = _Server(("127.0.0.1", port), _make_handler(fake))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seed-file", help="JSON: {contacts: [{id, ..., messages: [...]}], location_id}")
    parser.add_argument("--stats-file", help="written on SIGTERM/exit: requests and 429s")
    args = parser.parse_args(argv)
    seed = json.loads(open(args.seed_file).read()) if args.seed_file else {}  # noqa: SIM115
    with fake_ghl_server(
        port=args.port, limit=args.limit, interval_s=args.interval, location_id=seed.get("location_id", "LOC_FAKE")
    ) as fake:
        for contact in seed.get("contacts", []):
            contact = dict(contact)
            fake.add_contact(contact.pop("id"), **contact)
        print(f"fake GHL on {fake.base_url}", flush=True)
        try:
            while True:
                time.sleep(0.5)
                if args.stats_file:
                    with open(args.stats_file, "w") as out:
                        json.dump({"requests": len(fake.requests), "rate_limited": fake.rate_limited}, out)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
