"""The one outbound HTTP resilience layer every provider client uses.

What it guarantees, whatever the server does:

- every attempt has a connect and a read timeout, both capped by the time left
  in the operation's :class:`Deadline`, and the whole attempt (TLS handshake,
  sending, response headers, body) is bounded by that deadline: a per-attempt
  watchdog shuts the socket down when it expires, so a server that trickles
  header or body bytes (each read within the read timeout) cannot stretch an
  attempt past it (DNS resolution is the one phase it cannot cut);
- idempotent requests are retried with exponential backoff and full jitter
  (``retry_call``, the one retry loop, which ``drafts.llm`` uses too) on connection errors, timeouts, 408/425/429 and
  5xx; a non-idempotent request is retried only when the server certainly did
  not process it (connect timeout, 429) or when the caller says it is safe;
- ``Retry-After`` (seconds or HTTP date) is honoured when it fits in the
  remaining deadline, otherwise the call gives up at once instead of sleeping
  past its deadline;
- an optional rate limiter (the :class:`RateLimiter` hook: the in-process
  :class:`TokenBucket` here, or the windows of ``core.ratelimit`` shared
  through Redis) paces requests and adapts to the ``X-RateLimit-*`` headers the
  server announces; a 429 pauses it for ``Retry-After``, or, without one,
  drains it and waits for the announced window, with jitter;
- an optional ``classify_error`` hook lets a provider client turn an answer
  into its own typed error (e.g. a retryable "too many contexts" 400);
- failures surface as typed :class:`ProviderError` subclasses carrying the
  status and a message redacted with :func:`core.redaction.redact_text` (the
  client's own secrets included), never the token or the request headers;
- a client built with ``outbound_guard=True`` (for URLs that come from
  workspace settings: booking pages, the EmailBison base URL) connects only to
  public addresses: every new connection, redirects included, resolves the name
  itself, refuses loopback, private, link-local, cloud-metadata and other
  non-public addresses, connects to the address it checked and checks the
  connected peer again (``LEADLINE_OUTBOUND_ALLOWLIST`` opens hosts / CIDRs).
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import ipaddress
import json as jsonlib
import logging
import math
import random
import socket
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import backoff
import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from core.redaction import redact_text

logger = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BODY_BYTES = 10 * 1024 * 1024
ERROR_SNIPPET_CHARS = 300


# --- Errors ------------------------------------------------------------------


class ProviderError(Exception):
    """An outbound call failed. ``message`` is redacted and safe to store or log."""

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
        attempts: int = 0,
        secrets: Iterable[str] = (),
    ) -> None:
        self.provider = provider
        self.status = status
        self.method = method
        self.path = redact_text(path, extra_secrets=secrets)
        self.retry_after = retry_after
        self.attempts = attempts
        self.message = redact_text(message, extra_secrets=secrets)
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f"{self.provider} {self.method} {self.path}".strip()
        status = f" -> {self.status}" if self.status is not None else ""
        return f"{where}{status}: {self.message}" if where else self.message


class ProviderTimeout(ProviderError):
    """Connect/read timeout, or the operation's deadline ran out."""

    code = "timeout"

    def __init__(self, message: str, *, connect: bool = False, **kwargs: Any) -> None:
        self.connect = connect  # True when nothing reached the server
        super().__init__(message, **kwargs)


class ProviderConnectionError(ProviderError):
    code = "connection_failed"


class ProviderRateLimited(ProviderError):
    code = "rate_limited"


class ProviderAuthError(ProviderError):
    """401 or 403: the credentials are wrong or lack access."""

    code = "auth_failed"


class ProviderNotFound(ProviderError):
    code = "not_found"


class ProviderHTTPError(ProviderError):
    """Any other non-2xx answer (4xx validation errors, 5xx)."""

    code = "http_error"


class ProviderBadResponse(ProviderError):
    """2xx answer whose body is not what the client expected (e.g. not JSON)."""

    code = "bad_response"


class ProviderOutboundRefused(ProviderError):
    """A guarded client refused to connect: the URL leads to a non-public address."""

    code = "outbound_refused"


# --- Deadline ----------------------------------------------------------------


class Deadline:
    """A point in (monotonic) time an operation, or a whole chain of calls, must finish by:
    ``seconds`` after ``start`` (a ``time.monotonic()`` value; now by default). ``None``
    seconds: no deadline. The provider clients and the OpenAI wrapper (``drafts.llm``) share it."""

    def __init__(self, seconds: float | None, *, start: float | None = None) -> None:
        began = time.monotonic() if start is None else start
        self.expires_at = None if seconds is None else began + max(0.0, seconds)

    @property
    def at(self) -> float:
        """``expires_at``, infinite when there is no deadline."""
        return math.inf if self.expires_at is None else self.expires_at

    @classmethod
    def coerce(cls, value: Deadline | float | None) -> Deadline:
        return value if isinstance(value, Deadline) else cls(value)

    def remaining(self) -> float:
        if self.expires_at is None:
            return float("inf")
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def sub(self, seconds: float | None) -> Deadline:
        """A deadline that ends ``seconds`` from now or with this one, whichever comes first."""
        if seconds is None:
            return self
        child = Deadline(seconds)
        if self.expires_at is not None and child.expires_at is not None:
            child.expires_at = min(child.expires_at, self.expires_at)
        return child


# --- Deadline watchdog -------------------------------------------------------
#
# Socket timeouts apply per read, so they cannot bound a response that arrives
# one byte at a time. Each attempt with a finite deadline arms a timer; the
# connection that serves the attempt registers itself with it (through a
# thread-local: ``requests`` runs the attempt in the calling thread) and the
# timer shuts its socket down when the deadline expires, which wakes any
# blocked read. Sessions get this through :class:`DeadlineAdapter`.

_current = threading.local()


class _Watchdog:
    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self._done = False
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def watch(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            if self.fired:
                _shutdown(conn)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._conn is not None:
                _shutdown(self._conn)

    def stop(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _shutdown(conn: Any) -> None:
    # The raw TCP socket (under TLS too): shutting it down wakes a read blocked
    # in another thread, which close() does not reliably do.
    sock = getattr(conn, "_deadline_raw_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedConnectionMixin:
    def _new_conn(self):
        sock = super()._new_conn()
        self._deadline_raw_sock = sock
        _watch(self)  # a watchdog that fired during connect cuts the socket now
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # reused keep-alive connections register here
        return super().request(*args, **kwargs)


def _watch(conn: Any) -> None:
    watchdog = getattr(_current, "watchdog", None)
    if watchdog is not None:
        watchdog.watch(conn)


def _pool_classes(*mixins: type) -> dict[str, type]:
    """{scheme: connection pool class} whose connections carry ``mixins`` (outermost first)."""
    pools = {}
    for scheme, connection, pool in (
        ("http", HTTPConnection, HTTPConnectionPool),
        ("https", HTTPSConnection, HTTPSConnectionPool),
    ):
        name = "".join(m.__name__.strip("_").replace("ConnectionMixin", "") for m in mixins)
        connection_cls = type(f"_{name}{connection.__name__}", (*mixins, connection), {})
        pools[scheme] = type(f"_{name}{pool.__name__}", (pool,), {"ConnectionCls": connection_cls})
    return pools


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections obey the attempt's deadline watchdog."""

    pool_classes = _pool_classes(_WatchedConnectionMixin)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self.pool_classes)

    def proxy_manager_for(self, *args: Any, **kwargs: Any):
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(self.pool_classes)
        return manager


# --- Outbound guard ------------------------------------------------------------
#
# URLs typed into workspace settings are fetched from the server, so they must
# not reach the server's own network (loopback services, the private network,
# the cloud metadata endpoint). Checking the name when the URL is saved is not
# enough (DNS can answer differently later, redirects go elsewhere), so guarded
# connections resolve the name themselves, refuse a non-public answer, connect
# to exactly the address they checked and check the connected peer once more.

# Cloud metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, ECS task metadata, Alibaba).
CLOUD_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)


class OutboundAddressRefused(ValueError):
    """``host`` leads to ``address``, which Leadline refuses to reach. The message is safe to show."""

    def __init__(self, *, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        shown = host if host == address else f"{host} resolves to {address}"
        super().__init__(
            f"{shown}, {reason}: refused (only public addresses are fetched; "
            "LEADLINE_OUTBOUND_ALLOWLIST can open a host or network)"
        )


def address_refusal_reason(address: str) -> str | None:
    """Why ``address`` (an IP) must not be reached, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in CLOUD_METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class OutboundAllowlist:
    """``LEADLINE_OUTBOUND_ALLOWLIST``: host names (exact, case-insensitive) and IPs / CIDR networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> OutboundAllowlist:
        hosts: set[str] = set()
        networks = []
        for raw in entries:
            entry = raw.strip().strip("[]").lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        return cls(hosts=frozenset(hosts), networks=tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.strip("[]").lower().rstrip(".") in self.hosts

    def allows_address(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        candidates = [ip] + ([ip.ipv4_mapped] if ip.version == 6 and ip.ipv4_mapped is not None else [])
        return any(c in net for c in candidates for net in self.networks if c.version == net.version)


def outbound_allowlist() -> OutboundAllowlist:
    return OutboundAllowlist.parse(getattr(settings, "LEADLINE_OUTBOUND_ALLOWLIST", ()) or ())


def resolve_host(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to (TCP), in resolver order. Tests replace this resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def check_outbound_address(*, host: str, address: str, allowlist: OutboundAllowlist | None = None) -> None:
    """Raise :class:`OutboundAddressRefused` unless ``address`` (what ``host`` led to) may be reached."""
    allowlist = allowlist or outbound_allowlist()
    if allowlist.allows_host(host) or allowlist.allows_address(address):
        return
    reason = address_refusal_reason(address)
    if reason is not None:
        raise OutboundAddressRefused(host=host, address=address, reason=reason)


def check_outbound_url(url: str) -> None:
    """The save-time check of a URL from workspace settings: its host, or every address its name
    resolves to now, must be public. A name that does not resolve now passes (nothing to judge;
    the connect-time check still applies). Raises :class:`OutboundAddressRefused`."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return
    allowlist = outbound_allowlist()
    if allowlist.allows_host(host):
        return
    if _is_ip_literal(host):
        check_outbound_address(host=host, address=host, allowlist=allowlist)
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError, ValueError):
        return
    for address in addresses:
        check_outbound_address(host=host, address=address, allowlist=allowlist)


class _GuardedConnectionMixin:
    """Connect only to addresses :func:`check_outbound_address` accepts (see the section comment)."""

    def _new_conn(self):
        host = self.host
        allowlist = outbound_allowlist()
        name = self._dns_host
        try:
            addresses = [name.strip("[]")] if _is_ip_literal(name) else resolve_host(name, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc
        for address in addresses:
            check_outbound_address(host=host, address=address, allowlist=allowlist)
        last_error: Exception | None = None
        for address in addresses:
            # Connect to the address just checked, never to a second resolution of the name;
            # TLS still verifies the certificate against ``self.host``.
            self._dns_host = address
            try:
                sock = super()._new_conn()
            except (NewConnectionError, ConnectTimeoutError) as exc:
                last_error = exc
                continue
            finally:
                self._dns_host = name
            try:
                check_outbound_address(host=host, address=sock.getpeername()[0], allowlist=allowlist)
            except OutboundAddressRefused:
                sock.close()
                raise
            return sock
        raise last_error or NewConnectionError(self, f"{host} resolved to no address")


class GuardedAdapter(DeadlineAdapter):
    """A :class:`DeadlineAdapter` whose every connection passes the outbound guard."""

    pool_classes = _pool_classes(_GuardedConnectionMixin, _WatchedConnectionMixin)


# --- Rate limiting -----------------------------------------------------------


class RateLimiter(typing.Protocol):
    """What :class:`HttpClient` asks of a rate limiter (``TokenBucket``, ``core.ratelimit``)."""

    capacity: float  # requests per interval, as last known
    interval_s: float

    def acquire(self, *, deadline: Deadline | None = None, provider: str = "") -> float: ...

    def update_from_headers(self, headers: Mapping[str, str]) -> None: ...

    def drain(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class TokenBucket:
    """Thread-safe token bucket: ``capacity`` requests per ``interval_s``, refilled continuously.

    ``update_from_headers`` adopts the limit the server announces
    (``X-RateLimit-Max`` / ``X-RateLimit-Interval-Milliseconds``, or
    ``X-RateLimit-Limit``) and never holds more tokens than the server says
    remain (``X-RateLimit-Remaining``). One bucket is shared per rate-limit
    scope (e.g. a GHL location) within a process: see :func:`shared_bucket`.
    """

    def __init__(self, *, capacity: float, interval_s: float) -> None:
        if capacity <= 0 or interval_s <= 0:
            raise ValueError("capacity and interval_s must be positive")
        self.capacity = float(capacity)
        self.interval_s = float(interval_s)
        self._tokens = float(capacity)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        return self.capacity / self.interval_s

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self, *, deadline: Deadline | None = None, provider: str = "") -> float:
        """Take one token, sleeping until one is available. Returns seconds waited.

        Raises :class:`ProviderRateLimited` without sleeping when the wait would
        not fit in the deadline.
        """
        deadline = deadline or Deadline(None)
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                wait = (1.0 - self._tokens) / self.rate
            if wait > deadline.remaining():
                raise ProviderRateLimited(
                    f"local rate limit: next request slot in {wait:.1f}s is past the deadline",
                    provider=provider,
                    retry_after=wait,
                )
            time.sleep(wait)
            waited += wait

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        def number(name: str) -> float | None:
            raw = headers.get(name)
            try:
                return float(raw) if raw not in (None, "") else None
            except (TypeError, ValueError):
                return None

        limit = number("X-RateLimit-Max") or number("X-RateLimit-Limit")
        interval_ms = number("X-RateLimit-Interval-Milliseconds")
        remaining = number("X-RateLimit-Remaining")
        with self._lock:
            self._refill(time.monotonic())
            if limit and limit > 0:
                self.capacity = limit
            if interval_ms and interval_ms > 0:
                self.interval_s = interval_ms / 1000.0
            if remaining is not None and remaining >= 0:
                self._tokens = min(self._tokens, remaining)
            self._tokens = min(self._tokens, self.capacity)

    def drain(self) -> None:
        """Empty the bucket (after a 429: the server says we are over)."""
        with self._lock:
            self._refill(time.monotonic())
            self._tokens = min(self._tokens, 0.0)

    def pause(self, seconds: float) -> None:
        """No token for ``seconds`` (the server named a wait)."""
        with self._lock:
            self._refill(time.monotonic())
            self._tokens = min(self._tokens, -max(0.0, seconds) * self.rate)


_buckets: dict[str, TokenBucket] = {}
_buckets_lock = threading.Lock()


def shared_bucket(key: str, *, capacity: float, interval_s: float) -> TokenBucket:
    """The process-wide bucket for ``key`` (created on first use)."""
    with _buckets_lock:
        bucket = _buckets.get(key)
        if bucket is None:
            bucket = _buckets[key] = TokenBucket(capacity=capacity, interval_s=interval_s)
        return bucket


# --- Client ------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_tries: int = 3  # attempts in total, the first included
    max_rate_limited_tries: int = 4  # attempts in total when the server answers 429
    base_s: float = 0.5
    factor: float = 2.0
    max_wait_s: float = 30.0
    retry_timeouts: bool = True


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def backoff_full_jitter(*, failures: int, base_s: float, factor: float = 2.0, max_wait_s: float = 30.0) -> float:
    """Exponential backoff with full jitter: a wait in [0, min(max_wait_s, base_s * factor ** (failures - 1))],
    from the ``backoff`` library's ``expo`` and ``full_jitter``."""
    waits = backoff.expo(base=factor, factor=base_s, max_value=max_wait_s)
    next(waits)  # backoff's wait generators yield once before their first value
    for _ in range(max(0, failures - 1)):
        next(waits)
    return backoff.full_jitter(next(waits))


T = typing.TypeVar("T")


def retry_call(
    attempt: Callable[[int], T],
    *,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    deadline: Deadline,
    give_up: Callable[[Any, int], bool],
    wait: Callable[[Any, int], float],
    wait_must_fit: bool = False,
    min_attempt_s: float = 0.0,
    stop: Callable[[Any, str], None] | None = None,
    on_backoff: Callable[[Any, int, float], None] | None = None,
) -> T:
    """The one retry loop (``HttpClient.request`` and ``drafts.llm.responses_create``).

    Calls ``attempt(n)`` (n = 1, 2, ...) until it returns. After a ``retry_on`` failure it stops
    when ``give_up(exc, n)`` says so; otherwise it sleeps ``wait(exc, n)`` seconds and tries
    again. No wait runs past ``deadline``: with ``wait_must_fit`` a wait that would leave less
    than ``min_attempt_s`` for the next attempt stops the loop instead; without it the wait is
    cut at the deadline (the next attempt then meets the deadline itself). On a stop,
    ``stop(exc, reason)`` (reason ``give_up`` or ``no_time``) may raise an error of its own;
    otherwise the failure is re-raised.
    """
    failures = 0
    while True:
        try:
            return attempt(failures + 1)
        except retry_on as exc:
            failures += 1
            reason = "give_up" if give_up(exc, failures) else ""
            seconds = 0.0
            if not reason:
                seconds = max(0.0, wait(exc, failures))
                if wait_must_fit and seconds + min_attempt_s > deadline.remaining():
                    reason = "no_time"
                seconds = min(seconds, deadline.remaining())
            if reason:
                if stop is not None:
                    stop(exc, reason)
                raise
            if on_backoff is not None:
                on_backoff(exc, failures, seconds)
            time.sleep(seconds)


def _http_wait(exc: ProviderError, failures: int, *, policy: RetryPolicy, bucket: RateLimiter | None) -> float:
    """Exponential with full jitter, except when the server named a wait (``Retry-After``), or
    answered 429 without one: then the announced rate-limit window, with up to 20 % jitter so
    waiting clients do not return in lockstep."""
    if exc.retry_after is not None:
        return exc.retry_after + random.uniform(0, 0.1 * exc.retry_after + 0.05)
    if isinstance(exc, ProviderRateLimited) and exc.status == 429 and bucket is not None:
        return bucket.interval_s * random.uniform(1.0, 1.2)
    return backoff_full_jitter(
        failures=failures, base_s=policy.base_s, factor=policy.factor, max_wait_s=policy.max_wait_s
    )


class HttpClient:
    """A ``requests.Session`` with timeouts, deadline, retries, rate limit and typed errors.

    Provider clients own one and call :meth:`request` / :meth:`get_json`.
    ``secrets`` are strings (tokens) to scrub from every error message.
    ``outbound_guard=True`` is for URLs that come from workspace settings: every
    connection passes the outbound guard (:class:`GuardedAdapter`) and no proxy
    from the environment is used (a proxy would resolve the name itself).
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 15.0,
        retry: RetryPolicy | None = None,
        classify_error: Callable[[requests.Response, ProviderError], ProviderError] | None = None,
        rate_limiter: RateLimiter | None = None,
        secrets: Iterable[str] = (),
        session: requests.Session | None = None,
        outbound_guard: bool = False,
        max_connections: int = 10,
    ) -> None:
        """``max_connections``: keep-alive connections kept per host, for a client that threads
        share (a batch of sends); more concurrent calls than that still run, on connections
        closed after use."""
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.classify_error = classify_error
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter
        self.secrets = tuple(s for s in secrets if s)
        self.session = session or requests.Session()
        for prefix in ("http://", "https://"):
            if outbound_guard:
                self.session.mount(prefix, GuardedAdapter(pool_maxsize=max_connections))
            elif not isinstance(self.session.get_adapter(prefix), DeadlineAdapter):
                self.session.mount(prefix, DeadlineAdapter(pool_maxsize=max_connections))
        if outbound_guard:
            self.session.trust_env = False
        self.session.headers.update({"Accept": "application/json", "User-Agent": "leadline/1.0"})
        self.session.headers.update(dict(headers or {}))
        self.requests_sent = 0
        self.rate_limited_answers = 0

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        deadline: Deadline | float | None = None,
        idempotent: bool | None = None,
        rate_limited: bool = True,
    ) -> requests.Response:
        """Send one logical request (retrying as the policy allows); return the 2xx response.

        ``deadline`` bounds everything: rate-limit waits, attempts, backoff sleeps.
        """
        method = method.upper()
        deadline = Deadline.coerce(deadline)
        url = self._url(path_or_url)
        safe = idempotent if idempotent is not None else method in IDEMPOTENT_METHODS

        def attempt(attempt_no: int) -> requests.Response:
            return self._attempt(
                method,
                url,
                params=params,
                json=json,
                data=data,
                headers=headers,
                deadline=deadline,
                rate_limited=rate_limited,
                attempt_no=attempt_no,
            )

        def give_up(exc: ProviderError, tries: int) -> bool:
            if deadline.expired:
                return True
            if exc.retry_after is not None and exc.retry_after > deadline.remaining():
                return True  # the server asked for a wait we cannot afford
            if isinstance(exc, ProviderRateLimited):
                return tries >= self.retry.max_rate_limited_tries
            if tries >= self.retry.max_tries:
                return True
            if isinstance(exc, ProviderTimeout):
                if not self.retry.retry_timeouts:
                    return True
                return not (safe or exc.connect)
            if isinstance(exc, ProviderConnectionError):
                return not safe
            if isinstance(exc, ProviderHTTPError):
                return not (safe and exc.status in RETRYABLE_STATUSES)
            return True

        return retry_call(
            attempt,
            retry_on=ProviderError,
            deadline=deadline,
            give_up=give_up,  # with the deadline in view
            wait=functools.partial(_http_wait, policy=self.retry, bucket=self.rate_limiter),
            on_backoff=self._log_backoff,
        )

    def get_json(self, path_or_url: str, **kwargs: Any) -> Any:
        return self.json_of(self.request("GET", path_or_url, **kwargs))

    def json_of(self, response: requests.Response) -> Any:
        try:
            return jsonlib.loads(response.content or b"null")
        except ValueError as exc:
            raise ProviderBadResponse(
                f"answer is not JSON ({len(response.content)} bytes)",
                provider=self.provider,
                status=response.status_code,
                method=response.request.method or "",
                path=_path_of(response.url),
                secrets=self.secrets,
            ) from exc

    # -- internals --

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def _log_backoff(self, exc: ProviderError, tries: int, wait: float) -> None:
        logger.info("%s retry %s after %.2fs: %s", self.provider, tries, wait, exc.__class__.__name__)

    def _error_kwargs(self, method: str, url: str, attempt_no: int) -> dict:
        return {
            "provider": self.provider,
            "method": method,
            "path": _path_of(url),
            "attempts": attempt_no,
            "secrets": self.secrets,
        }

    def _attempt(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Any,
        headers: Mapping[str, str] | None,
        deadline: Deadline,
        rate_limited: bool,
        attempt_no: int,
    ) -> requests.Response:
        err = self._error_kwargs(method, url, attempt_no)
        if deadline.expired:
            raise ProviderTimeout("deadline exceeded before the request was sent", connect=True, **err)
        if rate_limited and self.rate_limiter is not None:
            self.rate_limiter.acquire(deadline=deadline, provider=self.provider)
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ProviderTimeout("deadline exceeded before the request was sent", connect=True, **err)
        timeout = (min(self.connect_timeout_s, remaining), min(self.read_timeout_s, remaining))
        self.requests_sent += 1
        watchdog = _Watchdog(remaining) if remaining != float("inf") else None
        if watchdog is not None:
            watchdog.start()
        _current.watchdog = watchdog
        try:
            response = self._send(
                method,
                url,
                params=params,
                json=json,
                data=data,
                headers=headers,
                timeout=timeout,
                watchdog=watchdog,
                err=err,
            )
            try:
                self._read_body(response, deadline=deadline, watchdog=watchdog, err=err)
            finally:
                response.close()
        finally:
            _current.watchdog = None
            if watchdog is not None:
                watchdog.stop()
        if self.rate_limiter is not None:
            self.rate_limiter.update_from_headers(response.headers)
        if 200 <= response.status_code < 300:
            return response
        error = self._status_error(response, err)
        if self.classify_error is not None:
            error = self.classify_error(response, error)
        raise error

    def _send(
        self,
        method: str,
        url: str,
        *,
        timeout: tuple[float, float],
        watchdog: _Watchdog | None,
        err: dict,
        **kwargs: Any,
    ) -> requests.Response:
        """Send the request and read the status line and headers (the body is left to :meth:`_read_body`)."""
        try:
            return self.session.request(method, url, timeout=timeout, stream=True, **kwargs)
        except OutboundAddressRefused as exc:
            raise ProviderOutboundRefused(str(exc), **err) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise ProviderTimeout(f"connect timeout after {timeout[0]:.1f}s", connect=True, **err) from exc
        except requests.exceptions.RequestException as exc:
            if watchdog is not None and watchdog.fired:
                raise ProviderTimeout("deadline exceeded while waiting for the answer", **err) from exc
            if isinstance(exc, requests.exceptions.Timeout):
                raise ProviderTimeout(f"read timeout after {timeout[1]:.1f}s", **err) from exc
            if isinstance(exc, requests.exceptions.ConnectionError):
                raise ProviderConnectionError(f"connection failed: {exc.__class__.__name__}", **err) from exc
            raise ProviderError(f"request failed: {exc.__class__.__name__}", **err) from exc

    def _read_body(
        self, response: requests.Response, *, deadline: Deadline, watchdog: _Watchdog | None, err: dict
    ) -> None:
        """Read the whole body in chunks, never past the deadline (the watchdog) or the size cap."""
        chunks: list[bytes] = []
        size = 0
        try:
            # read1 returns whatever arrived (iter_content would block until 64 KiB),
            # so the deadline is checked between socket reads.
            while chunk := response.raw.read1(65536, decode_content=True):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ProviderBadResponse(f"answer larger than {MAX_BODY_BYTES} bytes", **err)
                if deadline.expired:
                    raise ProviderTimeout("deadline exceeded while reading the answer", **err)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise ProviderTimeout("read timeout while reading the answer", **err) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if watchdog is not None and watchdog.fired:
                raise ProviderTimeout("deadline exceeded while reading the answer", **err) from exc
            raise ProviderConnectionError(f"connection broken while reading: {exc.__class__.__name__}", **err) from exc
        if watchdog is not None and watchdog.fired:
            # The socket was cut: an answer without Content-Length would look complete.
            raise ProviderTimeout("deadline exceeded while reading the answer", **err)
        response._content = b"".join(chunks)
        response._content_consumed = True

    def _status_error(self, response: requests.Response, err: dict) -> ProviderError:
        status = response.status_code
        detail = _error_detail(response)
        message = f"HTTP {status}" + (f": {detail}" if detail else "")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            if retry_after is None:
                # Calendly announces the seconds until its window resets instead.
                retry_after = _reset_seconds(response.headers.get("X-RateLimit-Reset"))
            self.rate_limited_answers += 1
            if self.rate_limiter is not None:
                # The server's named wait holds for every caller of the limiter; without
                # one, the limiter is drained so every caller waits for the window.
                if retry_after is not None:
                    self.rate_limiter.pause(retry_after)
                else:
                    self.rate_limiter.drain()
            return ProviderRateLimited(message, status=status, retry_after=retry_after, **err)
        if status in (401, 403):
            return ProviderAuthError(message, status=status, **err)
        if status == 404:
            return ProviderNotFound(message, status=status, **err)
        return ProviderHTTPError(message, status=status, retry_after=retry_after if status == 503 else None, **err)


def _reset_seconds(value: str | None) -> float | None:
    """``X-RateLimit-Reset`` as seconds from now (a small number), ignoring epoch timestamps."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    if seconds is None or seconds < 0 or seconds > 3600:
        return None
    return seconds


def _path_of(url: str) -> str:
    """The URL without its query string (queries can carry ids or secrets)."""
    return url.split("?", 1)[0]


def _error_detail(response: requests.Response) -> str:
    """A short, human-readable reason from an error body (JSON ``message``/``title``, else text)."""
    content = response.content or b""
    with contextlib.suppress(ValueError):
        body = jsonlib.loads(content)
        if isinstance(body, dict):
            for key in ("message", "error", "title", "detail", "details"):
                value = body.get(key)
                if value:
                    text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
                    return text[:ERROR_SNIPPET_CHARS]
    text = content.decode("utf-8", errors="replace").strip()
    if text.startswith("<"):
        return ""  # HTML error pages say nothing useful
    return " ".join(text.split())[:ERROR_SNIPPET_CHARS]
