"""core.ratelimit: the sliding-window limiters, in process and shared through Redis
(two real processes sharing one GHL location's limit against a fake GHL that enforces it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import redis

from core.http import Deadline, ProviderRateLimited
from core.ratelimit import LocalWindowLimiter, RedisWindowLimiter
from core.testing.fake_ghl import fake_ghl_server
from core.testing.processes import BASE_DIR

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at TEST_REDIS_URL")
    return client


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


_CHILD = """
import json, os, sys, time
import django
django.setup()
from core.http import ProviderRateLimited
from ghl.client import GhlClient
ids = json.loads(sys.argv[1])
client = GhlClient(token="pit-test", location_id=os.environ["LOCATION"])
while time.time() < float(sys.argv[2]):
    time.sleep(0.005)
limited = 0
start = time.monotonic()
for contact_id in ids:
    try:
        client.contact_get(contact_id=contact_id, deadline=30)
    except ProviderRateLimited:
        limited += 1
print(json.dumps({"wall": time.monotonic() - start, "limited": limited}))
"""


def _run_two_processes(fake, *, shared: bool) -> list[dict]:
    location = f"LOC{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "GHL_API_BASE_URL": fake.base_url,
        "GHL_REQUESTS_PER_10S": "100",
        "GHL_MAX_429_RETRIES": "0",
        "RATE_LIMIT_REDIS_URL": REDIS_URL if shared else "",
        "LOCATION": location,
    }
    procs = []
    start_at = time.time() + 4.0  # both children start sending at the same instant, after start-up
    for worker in range(2):
        ids = [f"contact{worker}{i:014d}" for i in range(15)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(ids), str(start_at)],
                cwd=BASE_DIR,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_processes_share_one_locations_limit_through_redis(redis_client):
    with fake_ghl_server(limit=10, interval_s=1.0) as fake:
        for worker in range(2):
            for i in range(15):
                fake.add_contact(f"contact{worker}{i:014d}")
        results = _run_two_processes(fake, shared=True)
        arrivals = [r.at for r in fake.requests]
    assert len(arrivals) == 30
    assert fake.rate_limited == 0
    assert sum(r["limited"] for r in results) == 0
    assert max_in_any_window(arrivals, 1.0) <= 10
    # 30 requests at 10/s: the last batch cannot go out before two full windows have passed.
    # (How close to the limit a run gets is measured by bench/sync, not asserted here.)
    assert max(arrivals) - min(arrivals) >= 2.0


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
