"""Two real processes share one GHL location's limit through Redis, against a fake GHL that
enforces it (the limiter itself is tested in core/tests/test_ratelimit.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from core.testing.fake_ghl import fake_ghl_server
from core.testing.processes import BASE_DIR
from core.tests.test_ratelimit import REDIS_URL, max_in_any_window

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


@pytest.mark.usefixtures("redis_client")
def test_two_processes_share_one_locations_limit_through_redis():
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
