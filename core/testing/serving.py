"""Serve a fake's request handler on loopback in a background thread (every fake in core/testing)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # a burst of hundreds of calls connects at once


@contextlib.contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], *, port: int = 0, on_stop: Callable[[], None] | None = None
) -> Iterator[str]:
    """Yield ``http://127.0.0.1:<port>`` while ``handler`` answers there; ``on_stop`` runs first
    at exit (to release handlers that hang on purpose)."""
    server = LoopbackServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if on_stop is not None:
            on_stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
