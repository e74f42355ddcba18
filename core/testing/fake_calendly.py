"""A local fake of the Calendly v2 API parts availability uses: ``/users/me``, ``/event_types``
and ``/event_type_available_times``.

Each event type has a behaviour: ``ok``, ``500`` or ``hang`` (accept and never answer until the
server stops). Request shapes follow the API notes: a Bearer token, an ``event_type`` that
exists, a start not in the past and a window of at most ``max_window_days`` (7 on older
accounts, else 31); breaking them answers Calendly's 400 ``{title, message, details}``.
Every answer carries ``X-RateLimit-Limit``/``-Remaining``/``-Reset``.

    with fake_calendly_server() as fake:
        uri = fake.add_event_type("demo-call", behaviour="ok")
        ... settings.CALENDLY_API_BASE_URL = fake.base_url ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.testing.serving import serving

HANG_MAX_S = 120.0
# The fake's own clock skew allowance: a start a little in the past (the caller's "now") is fine.
PAST_TOLERANCE = dt.timedelta(minutes=5)


def calendly_times(query: dict[str, list[str]], *, hour_utc: int = 16) -> dict:
    """One available time a day at ``hour_utc`` inside the query's ``start_time``/``end_time``."""
    start = dt.datetime.fromisoformat(query["start_time"][0].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(query["end_time"][0].replace("Z", "+00:00"))
    out = []
    cursor = dt.datetime.combine(start.date(), dt.time(hour_utc), tzinfo=dt.UTC)
    while cursor <= end:
        if cursor >= start:
            out.append(
                {
                    "status": "available",
                    "start_time": cursor.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                    "invitees_remaining": 1,
                }
            )
        cursor += dt.timedelta(days=1)
    return {"collection": out}


@dataclass
class FakeCalendly:
    max_window_days: int = 31
    check_past: bool = True
    event_types: dict[str, str] = field(default_factory=dict)  # uri -> behaviour
    hits: Counter = field(default_factory=Counter)
    base_url: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_event_type(self, slug: str, *, behaviour: str = "ok") -> str:
        uri = f"{self.base_url}/event_types/{slug}"
        self.event_types[uri] = behaviour
        return uri

    def handle(self, path: str, query: dict[str, list[str]], authorization: str) -> tuple[int, Any]:
        """(status, answer); status 0: never answer."""
        if not authorization.startswith("Bearer ") or len(authorization) <= len("Bearer "):
            return 401, {"title": "Unauthenticated", "message": "The access token is invalid"}
        if path == "/users/me":
            return 200, {"resource": {"uri": f"{self.base_url}/users/U1", "timezone": "UTC"}}
        if path == "/event_types":
            if not query.get("user") and not query.get("organization"):
                return 400, _invalid("user", "is required")
            collection = [
                {
                    "uri": uri,
                    "name": uri.rsplit("/", 1)[-1],
                    "slug": uri.rsplit("/", 1)[-1],
                    "scheduling_url": f"https://calendly.com/fake/{uri.rsplit('/', 1)[-1]}",
                    "duration": 30,
                    "active": True,
                }
                for uri in self.event_types
            ]
            return 200, {"collection": collection, "pagination": {"next_page": None}}
        if path == "/event_type_available_times":
            for name in ("event_type", "start_time", "end_time"):
                if not query.get(name):
                    return 400, _invalid(name, "is required")
            behaviour = self.event_types.get(query["event_type"][0])
            if behaviour is None:
                return 404, {"title": "Resource Not Found", "message": "no such event type"}
            try:
                start = dt.datetime.fromisoformat(query["start_time"][0].replace("Z", "+00:00"))
                end = dt.datetime.fromisoformat(query["end_time"][0].replace("Z", "+00:00"))
            except ValueError:
                return 400, _invalid("start_time", "must be an ISO 8601 time")
            if self.check_past and start < dt.datetime.now(dt.UTC) - PAST_TOLERANCE:
                return 400, _invalid("start_time", "must be in the future")
            if not dt.timedelta(0) < end - start <= dt.timedelta(days=self.max_window_days):
                return 400, _invalid("end_time", f"must be after start_time, at most {self.max_window_days} days")
            if behaviour == "hang":
                return 0, None
            if behaviour == "500":
                return 500, {"title": "Internal Server Error", "message": "try again"}
            return 200, calendly_times(query)
        return 404, {"title": "Resource Not Found", "message": f"no fake for {path}"}


def _invalid(parameter: str, message: str) -> dict:
    return {
        "title": "Invalid Argument",
        "message": "The supplied parameters are invalid.",
        "details": [{"parameter": parameter, "message": message}],
    }


def _make_handler(fake: FakeCalendly) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            with fake._lock:
                fake.hits[parts.path] += 1
            status, answer = fake.handle(parts.path, parse_qs(parts.query), self.headers.get("Authorization", ""))
            if status == 0:
                fake._stop.wait(HANG_MAX_S)
                self.close_connection = True
                return
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in {
                "X-RateLimit-Limit": "1000",
                "X-RateLimit-Remaining": "999",
                "X-RateLimit-Reset": "60",
            }.items():
                self.send_header(key, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def fake_calendly_server(*, port: int = 0, **kwargs: Any) -> Iterator[FakeCalendly]:
    fake = FakeCalendly(**kwargs)
    with serving(_make_handler(fake), port=port, on_stop=fake._stop.set) as base_url:
        fake.base_url = base_url
        yield fake
