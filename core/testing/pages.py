"""A tiny local web page server for tests of outbound fetches: records every path it was asked for."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class PageServer:
    port: int
    hits: list[str] = field(default_factory=list)
    body: bytes = b""
    content_type: str = "text/html"
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location


@contextlib.contextmanager
def page_server(*, body: bytes, content_type: str = "text/html") -> Iterator[PageServer]:
    """Serve ``body`` on 127.0.0.1 (any path; ``redirects`` answer 302 instead)."""
    state = PageServer(port=0, body=body, content_type=content_type)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.hits.append(self.path)
            location = state.redirects.get(self.path)
            payload = b"" if location else state.body
            self.send_response(302 if location else 200)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
