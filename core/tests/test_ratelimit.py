"""core.ratelimit: the sliding-window limiters, in process and shared through Redis (two real
processes on one key; two processes sharing one GHL location's limit: ghl/tests/test_shared_rate_limit.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis

from core.http import Deadline, ProviderRateLimited
from core.ratelimit import LocalWindowLimiter, RedisWindowLimiter
from core.testing.processes import BASE_DIR

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# The limiters' window margin. Checks count requests in the bare interval, so a timestamp taken
# up to this much late (the test process descheduled between the limiter's answer and the
# clock read, e.g. on a loaded machine) cannot make a correct limiter look wrong.
MARGIN_S = 0.1


def _limiters(redis_client, *, limit: int, interval_s: float):
    yield LocalWindowLimiter(limit=limit, interval_s=interval_s, margin_s=MARGIN_S)
    yield RedisWindowLimiter(
        client=redis_client, key=f"test:{uuid.uuid4().hex}", limit=limit, interval_s=interval_s, margin_s=MARGIN_S
    )


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_never_more_than_the_limit_in_any_window_and_full_rate_otherwise(redis_client, kind):
    limiter = dict(zip(["local", "redis"], _limiters(redis_client, limit=5, interval_s=0.5), strict=True))[kind]
    times = []
    started = time.monotonic()
    for _ in range(12):
        limiter.acquire(deadline=Deadline(5))
        times.append(time.monotonic())
    assert max_in_any_window(times, 0.5) <= 5
    # 12 requests at 5 per (0.5 s + margin): two full windows pass, not more (plus scheduling).
    window = 0.5 + MARGIN_S
    assert 2 * window <= times[-1] - started < 2 * window + 0.5


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_adopts_the_announced_limit_and_remaining(redis_client, kind):
    limiter = dict(zip(["local", "redis"], _limiters(redis_client, limit=90, interval_s=10.0), strict=True))[kind]
    limiter.update_from_headers(
        {"X-RateLimit-Max": "3", "X-RateLimit-Interval-Milliseconds": "400", "X-RateLimit-Remaining": "1"}
    )
    # The server says 2 of 3 are spent in this window: one slot is left now, the next one later.
    assert limiter.try_acquire() == 0.0
    wait = limiter.try_acquire()
    assert 0.3 <= wait <= 0.4 + MARGIN_S + 0.01
    assert limiter.capacity == 3 and limiter.interval_s == pytest.approx(0.4)


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_drain_pause_and_daily_budget(redis_client, kind):
    limiter = dict(zip(["local", "redis"], _limiters(redis_client, limit=10, interval_s=0.3), strict=True))[kind]
    limiter.drain()
    assert 0.2 <= limiter.try_acquire() <= 0.3 + MARGIN_S + 0.01  # a 429 without Retry-After: the window
    limiter.pause(2.0)
    assert 1.5 <= limiter.try_acquire() <= 2.0
    with pytest.raises(ProviderRateLimited, match="past the deadline"):
        limiter.acquire(deadline=Deadline(0.5))
    limiter.update_from_headers({"X-RateLimit-Daily-Remaining": "0"})
    with pytest.raises(ProviderRateLimited, match="daily"):
        limiter.acquire(deadline=Deadline(60))


def test_redis_limiter_falls_back_to_the_process_when_redis_is_away():
    dead = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    limiter = RedisWindowLimiter(client=dead, key="k", limit=2, interval_s=0.3, margin_s=0.0)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() > 0  # the local twin still limits


_LIMITER_CHILD = """
import json, sys, time
import redis
from core.ratelimit import RedisWindowLimiter
url, key, n, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
client = redis.Redis.from_url(url)
limiter = RedisWindowLimiter(client=client, key=key, limit=5, interval_s=1.0, margin_s=0.1)
while time.time() < start_at:
    time.sleep(0.005)
times = []
for _ in range(n):
    limiter.acquire()
    # The limiter's own clock (Redis TIME): two processes' wall clocks need not agree
    # (a moved test calendar starts each process's clock on its own).
    seconds, micros = client.time()
    times.append(seconds + micros / 1e6)
print(json.dumps(times))
"""


def test_two_processes_on_one_key_get_one_limit_not_one_each(redis_client):
    """No server headers here: only the shared Redis log can keep 2 × 10 acquisitions at 5 per second
    (per-process limiters would let 10 through in the first second)."""
    key = f"test:{uuid.uuid4().hex}"
    start_at = time.time() + 3.0  # both children burst at the same instant, after their start-up
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LIMITER_CHILD, REDIS_URL, key, "10", str(start_at)],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    times: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        times += json.loads(out)
    assert len(times) == 20
    assert max_in_any_window(times, 1.0) <= 5  # the limiter's margin (0.1 s) absorbs clock-read delays
    assert max(times) - min(times) >= 3.0  # 20 at 5 per second: three full windows


# --- OpenAI's headers, the ordered queue (issue 18) -------------------------------------------

from core.ratelimit import announced, parse_duration  # noqa: E402


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("350ms", 0.35)],
)
def test_parse_duration_reads_openai_reset_values(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1x", "-1s", "5s garbage", None, "nan"])
def test_parse_duration_refuses_what_is_not_a_duration(text):
    assert parse_duration(text) is None


def test_openai_headers_give_the_limit_the_remaining_count_and_the_window_from_the_reset():
    said = announced(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "30",
            "x-ratelimit-reset-requests": "5s",  # half the budget back in 5 s: a 10 s window
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149000",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert (said.limit, said.remaining, said.interval_ms, said.pause_s) == (60, 30, 10_000, 0.0)


def test_openai_headers_pause_everyone_until_the_reset_when_nothing_remains():
    requests_out = announced(
        {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    )
    assert requests_out.pause_s == pytest.approx(2.0)
    tokens_low = announced(
        {
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "900",
            "x-ratelimit-reset-tokens": "1m30s",
        },
        tokens_reserve=1000,
    )
    assert tokens_low.pause_s == pytest.approx(90.0)
    enough = announced({"x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "1s"}, tokens_reserve=1000)
    assert enough.pause_s == 0.0


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_limiter_adopts_openai_headers(redis_client, kind):
    limiter = dict(zip(["local", "redis"], _limiters(redis_client, limit=100, interval_s=60), strict=True))[kind]
    limiter.update_from_headers(
        {"x-ratelimit-limit-requests": "4", "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "1s"}
    )
    # 4 per 2 s (1 s to bring back the 2 spent), of which the server says 2 are spent already.
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == 0.0
    assert 1.5 < limiter.try_acquire() <= 2.2
    assert (limiter.capacity, limiter.interval_s) == (4, 2.0)

    limiter.update_from_headers(
        {"X-RateLimit-Limit-Requests": "4", "X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "7s"}
    )
    assert 6.5 < limiter.try_acquire() <= 7.0  # paused until the announced reset


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_ordered_waiters_are_served_lowest_priority_first(redis_client, kind):
    limiter = dict(zip(["local", "redis"], _limiters(redis_client, limit=1, interval_s=0.3), strict=True))[kind]
    limiter.pause(0.5)  # no free slot until every waiter has queued
    granted: list[float] = []
    lock = threading.Lock()

    def wait(priority: float) -> None:
        limiter.acquire(priority=priority, deadline=Deadline(30))
        with lock:
            granted.append(priority)

    threads = [threading.Thread(target=wait, args=(p,)) for p in (5.0, 3.0, 9.0, 1.0, 7.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert granted == [1.0, 3.0, 5.0, 7.0, 9.0]


def test_a_probing_limiter_sends_one_request_until_a_first_answer(redis_client):
    limiter = RedisWindowLimiter(
        client=redis_client, key=f"test:{uuid.uuid4().hex}", limit=10, interval_s=60, margin_s=MARGIN_S, probe=True
    )
    assert limiter.try_acquire("a", 1.0) == 0.0
    assert 0 < limiter.try_acquire("b", 2.0) <= 0.2  # held back, re-checked soon
    limiter.update_from_headers({})  # the first answer came back (announcing nothing)
    assert limiter.try_acquire("b", 2.0) == 0.0


_ORDERED_CHILD = """
import json, sys, threading, time
import redis
from core.http import Deadline
from core.ratelimit import RedisWindowLimiter
url, key, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
priorities = [float(p) for p in sys.argv[4].split(",")]
client = redis.Redis.from_url(url)
limiter = RedisWindowLimiter(client=client, key=key, limit=2, interval_s=0.5, margin_s=0.05)
got, lock = [], threading.Lock()
def wait(priority):
    limiter.acquire(priority=priority, deadline=Deadline(60))
    seconds, micros = client.time()
    with lock:
        got.append((seconds + micros / 1e6, priority))
while time.time() < start_at:
    time.sleep(0.005)
threads = [threading.Thread(target=wait, args=(p,)) for p in priorities]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(got))
"""


def test_two_processes_share_one_ordered_queue_oldest_first(redis_client):
    """Two processes' waiters interleave in one queue: slots go lowest priority first across both."""
    key = f"test:{uuid.uuid4().hex}"
    start_at = time.time() + 3.0
    halves = ["1,4,5,8,9,12", "2,3,6,7,10,11"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ORDERED_CHILD, REDIS_URL, key, str(start_at), half],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        for half in halves
    ]
    time.sleep(max(0.0, start_at - 0.3 - time.time()))
    # No free slot until both processes have queued all their waiters.
    RedisWindowLimiter(client=redis_client, key=key, limit=2, interval_s=0.5, margin_s=0.05).pause(1.5)
    grants: list[tuple[float, float]] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0
        grants += [tuple(g) for g in json.loads(out)]
    assert len(grants) == 12
    times = [t for t, _ in grants]
    assert max_in_any_window(times, 0.5) <= 2  # one limit for both processes
    # Slots free two at a time: within a pair the order is a race, between pairs it is by priority.
    by_time = [p for _, p in sorted(grants)]
    pairs = [sorted(by_time[i : i + 2]) for i in range(0, 12, 2)]
    assert pairs == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]]
