"""Rate limiters shared by every process and host on one Redis, keyed by any string.

A *sliding window log*: at most ``limit`` requests in any ``interval_s``
(plus a small margin for network jitter). Unlike a token bucket, it never
sends more than ``limit`` in a window, so it stays under a server that counts
a fixed or a sliding window alike, and it runs at the full announced rate.

- :class:`RedisWindowLimiter` keeps the log in a Redis sorted set, updated by
  one Lua script per call (atomic, clock = Redis ``TIME``, so hosts with
  skewed clocks still agree). Every process using the same Redis and key
  shares the limit.
- :class:`LocalWindowLimiter` is the same algorithm in process memory: the
  fallback when there is no Redis (the embedded filesystem broker), and when
  Redis stops answering mid-run.

Both adapt to what the server announces (``update_from_headers``): the limit
and interval (``X-RateLimit-Max`` / ``X-RateLimit-Limit``,
``X-RateLimit-Interval-Milliseconds``), the requests it says remain (when the
server counted more than the log, the log is topped up: someone else spends
the same budget), and a daily budget (``X-RateLimit-Daily-Remaining``: at 0
every caller is refused at once instead of sleeping for hours). After a 429
(``drain``) the window is filled, so every process waits for it to slide;
``pause`` stops everyone for a server-named time (``Retry-After``).

OpenAI's headers are read by the same code: ``x-ratelimit-limit-requests`` and
``x-ratelimit-remaining-requests`` (the limit and remaining count, as above),
``x-ratelimit-reset-requests`` (a Go duration such as ``6m0s``, ``1s``,
``20ms``: the time until the budget is whole again, from which the window is
inferred, and the pause when none remains), and ``x-ratelimit-remaining-tokens``
/ ``x-ratelimit-reset-tokens`` (everyone pauses until the token reset when
fewer than ``tokens_reserve`` tokens remain).

A limiter made with ``probe=True`` lets ordered callers through one at a time until a first
attempt has been observed (``update_from_headers``, with or without headers): a cold start
learns the announced limit before a burst can run into it.

Waiters may queue *in order* (``acquire(priority=...)``: lower first, e.g. the
inbound message's timestamp): each waiter holds a ticket in a Redis sorted set
beside the log, and a slot goes only to a ticket ranked below the number of free
slots, so across every process the oldest waiter is served first. A ticket not
seen for ``TICKET_STALE_S`` (its process died) leaves the queue.

They implement :class:`core.http.RateLimiter`, the hook the HTTP layer calls.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping

import redis

from core.http import Deadline, ProviderRateLimited

logger = logging.getLogger(__name__)

DAILY_EXHAUSTED_RECHECK_S = 300.0  # refuse for this long once the daily budget reads 0
# An ordered waiter re-reads its place at least this often (the queue changes as others join).
ORDERED_POLL_S = 1.0
# A queued ticket not refreshed for this long belongs to a dead waiter and leaves the queue.
TICKET_STALE_S = 10.0


def default_margin_s(interval_s: float) -> float:
    """Extra time added to each window for jitter between our send and the server's arrival clock."""
    return min(0.25, max(0.05, interval_s * 0.02))


def _number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        raw = headers.get(name)
        if raw in (None, ""):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            return value
    return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds from a Go-style duration (OpenAI's ``x-ratelimit-reset-*``: ``6m0s``, ``1s``,
    ``20ms``, ``1h2m3.5s``) or a bare number of seconds; None when it is neither."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        seconds = sum(float(n) * scale[u] for n, u in parts)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclasses.dataclass(frozen=True)
class Announced:
    """What a response's headers say about the limit (None: not said)."""

    limit: float | None = None
    interval_ms: float | None = None
    remaining: float | None = None
    daily_remaining: float | None = None
    pause_s: float = 0.0  # everyone stops this long (nothing left until the server's reset)

    @property
    def empty(self) -> bool:
        return (
            self.limit is None
            and self.interval_ms is None
            and self.remaining is None
            and self.daily_remaining is None
            and not self.pause_s
        )


def announced(headers: Mapping[str, str], *, tokens_reserve: float = 0.0) -> Announced:
    """Read GHL's (``X-RateLimit-Max``/``-Limit``/``-Remaining``/``-Interval-Milliseconds``/
    ``-Daily-Remaining``) and OpenAI's (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``)
    rate-limit headers. OpenAI names no window: it is inferred from the reset time, which is how
    long the spent part of the budget takes to come back (``reset × limit / spent``), when enough
    of it is spent for the estimate to mean something."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    limit = _number(lowered, "x-ratelimit-max", "x-ratelimit-limit", "x-ratelimit-limit-requests")
    if limit is not None and limit < 1:
        limit = None
    interval_ms = _number(lowered, "x-ratelimit-interval-milliseconds")
    if interval_ms is not None and interval_ms <= 0:
        interval_ms = None
    remaining = _number(lowered, "x-ratelimit-remaining", "x-ratelimit-remaining-requests")
    if remaining is not None and remaining < 0:
        remaining = None
    daily = _number(lowered, "x-ratelimit-daily-remaining")
    pause_s = 0.0
    reset_requests = parse_duration(lowered.get("x-ratelimit-reset-requests"))
    if reset_requests is not None and limit is not None and remaining is not None:
        spent = limit - remaining
        if interval_ms is None and spent >= max(2.0, 0.05 * limit) and reset_requests > 0:
            interval_ms = min(3_600_000.0, max(100.0, round(reset_requests * limit / spent * 10) * 100))
        if remaining < 1:
            pause_s = reset_requests
    limit_tokens = _number(lowered, "x-ratelimit-limit-tokens")
    remaining_tokens = _number(lowered, "x-ratelimit-remaining-tokens")
    reset_tokens = parse_duration(lowered.get("x-ratelimit-reset-tokens"))
    if remaining_tokens is not None and reset_tokens is not None:
        reserve = tokens_reserve if limit_tokens is None else min(tokens_reserve, 0.1 * limit_tokens)
        if remaining_tokens <= max(0.0, reserve):
            pause_s = max(pause_s, reset_tokens)
    return Announced(limit, interval_ms, remaining, daily, min(pause_s, 3600.0))


def _rank(queue: dict[str, tuple[float, float]], ticket: str) -> int:
    key = (queue[ticket][0], ticket)
    return sum(1 for other, (priority, _) in queue.items() if (priority, other) < key)


class LocalWindowLimiter:
    """In-process sliding window log (thread-safe)."""

    def __init__(
        self,
        *,
        limit: int,
        interval_s: float,
        margin_s: float | None = None,
        tokens_reserve: float = 0.0,
        probe: bool = False,
    ) -> None:
        if limit <= 0 or interval_s <= 0:
            raise ValueError("limit and interval_s must be positive")
        self.capacity = float(limit)
        self.interval_s = float(interval_s)
        self.tokens_reserve = float(tokens_reserve)
        # One ordered caller at a time until a first attempt has ended (``observe``).
        self.probe = probe
        self._seen = False
        self._margin_fixed = margin_s is not None
        self.margin_s = default_margin_s(interval_s) if margin_s is None else margin_s
        self._log: deque[float] = deque()
        self._paused_until = 0.0
        self._daily_refused_until = 0.0
        self._queue: dict[str, tuple[float, float]] = {}  # ticket -> (priority, last seen)
        self._lock = threading.Lock()

    def _window(self) -> float:
        return self.interval_s + self.margin_s

    def _prune(self, now: float) -> None:
        horizon = now - self._window()
        while self._log and self._log[0] <= horizon:
            self._log.popleft()

    def try_acquire(self, ticket: str | None = None, priority: float | None = None) -> float:
        """Take a slot now (returns 0.0) or return the seconds until one may free up.

        With a ``ticket`` the call queues in ``priority`` order (lower first): a slot goes
        to the ticket only when fewer tickets rank before it than slots are free."""
        with self._lock:
            now = time.monotonic()
            if self._daily_refused_until > now:
                self._queue.pop(ticket, None)
                return -1.0
            rank = 0
            if ticket is not None:
                self._queue[ticket] = (float(priority or 0.0), now)
                for other in [t for t, (_, seen) in self._queue.items() if seen < now - TICKET_STALE_S]:
                    del self._queue[other]
                rank = _rank(self._queue, ticket)
            if self._paused_until > now:
                return self._paused_until - now
            self._prune(now)
            probing = ticket is not None and self.probe and not self._seen
            limit = 1 if probing else int(self.capacity)
            if rank < limit - len(self._log):
                self._log.append(now)
                self._queue.pop(ticket, None)
                return 0.0
            gate = len(self._log) - limit + rank  # the entry whose expiry frees this caller's slot
            wait = self._window() if gate >= len(self._log) else max(0.001, self._log[gate] + self._window() - now)
            return min(wait, 0.2) if probing else wait

    def withdraw(self, ticket: str) -> None:
        """Leave the queue (the caller gave up waiting)."""
        with self._lock:
            self._queue.pop(ticket, None)

    def acquire(self, *, deadline: Deadline | None = None, provider: str = "", priority: float | None = None) -> float:
        return _acquire(self, deadline=deadline, provider=provider, priority=priority)

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        self.observe(announced(headers, tokens_reserve=self.tokens_reserve))

    def observe(self, said: Announced) -> None:
        """Adopt what the server announced."""
        with self._lock:
            self._seen = True
            now = time.monotonic()
            if said.limit is not None:
                self.capacity = float(int(said.limit))
            if said.interval_ms is not None:
                self.interval_s = said.interval_ms / 1000.0
                if not self._margin_fixed:
                    self.margin_s = default_margin_s(self.interval_s)
            if said.remaining is not None:
                self._prune(now)
                spent = int(self.capacity) - int(said.remaining)
                for _ in range(max(0, spent - len(self._log))):
                    self._log.append(now)
            if said.daily_remaining is not None and said.daily_remaining <= 0:
                self._daily_refused_until = now + DAILY_EXHAUSTED_RECHECK_S
        if said.pause_s > 0:
            self.pause(said.pause_s)

    def drain(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._prune(now)
            for _ in range(max(0, int(self.capacity) - len(self._log))):
                self._log.append(now)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + max(0.0, seconds))


# Both acquire scripts: wait out a pause, then slide the window (``count``: sends in it).
_SLIDE_LUA = """
local paused = tonumber(st[3] or 0)
if paused > now then return {paused - now, limit, interval} end
local margin = tonumber(ARGV[3])
if margin < 0 then margin = math.min(250, math.max(50, math.floor(interval * 0.02))) end
local window = interval + margin
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
"""

# KEYS[1] = log (sorted set of send times, ms), KEYS[2] = state (hash)
# ARGV: default limit, default interval ms, margin ms (-1: derived), member id
_ACQUIRE_LUA = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[2], 'limit', 'interval_ms', 'paused_until', 'daily_refused_until')
local limit = tonumber(st[1] or ARGV[1])
local interval = tonumber(st[2] or ARGV[2])
if tonumber(st[4] or 0) > now then return {-1, limit, interval} end
"""
    + _SLIDE_LUA
    + """if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  return {0, limit, interval}
end
local gate = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {math.max(1, tonumber(gate[2]) + window - now), limit, interval}
"""
)

# KEYS[1] = log, KEYS[2] = state, KEYS[3] = queue (ticket -> priority), KEYS[4] = beats (ticket -> last seen)
# ARGV: default limit, default interval ms, margin ms (-1: derived), member id, ticket, priority, stale ms,
#       probe ('1': one request at a time until a first attempt was observed)
_ACQUIRE_ORDERED_LUA = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[2], 'limit', 'interval_ms', 'paused_until', 'daily_refused_until', 'seen')
local limit = tonumber(st[1] or ARGV[1])
local probing = ARGV[8] == '1' and not st[5]
if probing then limit = math.min(limit, 1) end
local interval = tonumber(st[2] or ARGV[2])
if tonumber(st[4] or 0) > now then
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  return {-1, limit, interval}
end
redis.call('ZADD', KEYS[3], 'NX', ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[4], now, ARGV[5])
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[7]))
for _, gone in ipairs(stale) do
  redis.call('ZREM', KEYS[3], gone)
  redis.call('ZREM', KEYS[4], gone)
end
redis.call('PEXPIRE', KEYS[3], 3600000)
redis.call('PEXPIRE', KEYS[4], 3600000)
"""
    + _SLIDE_LUA
    + """local rank = redis.call('ZRANK', KEYS[3], ARGV[5])
if rank < limit - count then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  return {0, limit, interval}
end
local gate = count - limit + rank
local wait = window
if gate < count then
  local entry = redis.call('ZRANGE', KEYS[1], gate, gate, 'WITHSCORES')
  wait = math.max(1, tonumber(entry[2]) + window - now)
end
if probing then wait = math.min(wait, 200) end
return {wait, limit, interval}
"""
)

# ARGV: limit|'' , interval ms|'', remaining|'', daily remaining|'', default limit, default interval ms,
#       margin ms (-1: derived), member prefix, mode ('headers' | 'drain'), daily recheck ms
_OBSERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], 'seen', 1)
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'limit', math.floor(tonumber(ARGV[1]))) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], 'interval_ms', math.floor(tonumber(ARGV[2]))) end
redis.call('PEXPIRE', KEYS[2], 86400000)
local st = redis.call('HMGET', KEYS[2], 'limit', 'interval_ms')
local limit = tonumber(st[1] or ARGV[5])
local interval = tonumber(st[2] or ARGV[6])
local margin = tonumber(ARGV[7])
if margin < 0 then margin = math.min(250, math.max(50, math.floor(interval * 0.02))) end
local window = interval + margin
if ARGV[4] ~= '' and tonumber(ARGV[4]) <= 0 then
  redis.call('HSET', KEYS[2], 'daily_refused_until', now + tonumber(ARGV[10]))
end
local target = -1
if ARGV[9] == 'drain' then target = limit
elseif ARGV[3] ~= '' then target = limit - math.floor(tonumber(ARGV[3])) end
if target <= 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local added = 0
for i = count + 1, target do
  redis.call('ZADD', KEYS[1], now, ARGV[8] .. ':' .. i)
  added = added + 1
end
if added > 0 then redis.call('PEXPIRE', KEYS[1], window + 1000) end
return added
"""

_PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + math.floor(tonumber(ARGV[1]))
local current = tonumber(redis.call('HGET', KEYS[1], 'paused_until') or 0)
if until_ms > current then redis.call('HSET', KEYS[1], 'paused_until', until_ms) end
redis.call('PEXPIRE', KEYS[1], 86400000)
return until_ms
"""


class RedisWindowLimiter:
    """The sliding window log in Redis: one limit for every process and host sharing ``key``.

    When Redis fails, calls fall back to an in-process :class:`LocalWindowLimiter`
    (logged once) so a Redis hiccup slows nothing down to a halt.
    """

    def __init__(
        self,
        *,
        client: redis.Redis,
        key: str,
        limit: int,
        interval_s: float,
        margin_s: float | None = None,
        fallback: LocalWindowLimiter | None = None,
        tokens_reserve: float = 0.0,
        probe: bool = False,
    ) -> None:
        self.redis = client
        self.probe = probe
        self.key = key
        self.default_limit = int(limit)
        self.default_interval_ms = int(interval_s * 1000)
        self.margin_ms = -1 if margin_s is None else int(margin_s * 1000)
        self.capacity = float(limit)  # last seen values, for the HTTP layer's waits
        self.interval_s = float(interval_s)
        self.tokens_reserve = float(tokens_reserve)
        self.fallback = fallback or LocalWindowLimiter(
            limit=limit, interval_s=interval_s, margin_s=margin_s, tokens_reserve=tokens_reserve, probe=probe
        )
        self._keys = [f"ratelimit:{{{key}}}:log", f"ratelimit:{{{key}}}:state"]
        self._queue_keys = [f"ratelimit:{{{key}}}:queue", f"ratelimit:{{{key}}}:beats"]
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._acquire_ordered = client.register_script(_ACQUIRE_ORDERED_LUA)
        self._observe = client.register_script(_OBSERVE_LUA)
        self._pause = client.register_script(_PAUSE_LUA)
        self._warned = False

    def _redis_failed(self, exc: Exception) -> None:
        if not self._warned:
            name = type(exc).__name__
            logger.warning("rate limiter %s: Redis unavailable (%s); limiting per process", self.key, name)
            self._warned = True

    def try_acquire(self, ticket: str | None = None, priority: float | None = None) -> float:
        """See :meth:`LocalWindowLimiter.try_acquire`; the queue of tickets lives in Redis too."""
        try:
            if ticket is None:
                wait_ms, limit, interval_ms = self._acquire(
                    keys=self._keys,
                    args=[self.default_limit, self.default_interval_ms, self.margin_ms, uuid.uuid4().hex],
                )
            else:
                wait_ms, limit, interval_ms = self._acquire_ordered(
                    keys=[*self._keys, *self._queue_keys],
                    args=[
                        self.default_limit,
                        self.default_interval_ms,
                        self.margin_ms,
                        uuid.uuid4().hex,
                        ticket,
                        repr(float(priority or 0.0)),
                        int(TICKET_STALE_S * 1000),
                        "1" if self.probe else "0",
                    ],
                )
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return self.fallback.try_acquire(ticket, priority)
        self.capacity, self.interval_s = float(limit), int(interval_ms) / 1000.0
        return -1.0 if int(wait_ms) < 0 else int(wait_ms) / 1000.0

    def withdraw(self, ticket: str) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key in self._queue_keys:
                pipe.zrem(key, ticket)
            pipe.execute()
        except redis.RedisError as exc:
            self._redis_failed(exc)
        self.fallback.withdraw(ticket)

    def acquire(self, *, deadline: Deadline | None = None, provider: str = "", priority: float | None = None) -> float:
        return _acquire(self, deadline=deadline, provider=provider, priority=priority)

    def _observe_call(self, *, mode: str, headers: Mapping[str, str]) -> None:
        def text(value: float | None) -> str:
            return "" if value is None else str(value)

        said = announced(headers, tokens_reserve=self.tokens_reserve)
        if said.pause_s > 0:
            self.pause(said.pause_s)
        if mode == "headers" and said.empty and not self.probe:
            return
        try:
            self._observe(
                keys=self._keys,
                args=[
                    text(said.limit),
                    text(said.interval_ms),
                    text(said.remaining),
                    text(said.daily_remaining),
                    self.default_limit,
                    self.default_interval_ms,
                    self.margin_ms,
                    uuid.uuid4().hex,
                    mode,
                    int(DAILY_EXHAUSTED_RECHECK_S * 1000),
                ],
            )
        except redis.RedisError as exc:
            self._redis_failed(exc)
        # The local twin follows too, in case Redis goes away later (the pause it took above).
        if mode == "drain":
            self.fallback.drain()
        else:
            self.fallback.observe(dataclasses.replace(said, pause_s=0.0))

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        self._observe_call(mode="headers", headers=headers)

    def drain(self) -> None:
        self._observe_call(mode="drain", headers={})

    def pause(self, seconds: float) -> None:
        try:
            self._pause(keys=self._keys[1:], args=[int(max(0.0, seconds) * 1000)])
        except redis.RedisError as exc:
            self._redis_failed(exc)
        self.fallback.pause(seconds)

    def reset(self) -> None:
        """Forget the shared state (tests and benchmarks)."""
        self.redis.delete(*self._keys, *self._queue_keys)


def _acquire(
    limiter: LocalWindowLimiter | RedisWindowLimiter,
    *,
    deadline: Deadline | None,
    provider: str,
    priority: float | None = None,
) -> float:
    """Wait for a slot; returns the seconds waited. Raises :class:`ProviderRateLimited` without
    sleeping when the wait would not fit in the deadline, or when the daily budget is spent.

    With a ``priority`` the caller queues behind every waiter of a lower one (in every process
    sharing the limiter) and re-reads its place at least every ``ORDERED_POLL_S``."""
    deadline = deadline or Deadline(None)
    ticket = None if priority is None else uuid.uuid4().hex
    waited = 0.0
    granted = False
    try:
        while True:
            wait = limiter.try_acquire(ticket, priority) if ticket else limiter.try_acquire()
            if wait == 0.0:
                granted = True
                return waited
            if wait < 0:
                raise ProviderRateLimited("daily request budget exhausted", provider=provider)
            if wait > deadline.remaining():
                raise ProviderRateLimited(
                    f"local rate limit: next request slot in {wait:.1f}s is past the deadline",
                    provider=provider,
                    retry_after=wait,
                )
            nap = min(wait, ORDERED_POLL_S) if ticket else wait
            time.sleep(nap)
            waited += nap
    finally:
        if ticket and not granted:
            limiter.withdraw(ticket)


# --- Registry ----------------------------------------------------------------------

_limiters: dict[tuple[str, str], LocalWindowLimiter | RedisWindowLimiter] = {}
_clients: dict[str, redis.Redis] = {}
_registry_lock = threading.Lock()


def shared_limiter(
    key: str, *, limit: int, interval_s: float, redis_url: str = "", tokens_reserve: float = 0.0, probe: bool = False
) -> LocalWindowLimiter | RedisWindowLimiter:
    """The limiter for ``key``: shared through Redis when ``redis_url`` is given, else per process.

    One object per (redis_url, key) in a process; ``limit``/``interval_s`` are
    the starting values until the server announces its own.
    """
    with _registry_lock:
        found = _limiters.get((redis_url, key))
        if found is not None:
            return found
        if redis_url:
            client = _clients.get(redis_url)
            if client is None:
                client = _clients[redis_url] = redis.Redis.from_url(
                    redis_url, socket_connect_timeout=0.5, socket_timeout=2.0
                )
            limiter: LocalWindowLimiter | RedisWindowLimiter = RedisWindowLimiter(
                client=client, key=key, limit=limit, interval_s=interval_s, tokens_reserve=tokens_reserve, probe=probe
            )
        else:
            limiter = LocalWindowLimiter(limit=limit, interval_s=interval_s, tokens_reserve=tokens_reserve, probe=probe)
        _limiters[(redis_url, key)] = limiter
        return limiter


def shared_limiters_clear() -> None:
    """Forget the process's limiters (tests)."""
    with _registry_lock:
        _limiters.clear()
