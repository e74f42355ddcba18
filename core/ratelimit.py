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

They implement :class:`core.http.RateLimiter`, the hook the HTTP layer calls.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping

import redis

from core.http import Deadline, ProviderRateLimited

logger = logging.getLogger(__name__)

DAILY_EXHAUSTED_RECHECK_S = 300.0  # refuse for this long once the daily budget reads 0


def default_margin_s(interval_s: float) -> float:
    """Extra time added to each window for jitter between our send and the server's arrival clock."""
    return min(0.25, max(0.05, interval_s * 0.02))


def _number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        raw = headers.get(name)
        if raw in (None, ""):
            continue
        try:
            return float(raw)
        except (TypeError, ValueError):
            continue
    return None


class LocalWindowLimiter:
    """In-process sliding window log (thread-safe)."""

    def __init__(self, *, limit: int, interval_s: float, margin_s: float | None = None) -> None:
        if limit <= 0 or interval_s <= 0:
            raise ValueError("limit and interval_s must be positive")
        self.capacity = float(limit)
        self.interval_s = float(interval_s)
        self._margin_fixed = margin_s is not None
        self.margin_s = default_margin_s(interval_s) if margin_s is None else margin_s
        self._log: deque[float] = deque()
        self._paused_until = 0.0
        self._daily_refused_until = 0.0
        self._lock = threading.Lock()

    def _window(self) -> float:
        return self.interval_s + self.margin_s

    def _prune(self, now: float) -> None:
        horizon = now - self._window()
        while self._log and self._log[0] <= horizon:
            self._log.popleft()

    def try_acquire(self) -> float:
        """Take a slot now (returns 0.0) or return the seconds until one may free up."""
        with self._lock:
            now = time.monotonic()
            if self._daily_refused_until > now:
                return -1.0
            if self._paused_until > now:
                return self._paused_until - now
            self._prune(now)
            limit = int(self.capacity)
            if len(self._log) < limit:
                self._log.append(now)
                return 0.0
            return max(0.001, self._log[len(self._log) - limit] + self._window() - now)

    def acquire(self, *, deadline: Deadline | None = None, provider: str = "") -> float:
        return _acquire(self, deadline=deadline, provider=provider)

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        limit = _number(headers, "X-RateLimit-Max", "X-RateLimit-Limit")
        interval_ms = _number(headers, "X-RateLimit-Interval-Milliseconds")
        remaining = _number(headers, "X-RateLimit-Remaining")
        daily_remaining = _number(headers, "X-RateLimit-Daily-Remaining")
        with self._lock:
            now = time.monotonic()
            if limit and limit >= 1:
                self.capacity = float(int(limit))
            if interval_ms and interval_ms > 0:
                self.interval_s = interval_ms / 1000.0
                if not self._margin_fixed:
                    self.margin_s = default_margin_s(self.interval_s)
            if remaining is not None and remaining >= 0:
                self._prune(now)
                spent = int(self.capacity) - int(remaining)
                for _ in range(max(0, spent - len(self._log))):
                    self._log.append(now)
            if daily_remaining is not None and daily_remaining <= 0:
                self._daily_refused_until = now + DAILY_EXHAUSTED_RECHECK_S

    def drain(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._prune(now)
            for _ in range(max(0, int(self.capacity) - len(self._log))):
                self._log.append(now)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + max(0.0, seconds))


# KEYS[1] = log (sorted set of send times, ms), KEYS[2] = state (hash)
# ARGV: default limit, default interval ms, margin ms (-1: derived), member id
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[2], 'limit', 'interval_ms', 'paused_until', 'daily_refused_until')
local limit = tonumber(st[1] or ARGV[1])
local interval = tonumber(st[2] or ARGV[2])
if tonumber(st[4] or 0) > now then return {-1, limit, interval} end
local paused = tonumber(st[3] or 0)
if paused > now then return {paused - now, limit, interval} end
local margin = tonumber(ARGV[3])
if margin < 0 then margin = math.min(250, math.max(50, math.floor(interval * 0.02))) end
local window = interval + margin
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  return {0, limit, interval}
end
local gate = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {math.max(1, tonumber(gate[2]) + window - now), limit, interval}
"""

# ARGV: limit|'' , interval ms|'', remaining|'', daily remaining|'', default limit, default interval ms,
#       margin ms (-1: derived), member prefix, mode ('headers' | 'drain'), daily recheck ms
_OBSERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
    ) -> None:
        self.redis = client
        self.key = key
        self.default_limit = int(limit)
        self.default_interval_ms = int(interval_s * 1000)
        self.margin_ms = -1 if margin_s is None else int(margin_s * 1000)
        self.capacity = float(limit)  # last seen values, for the HTTP layer's waits
        self.interval_s = float(interval_s)
        self.fallback = fallback or LocalWindowLimiter(limit=limit, interval_s=interval_s, margin_s=margin_s)
        self._keys = [f"ratelimit:{{{key}}}:log", f"ratelimit:{{{key}}}:state"]
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._observe = client.register_script(_OBSERVE_LUA)
        self._pause = client.register_script(_PAUSE_LUA)
        self._warned = False

    def _redis_failed(self, exc: Exception) -> None:
        if not self._warned:
            name = type(exc).__name__
            logger.warning("rate limiter %s: Redis unavailable (%s); limiting per process", self.key, name)
            self._warned = True

    def try_acquire(self) -> float:
        try:
            wait_ms, limit, interval_ms = self._acquire(
                keys=self._keys,
                args=[self.default_limit, self.default_interval_ms, self.margin_ms, uuid.uuid4().hex],
            )
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return self.fallback.try_acquire()
        self.capacity, self.interval_s = float(limit), int(interval_ms) / 1000.0
        return -1.0 if int(wait_ms) < 0 else int(wait_ms) / 1000.0

    def acquire(self, *, deadline: Deadline | None = None, provider: str = "") -> float:
        return _acquire(self, deadline=deadline, provider=provider)

    def _observe_call(self, *, mode: str, headers: Mapping[str, str]) -> None:
        def text(value: float | None) -> str:
            return "" if value is None else str(value)

        limit = _number(headers, "X-RateLimit-Max", "X-RateLimit-Limit")
        interval_ms = _number(headers, "X-RateLimit-Interval-Milliseconds")
        remaining = _number(headers, "X-RateLimit-Remaining")
        daily = _number(headers, "X-RateLimit-Daily-Remaining")
        if limit is not None and limit < 1:
            limit = None
        if interval_ms is not None and interval_ms <= 0:
            interval_ms = None
        if mode == "headers" and limit is None and interval_ms is None and remaining is None and daily is None:
            return
        try:
            self._observe(
                keys=self._keys,
                args=[
                    text(limit),
                    text(interval_ms),
                    text(remaining if remaining is not None and remaining >= 0 else None),
                    text(daily),
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
        # The local twin follows too, in case Redis goes away later.
        if mode == "drain":
            self.fallback.drain()
        else:
            self.fallback.update_from_headers(headers)

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
        self.redis.delete(*self._keys)


def _acquire(limiter: LocalWindowLimiter | RedisWindowLimiter, *, deadline: Deadline | None, provider: str) -> float:
    """Wait for a slot; returns the seconds waited. Raises :class:`ProviderRateLimited` without
    sleeping when the wait would not fit in the deadline, or when the daily budget is spent."""
    deadline = deadline or Deadline(None)
    waited = 0.0
    while True:
        wait = limiter.try_acquire()
        if wait == 0.0:
            return waited
        if wait < 0:
            raise ProviderRateLimited("daily request budget exhausted", provider=provider)
        if wait > deadline.remaining():
            raise ProviderRateLimited(
                f"local rate limit: next request slot in {wait:.1f}s is past the deadline",
                provider=provider,
                retry_after=wait,
            )
        time.sleep(wait)
        waited += wait


# --- Registry ----------------------------------------------------------------------

_limiters: dict[tuple[str, str], LocalWindowLimiter | RedisWindowLimiter] = {}
_clients: dict[str, redis.Redis] = {}
_registry_lock = threading.Lock()


def shared_limiter(
    key: str, *, limit: int, interval_s: float, redis_url: str = ""
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
                client=client, key=key, limit=limit, interval_s=interval_s
            )
        else:
            limiter = LocalWindowLimiter(limit=limit, interval_s=interval_s)
        _limiters[(redis_url, key)] = limiter
        return limiter


def shared_limiters_clear() -> None:
    """Forget the process's limiters (tests)."""
    with _registry_lock:
        _limiters.clear()
