"""A local fake of the GHL v2 API: contacts, conversations, messages, send, calendars and
free-slots (authenticated and the public widget backend), booking widget pages, enforcing a
burst rate limit.

It answers contacts get/search/upsert, conversations search, messages list
(both answer shapes, paginated with ``nextPage``/``lastMessageId``), message
send (recorded in ``fake.sends``), the calendars list, ``/calendars/<id>/free-slots``
(keyed by date, as GHL answers) and ``/widget/bookings/<slug>`` pages whose HTML
embeds the calendar id. Each calendar and page has a behaviour: ``ok``, ``500``
or ``hang`` (accept and never answer until the server stops). Request shapes are
checked against the vendor specs (``../shared/vendor-specs/ghl``): the ``Version``
header each path requires, ``locationId`` where it is required, the free-slots
epoch-millisecond range of at most 31 days, the send body's ``type`` and
``contactId``; a request that breaks them gets GHL's 422 naming the field.
Every request is recorded (method, path, query, headers, JSON body, arrival time).

URL layout on ``base_url``: the API at the root; the widget backend under
``/backend`` (``backend_base_url``, for ``GHL_BACKEND_BASE_URL``); booking pages
at ``/widget/bookings/<slug>`` (``booking_url(slug)``). ``GET /_fake/sends``
lists the sends received (for people and the demo walkthrough).

Rate limit: at most ``limit`` requests in any ``interval_s`` (a sliding window,
counted when a request arrives); over it, 429 (with ``Retry-After`` when
``retry_after`` is set); ``force_429`` answers the next N API requests 429 whatever
the window. Every answer announces ``X-RateLimit-Max``, ``X-RateLimit-Remaining``,
``X-RateLimit-Interval-Milliseconds`` and the daily headers, like GHL.

In-process::

    with fake_ghl_server(limit=100, interval_s=10) as fake:
        fake.add_contact("abcdefghij0123456789", phone="+15555550123", messages=[...])
        fake.add_calendar("cal...20chars", slug="demo-call", page="hang")
        ... settings.GHL_API_BASE_URL = fake.base_url ...
        fake.requests, fake.rate_limited, fake.sends

or as a process: ``python -m core.testing.fake_ghl --port 8770 --limit 100 --interval 10 --seed-file f.json``
(``python -m core.testing.fakes`` starts it with the other providers' fakes).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.testing.serving import serving

PAGE_SIZE_MAX = 100
HANG_MAX_S = 120.0
FREE_SLOTS_MAX_RANGE_MS = 31 * 24 * 3600 * 1000
CONTACTS_VERSION = "2021-07-28"
CONVERSATIONS_VERSION = "2021-04-15"  # conversations and calendars (the specs' enums)
SEND_TYPES = {"SMS", "Email", "WhatsApp", "GMB", "IG", "FB", "Custom", "Live_Chat"}
BEHAVIOURS = {"ok", "500", "hang"}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float
    status: int = 0


def ghl_free_slots(query: dict[str, list[str]], *, hours_utc: tuple[int, ...] = (15, 19)) -> dict:
    """A free-slots answer keyed by date (two slots a day at ``hours_utc``) for the query's epoch-ms range."""
    start = dt.datetime.fromtimestamp(int(float(query["startDate"][0])) / 1000, tz=dt.UTC)
    end = dt.datetime.fromtimestamp(int(float(query["endDate"][0])) / 1000, tz=dt.UTC)
    body: dict = {"traceId": "fake-trace"}
    day = start.date()
    while day <= end.date():
        slots = [dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC) for hour in hours_utc]
        slots = [s.isoformat() for s in slots if start <= s <= end]
        if slots:
            body[day.isoformat()] = {"slots": slots}
        day += dt.timedelta(days=1)
    return body


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
    force_429: int = 0  # the next N API requests answer 429 whatever the window
    slot_hours_utc: tuple[int, ...] = (15, 19)
    contacts: dict[str, dict] = field(default_factory=dict)
    conversations: dict[str, list[dict]] = field(default_factory=dict)  # contact id -> conversations
    messages: dict[str, list[dict]] = field(default_factory=dict)  # conversation id -> newest first
    calendars: dict[str, dict] = field(default_factory=dict)  # id -> {id, name, slug, widgetSlug}
    calendar_behaviour: dict[str, str] = field(default_factory=dict)  # id -> ok | 500 | hang (API and widget)
    pages: dict[str, tuple[str, str]] = field(default_factory=dict)  # slug -> (behaviour, calendar id)
    requests: list[Recorded] = field(default_factory=list)
    sends: list[dict] = field(default_factory=list)  # accepted POST /conversations/messages bodies
    base_url: str = ""
    _arrivals: collections.deque = field(default_factory=collections.deque)
    _daily_used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

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

    def add_calendar(
        self, calendar_id: str, *, name: str = "Calendar", slug: str = "", behaviour: str = "ok", page: str = ""
    ) -> None:
        """A calendar of the location; ``page`` (a behaviour) also serves its ``/widget/bookings/<slug>`` page."""
        if behaviour not in BEHAVIOURS or (page and page not in BEHAVIOURS):
            raise ValueError(f"behaviours are {sorted(BEHAVIOURS)}")
        slug = slug or calendar_id.lower()
        self.calendars[calendar_id] = {"id": calendar_id, "name": name, "slug": slug, "widgetSlug": slug}
        self.calendar_behaviour[calendar_id] = behaviour
        if page:
            self.pages[slug] = (page, calendar_id)

    @property
    def backend_base_url(self) -> str:
        return f"{self.base_url}/backend"

    def booking_url(self, slug: str) -> str:
        return f"{self.base_url}/widget/bookings/{slug}"

    @property
    def rate_limited(self) -> int:
        return sum(1 for r in self.requests if r.status == 429)

    # --- rate limit ---

    def _admit(self, now: float) -> tuple[bool, int]:
        with self._lock:
            if self.force_429 > 0:
                self.force_429 -= 1
                return False, 0
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

    # --- request shapes (vendor specs) ---

    @staticmethod
    def _shape_problem(rec: Recorded) -> str:
        """What the request breaks in the spec ("" when nothing): GHL answers it 422."""
        path, query = rec.path, rec.query
        wanted = CONTACTS_VERSION if path.startswith("/contacts") else CONVERSATIONS_VERSION
        if path.startswith(("/contacts", "/conversations", "/calendars")):
            version = next((v for k, v in rec.headers.items() if k.lower() == "version"), "")
            if version != wanted:
                return f"Version header must be {wanted}"
        if path in ("/conversations/search", "/calendars/", "/calendars") and not query.get("locationId"):
            return "locationId should not be empty"
        if path == "/contacts/upsert" and not (rec.body or {}).get("locationId"):
            return "locationId should not be empty"
        if path.endswith("/free-slots"):
            try:
                start, end = int(query["startDate"][0]), int(query["endDate"][0])
            except (KeyError, ValueError):
                return "startDate and endDate must be epoch milliseconds"
            if not 0 <= end - start <= FREE_SLOTS_MAX_RANGE_MS:
                return "endDate must be after startDate, at most 31 days"
        if rec.method == "POST" and path == "/conversations/messages":
            body = rec.body if isinstance(rec.body, dict) else {}
            if body.get("type") not in SEND_TYPES:
                return f"type must be one of {sorted(SEND_TYPES)}"
            if not body.get("contactId"):
                return "contactId should not be empty"
        return ""

    # --- routes ---

    def _calendar_answer(self, calendar_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        behaviour = self.calendar_behaviour.get(calendar_id)
        if behaviour is None:
            return 404, {"statusCode": 404, "message": "Calendar not found"}
        if behaviour == "hang":
            return 0, None
        if behaviour == "500":
            return 500, {"statusCode": 500, "message": "Internal server error"}
        return 200, ghl_free_slots(query, hours_utc=self.slot_hours_utc)

    def handle(self, rec: Recorded) -> tuple[int, Any]:
        """(status, JSON answer) for an API request; status 0 means: never answer (hang)."""
        path = rec.path
        if self.forbidden:
            return 403, {"statusCode": 403, "message": "The token does not have access to this location."}
        if problem := self._shape_problem(rec):
            return 422, {"statusCode": 422, "message": [problem], "error": "Unprocessable Entity"}
        if rec.method == "GET" and (m := re.fullmatch(r"/calendars/([^/]+)/free-slots", path)):
            return self._calendar_answer(m.group(1), rec.query)
        if rec.method == "GET" and path in ("/calendars/", "/calendars"):
            return 200, {"calendars": list(self.calendars.values())}
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
            contact_id = str(rec.body["contactId"])
            conversation_id = (self.conversations.get(contact_id) or [{"id": f"conv{contact_id}"[:30]}])[0]["id"]
            answer = {"conversationId": conversation_id, "messageId": uuid.uuid4().hex[:20], "msg": "Message queued"}
            with self._lock:
                self.sends.append({**rec.body, "messageId": answer["messageId"], "receivedAt": rec.at})
            return 201, answer
        return 404, {"statusCode": 404, "message": f"Cannot {rec.method} {path}"}

    def handle_public(self, rec: Recorded) -> tuple[int, Any, str]:
        """(status, answer, content type) for the unauthenticated widget backend and booking pages."""
        if m := re.fullmatch(r"/backend/calendars/([^/]+)/free-slots", rec.path):
            status, answer = self._calendar_answer(m.group(1), rec.query)
            return status, answer, "application/json"
        if m := re.fullmatch(r"/widget/bookings/([^/]+)", rec.path):
            behaviour, calendar_id = self.pages.get(m.group(1), ("404", ""))
            if behaviour == "hang":
                return 0, None, ""
            if behaviour in ("404", "500"):
                return int(behaviour), {"message": "booking page unavailable"}, "application/json"
            html = f'<html><script>window.__BOOKING__={{"calendarId":"{calendar_id}"}}</script></html>'
            return 200, html, "text/html"
        return 404, {"message": f"no fake for {rec.path}"}, "application/json"

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

        def _write(self, status: int, data: bytes, content_type: str, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def _hang(self) -> None:
            fake._stop.wait(HANG_MAX_S)
            self.close_connection = True

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
            if rec.path == "/_fake/sends":
                with fake._lock:
                    return self._write(200, json.dumps(fake.sends).encode(), "application/json", {})
            if rec.path.startswith(("/backend/", "/widget/")):
                with fake._lock:
                    fake.requests.append(rec)
                status, answer, content_type = fake.handle_public(rec)
                rec.status = status
                if status == 0:
                    return self._hang()
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                return self._write(status, data, content_type, {})
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
            if status == 0:
                return self._hang()
            headers = fake._limit_headers(remaining)
            if status == 429 and fake.retry_after is not None:
                headers["Retry-After"] = str(fake.retry_after)
            return self._write(status, json.dumps(answer).encode(), "application/json", headers)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler


@contextlib.contextmanager
def fake_ghl_server(*, port: int = 0, **kwargs: Any) -> Iterator[FakeGhl]:
    fake = FakeGhl(**kwargs)
    with serving(_make_handler(fake), port=port, on_stop=fake._stop.set) as base_url:
        fake.base_url = base_url
        yield fake


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
