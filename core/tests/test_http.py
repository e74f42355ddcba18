"""The shared HTTP resilience layer: timeouts, deadline, retries, Retry-After, rate limit, typed errors."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests
import responses

from core.http import (
    Deadline,
    HttpClient,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderTimeout,
    RetryPolicy,
    TokenBucket,
    parse_retry_after,
)
from core.testing.processes import free_port

BASE = "http://provider.test"
TOKEN = "pit-12345678-aaaa-bbbb-cccc-1234567890ab"
FAST = RetryPolicy(max_tries=3, base_s=0.01, max_wait_s=0.05)


def client(**kwargs) -> HttpClient:
    kwargs.setdefault("retry", FAST)
    return HttpClient(
        provider="test", base_url=BASE, headers={"Authorization": f"Bearer {TOKEN}"}, secrets=[TOKEN], **kwargs
    )


@contextlib.contextmanager
def hanging_server(*, trickle: bool = False):
    """Accepts connections and never answers (or answers headers then trickles one byte at a time)."""
    stop = threading.Event()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    conns = []

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conns.append(conn)
            if trickle:
                threading.Thread(target=drip, args=(conn,), daemon=True).start()

    def drip(conn):
        with contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not stop.is_set():
                conn.sendall(b" ")
                time.sleep(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in conns:
            conn.close()
        sock.close()


def test_hanging_server_is_cut_by_the_deadline_not_the_read_timeout():
    read_timeout_s = 30
    with hanging_server() as url:
        http = HttpClient(provider="test", base_url=url, read_timeout_s=read_timeout_s, retry=FAST)
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            http.request("GET", "/slow", deadline=0.5)
        # The next mechanism that could end it is the read timeout: it ended well before.
        assert time.monotonic() - started < read_timeout_s / 2
        assert "deadline" in info.value.message


def test_read_timeout_applies_per_attempt_and_retries_stay_within_deadline():
    with hanging_server() as url:
        http = HttpClient(provider="test", base_url=url, read_timeout_s=0.2, retry=FAST)
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            http.request("GET", "/slow", deadline=3)
        elapsed = time.monotonic() - started
        assert info.value.attempts == 3  # retried (GET is idempotent) up to max_tries
        assert elapsed >= 3 * 0.2 - 0.05  # three read timeouts (socket timers never fire early)
        assert "deadline" not in info.value.message  # the read timeouts ended it, well within the deadline


def test_trickling_body_cannot_stretch_an_attempt_past_the_deadline():
    read_timeout_s = 5
    with hanging_server(trickle=True) as url:
        http = HttpClient(provider="test", base_url=url, read_timeout_s=read_timeout_s, retry=FAST)
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            http.request("GET", "/drip", deadline=0.8)
        # The 100 kB body would take hours at a byte per 0.1 s, and no read ever waits long
        # enough for the read timeout: only the deadline ends it, well before that timeout.
        assert time.monotonic() - started < read_timeout_s
        assert "deadline" in info.value.message


@contextlib.contextmanager
def scripted_server(script, *, give_up_after: float = 6.0):
    """A raw socket server: ``script`` is a list of (delay_s, bytes) sent in order after the request arrives.

    It closes the connection ``give_up_after`` seconds after the request (so a
    client that ignores its deadline fails late instead of hanging the suite).
    """
    stop = threading.Event()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)

    def talk(conn):
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)
            ends = time.monotonic() + give_up_after
            for delay, data in script:
                while delay > 0 and not stop.is_set() and time.monotonic() < ends:
                    time.sleep(min(delay, 0.05))
                    delay -= 0.05
                if stop.is_set() or time.monotonic() >= ends:
                    return
                conn.sendall(data)
            while not stop.is_set() and time.monotonic() < ends:
                time.sleep(0.05)

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
# Without the deadline these scripts end only by the read timeout (after a late byte: at
# 0.8 s + 5 s) or when the server gives up (6 s): a cut before 5 s is the deadline's doing.
READ_TIMEOUT_S = 5.0


def _assert_cut_at_the_deadline(url: str, *, deadline: float) -> None:
    http = HttpClient(provider="test", base_url=url, read_timeout_s=READ_TIMEOUT_S, retry=FAST)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        http.request("GET", "/slow", deadline=deadline)
    elapsed = time.monotonic() - started
    assert elapsed < READ_TIMEOUT_S, f"took {elapsed:.2f}s for a {deadline}s deadline"
    assert "deadline" in info.value.message


def test_headers_sent_one_byte_per_200ms_are_cut_at_the_deadline():
    # Every read gets a byte well within the 5 s read timeout: only the deadline can stop this.
    script = [(0.2, bytes([b])) for b in HEAD + b"X-Slow: " + b"a" * 200]
    with scripted_server(script) as url:
        _assert_cut_at_the_deadline(url, deadline=1.0)


def test_body_trickled_one_byte_per_200ms_is_cut_at_the_deadline():
    script = [(0, HEAD + b"Content-Length: 1000\r\n\r\n"), *[(0.2, b" ")] * 100]
    with scripted_server(script) as url:
        _assert_cut_at_the_deadline(url, deadline=1.0)


def test_body_without_length_stalling_after_a_late_byte_is_cut_at_the_deadline():
    # A byte just before the deadline, then silence: a per-read timeout would wait another read timeout.
    script = [(0, HEAD + b"Connection: close\r\n\r\n["), (0.8, b"1"), (10, b"]")]
    with scripted_server(script) as url:
        _assert_cut_at_the_deadline(url, deadline=1.0)


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set = set()

    def do_GET(self):
        type(self).connections.add(self.client_address)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_a_finished_attempts_watchdog_never_cuts_the_pooled_keep_alive_connection():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        http = HttpClient(provider="test", base_url=f"http://127.0.0.1:{server.server_port}", retry=FAST)
        assert http.get_json("/a", deadline=0.3) == {}
        time.sleep(0.5)  # past the first attempt's deadline
        assert http.get_json("/b", deadline=2) == {}
        assert len(_KeepAliveHandler.connections) == 1  # the connection was reused, not cut
        assert http.requests_sent == 2
    finally:
        server.shutdown()
        server.server_close()


def test_sessions_passed_in_get_the_deadline_adapter():
    from core.http import DeadlineAdapter

    session = requests.Session()
    HttpClient(provider="test", session=session)
    assert isinstance(session.get_adapter("https://x.test/"), DeadlineAdapter)


def test_connection_refused_is_a_typed_error():
    http = HttpClient(provider="test", base_url=f"http://127.0.0.1:{free_port()}", retry=FAST)
    with pytest.raises(ProviderConnectionError):
        http.request("GET", "/x", deadline=2)


@responses.activate
def test_get_is_retried_on_5xx_then_succeeds():
    responses.get(f"{BASE}/items", status=502, json={"message": "bad gateway"})
    responses.get(f"{BASE}/items", status=200, json={"ok": True})
    assert client().get_json("/items", deadline=5) == {"ok": True}
    assert len(responses.calls) == 2


@responses.activate
def test_post_is_not_retried_on_5xx():
    responses.post(f"{BASE}/send", status=500, json={"message": "boom"})
    with pytest.raises(ProviderHTTPError) as info:
        client().request("POST", "/send", json={"a": 1}, deadline=5)
    assert info.value.status == 500
    assert len(responses.calls) == 1


@responses.activate
def test_post_is_retried_on_429_because_the_server_did_not_process_it():
    responses.post(f"{BASE}/send", status=429, headers={"Retry-After": "0"})
    responses.post(f"{BASE}/send", status=200, json={"id": 1})
    assert client().request("POST", "/send", json={}, deadline=5).status_code == 200
    assert len(responses.calls) == 2


@responses.activate
def test_retry_after_is_honoured():
    responses.get(f"{BASE}/rl", status=429, headers={"Retry-After": "0.3"})
    responses.get(f"{BASE}/rl", status=200, json={})
    started = time.monotonic()
    client().request("GET", "/rl", deadline=5)
    assert time.monotonic() - started >= 0.3


@responses.activate
def test_retry_after_longer_than_the_deadline_gives_up_at_once(monkeypatch):
    slept = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (slept.append(s), real_sleep(min(s, 0.01))))
    responses.get(f"{BASE}/rl", status=429, headers={"Retry-After": "30"})
    with pytest.raises(ProviderRateLimited) as info:
        client().request("GET", "/rl", deadline=2)
    assert slept == []  # no sleep at all (a wait would have run until the deadline)
    assert info.value.retry_after == pytest.approx(30)
    assert len(responses.calls) == 1


@responses.activate
def test_auth_error_is_not_retried_and_never_carries_the_token():
    responses.get(f"{BASE}/me", status=401, json={"message": f"Invalid token {TOKEN}"})
    with pytest.raises(ProviderAuthError) as info:
        client().request("GET", "/me", deadline=5)
    assert len(responses.calls) == 1
    assert info.value.status == 401
    assert TOKEN not in str(info.value)
    assert TOKEN not in info.value.message
    assert "Invalid token" in str(info.value)


@responses.activate
def test_error_path_drops_the_query_string():
    responses.get(f"{BASE}/c", status=404, json={"message": "nope"})
    with pytest.raises(ProviderNotFound) as info:
        client().request("GET", "/c", params={"api_key": "abcdef123456"}, deadline=5)
    assert "abcdef123456" not in str(info.value)
    assert info.value.path == f"{BASE}/c"


@responses.activate
def test_non_json_answer_is_a_bad_response():
    responses.get(f"{BASE}/html", status=200, body="<html>hello</html>")
    with pytest.raises(ProviderBadResponse):
        client().get_json("/html", deadline=5)


@responses.activate
def test_calendly_style_rate_limit_reset_header_is_used_as_the_wait():
    responses.get(f"{BASE}/c", status=429, headers={"X-RateLimit-Reset": "0.2"})
    responses.get(f"{BASE}/c", status=200, json={})
    started = time.monotonic()
    client().request("GET", "/c", deadline=5)
    assert time.monotonic() - started >= 0.2


def test_parse_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 <= parse_retry_after(future) <= 61


class FakeClock:
    """``core.http``'s clock: ``monotonic`` moves only when the code sleeps (so waits are exact)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    import core.http

    clock = FakeClock()
    monkeypatch.setattr(
        core.http, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep, time=time.time)
    )
    return clock


def test_token_bucket_paces_requests(fake_clock):
    bucket = TokenBucket(capacity=2, interval_s=1.0)  # 2 per second
    for _ in range(3):
        bucket.acquire(deadline=Deadline(5))
    assert sum(fake_clock.slept) == pytest.approx(0.5)  # the burst of 2, then one token's refill


def test_token_bucket_refuses_a_wait_past_the_deadline(fake_clock):
    bucket = TokenBucket(capacity=1, interval_s=10.0)
    bucket.acquire()
    with pytest.raises(ProviderRateLimited) as info:
        bucket.acquire(deadline=Deadline(0.5))
    assert fake_clock.slept == []  # refused at once, without sleeping
    assert info.value.retry_after == pytest.approx(10.0)


def test_token_bucket_adopts_the_servers_announced_limit(fake_clock):
    bucket = TokenBucket(capacity=90, interval_s=10.0)
    bucket.update_from_headers(
        {"X-RateLimit-Max": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Interval-Milliseconds": "1000"}
    )
    assert bucket.capacity == 100
    assert bucket.interval_s == 1.0
    bucket.acquire(deadline=Deadline(2))
    assert fake_clock.slept == [pytest.approx(0.01)]  # none remained: one token at 100/s


@responses.activate
def test_client_rate_limiter_limits_actual_requests():
    responses.get(f"{BASE}/x", status=200, json={}, headers={"X-RateLimit-Remaining": "50"})
    http = client(rate_limiter=TokenBucket(capacity=3, interval_s=0.6))
    started = time.monotonic()
    for _ in range(5):
        http.request("GET", "/x", deadline=5)
    assert time.monotonic() - started >= 0.3  # 2 requests over the burst of 3 at 5/s


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.send_header("Retry-After", "0.1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_real_socket_503_with_retry_after_is_retried_until_max_tries():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        http = HttpClient(provider="test", base_url=f"http://127.0.0.1:{server.server_port}", retry=FAST)
        with pytest.raises(ProviderHTTPError) as info:
            http.request("GET", "/", deadline=5)
        assert info.value.status == 503
        assert info.value.attempts == 3
        assert http.requests_sent == 3
    finally:
        server.shutdown()
        server.server_close()


def test_session_is_a_requests_session():
    assert isinstance(client().session, requests.Session)
