"""A local fake of the GHL API, GHL widget backend, booking pages and Calendly (threads, 127.0.0.1).

Used by the end-to-end tests and ``bench/availability``. Each calendar id /
Calendly event type / page slug has a behaviour: ``ok``, ``500`` or ``hang``
(accept the request and never answer until the server stops).

URL layout on ``base``: ``/ghl`` (API), ``/ghl-backend`` (widget free-slots),
``/pages/widget/bookings/<slug>`` (white-label booking pages), ``/calendly``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from core.testing.fake_calendly import calendly_times
from core.testing.fake_ghl import ghl_free_slots

HANG_MAX_S = 120


class FakeProviders:
    def __init__(self) -> None:
        self.backend: dict[str, str] = {}  # calendar id -> behaviour of the public widget endpoint
        self.api: dict[str, str] = {}  # calendar id -> behaviour of the authenticated API
        self.pages: dict[str, tuple[str, str]] = {}  # slug -> (behaviour, calendar id)
        self.calendly: dict[str, str] = {}  # event type uri -> behaviour
        self.hits: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeProviders:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def urls(self) -> dict[str, str]:
        return {
            "GHL_API_BASE_URL": f"{self.base}/ghl",
            "GHL_BACKEND_BASE_URL": f"{self.base}/ghl-backend",
            "CALENDLY_API_BASE_URL": f"{self.base}/calendly",
        }

    def _hit(self, key: str) -> None:
        with self._lock:
            self.hits[key] += 1

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _html(self, html: str) -> None:
                data = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _behave(self, behaviour: str) -> bool:
                """True when the caller should answer normally."""
                if behaviour == "hang":
                    fake._stop.wait(HANG_MAX_S)
                    self.close_connection = True
                    return False
                if behaviour == "500":
                    self._json(500, {"statusCode": 500, "message": "Internal server error"})
                    return False
                return True

            def do_GET(self):
                parts = urlsplit(self.path)
                path, query = parts.path, parse_qs(parts.query)
                segments = [s for s in path.split("/") if s]
                fake._hit(path)
                if segments[:1] in (["ghl"], ["ghl-backend"]) and len(segments) == 4 and segments[3] == "free-slots":
                    table = fake.api if segments[0] == "ghl" else fake.backend
                    if segments[0] == "ghl" and not self.headers.get("Authorization", "").startswith("Bearer "):
                        return self._json(401, {"statusCode": 401, "message": "Unauthorized"})
                    behaviour = table.get(segments[2])
                    if behaviour is None:
                        return self._json(404, {"statusCode": 404, "message": "Calendar not found"})
                    if self._behave(behaviour):
                        self._json(200, ghl_free_slots(query))
                    return None
                if segments == ["ghl", "calendars"]:
                    calendars = [{"id": cid, "widgetSlug": slug} for slug, (_, cid) in fake.pages.items()]
                    return self._json(200, {"calendars": calendars})
                if segments[:3] == ["pages", "widget", "bookings"] and len(segments) == 4:
                    behaviour, calendar_id = fake.pages.get(segments[3], ("404", ""))
                    if behaviour == "404":
                        return self._json(404, {"message": "not found"})
                    if self._behave(behaviour):
                        self._html(f'<html><script>window.__BOOKING__={{"calendarId":"{calendar_id}"}}</script></html>')
                    return None
                if segments == ["calendly", "users", "me"]:
                    return self._json(200, {"resource": {"uri": f"{fake.base}/calendly/users/U1", "timezone": "UTC"}})
                if segments == ["calendly", "event_types"]:
                    collection = [
                        {
                            "uri": uri,
                            "slug": uri.rsplit("/", 1)[-1],
                            "scheduling_url": f"https://calendly.com/bench/{uri.rsplit('/', 1)[-1]}",
                        }
                        for uri in fake.calendly
                    ]
                    return self._json(200, {"collection": collection, "pagination": {"next_page": None}})
                if segments == ["calendly", "event_type_available_times"]:
                    behaviour = fake.calendly.get(query.get("event_type", [""])[0])
                    if behaviour is None:
                        return self._json(404, {"title": "Resource Not Found", "message": "no such event type"})
                    if self._behave(behaviour):
                        self._json(200, calendly_times(query))
                    return None
                return self._json(404, {"message": f"no fake for {path}"})

        return Handler
