"""GHL sync benchmark: one workspace's sync_all under GHL's burst limit, two worker processes sharing it.

Scenario: 80 leads with a GHL contact (5 messages each) plus 3 email-only leads
(upserted to GHL and linked), against the local fake GHL (``core/testing/fake_ghl.py``,
in this process) that enforces a sliding-window burst limit and announces it in
``X-RateLimit-*`` headers. One SyncRun split in two shards, each executed by its
own worker process (``sync_run_execute``, ``--concurrency`` threads each); both
share the location's limit through Redis (``core/ratelimit.py``). Both processes
start at the same instant (after their Django start-up, which is not timed).

Runs at 100 requests / 10 s (GHL's documented burst) and at a tight 20 / 2 s.
Reports requests, 429s, wall, bound and ratio. The bound is the least time the
announced limit allows for the requests made: the last of R requests at N per
T seconds cannot leave before ``((R - 1) // N) * T`` seconds.
Pass: wall <= 1.15 x bound, 429s <= 1 % of requests, all 83 leads synced (400 messages).

Usage (from the repository root)::

    .venv/bin/python bench/sync/run.py [--concurrency 3] [--scenarios 100/10,20/2]

Environment: ``BENCH_DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/leadline_bench_sync``; created and migrated
if missing) and ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/8``; the
bench flushes that Redis database).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/leadline_bench_sync"
DEFAULT_REDIS = "redis://127.0.0.1:6379/8"
FERNET_KEY = "YmVuY2gtb25seS1maWVsZC1lbmNyeXB0aW9uLWtleSE="
GHL_TOKEN = "pit-benchsyn-0000-0000-0000-000000000000"
SLUG = "bench-sync"
LEADS_WITH_CONTACT = 80
MESSAGES_PER_LEAD = 5
EMAIL_ONLY_LEADS = 3


def _env(db_url: str, redis_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DATABASE_URL"] = db_url
    os.environ["CELERY_BROKER_URL"] = redis_url
    os.environ["RATE_LIMIT_REDIS_URL"] = redis_url
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", FERNET_KEY)
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def _prepare_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _contact_id(i: int) -> str:
    return f"benchcontact{i:08d}"


def _seed(fake, *, location: str) -> int:
    """The workspace, its leads and the fake GHL's contacts; returns the workspace id."""
    from ghl.models import SyncRun
    from leads.models import Lead
    from messaging.models import Message
    from workspaces.models import IntegrationError
    from workspaces.services import workspace_configure

    ws, _ = workspace_configure(slug=SLUG, changes={"name": "Bench sync"})
    SyncRun.objects.filter(workspace=ws).delete()
    Message.objects.filter(workspace=ws).delete()
    Lead.objects.filter(workspace=ws).delete()
    IntegrationError.objects.filter(workspace=ws).delete()
    ws, _ = workspace_configure(slug=SLUG, changes={"ghl_location_id": location, "ghl_token": GHL_TOKEN})
    now = dt.datetime.now(dt.UTC)
    for i in range(LEADS_WITH_CONTACT):
        messages = [
            {
                "id": f"benchmsg{i:06d}{k:06d}",
                "direction": "inbound" if k % 2 == 0 else "outbound",
                "messageType": "TYPE_SMS",
                "body": f"bench message {k}",
                "dateAdded": (now - dt.timedelta(days=30, minutes=10 * (MESSAGES_PER_LEAD - k))).isoformat(),
            }
            for k in range(MESSAGES_PER_LEAD)
        ]
        fake.add_contact(_contact_id(i), firstName=f"Lead{i}", phone=f"+1415555{i:04d}", messages=messages)
        Lead.objects.create(workspace=ws, ghl_contact_id=_contact_id(i))
    for i in range(EMAIL_ONLY_LEADS):
        Lead.objects.create(workspace=ws, emailbison_lead_id=f"eb{i}", email=f"email.only{i}@example.com")
    return ws.pk


def _scenario(*, limit: int, interval_s: float, concurrency: int, redis_url: str, db_url: str) -> dict:
    import redis

    from core.testing.fake_ghl import fake_ghl_server
    from ghl.models import SyncRun
    from ghl.services import sync_run_start
    from messaging.models import Message
    from workspaces.models import Workspace

    redis.Redis.from_url(redis_url).flushdb()  # a fresh shared limiter
    location = f"LOCBENCH{limit}x{int(interval_s * 1000)}"
    with fake_ghl_server(limit=limit, interval_s=interval_s, location_id=location) as fake:
        workspace_id = _seed(fake, location=location)
        run = sync_run_start(workspace=Workspace.objects.get(pk=workspace_id), trigger="bench", shards=2)
        start_at = time.time() + 6.0  # after both workers' Django start-up
        env = {
            **os.environ,
            "GHL_API_BASE_URL": fake.base_url,
            "SYNC_ALL_CONCURRENCY": str(concurrency),
        }
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(run.pk), str(shard), str(start_at)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for shard in range(2)
        ]
        ends = []
        for proc in workers:
            out, _ = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise SystemExit(f"worker failed ({proc.returncode})")
            ends.append(json.loads(out.strip().splitlines()[-1])["end"])
        requests = len(fake.requests)
        rate_limited = fake.rate_limited
        first_arrival = min(r.at for r in fake.requests)
    run = SyncRun.objects.get(pk=run.pk)
    wall = max(ends) - start_at
    bound = ((requests - 1) // limit) * interval_s
    return {
        "limit": f"{limit}/{interval_s:g}s",
        "requests": requests,
        "rate_limited": rate_limited,
        "rate_limited_pct": 100.0 * rate_limited / requests,
        "wall_s": wall,
        "first_request_after_start_s": first_arrival - start_at,
        "bound_s": bound,
        "ratio": wall / bound if bound else float("nan"),
        "status": run.status,
        "leads_total": run.leads_total,
        "leads_ok": run.leads_ok,
        "leads_failed": run.leads_failed,
        "leads_skipped": run.leads_skipped,
        "messages": Message.objects.filter(workspace_id=workspace_id).count(),
        "run_requests": run.requests,
        "run_rate_limited": run.rate_limited,
    }


def _worker(run_id: int, shard: int, start_at: float) -> None:
    import django

    django.setup()
    from ghl.services import sync_run_execute

    while time.time() < start_at:
        time.sleep(0.002)
    sync_run_execute(run_id=run_id, shard=shard)
    print(json.dumps({"end": time.time()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=3, help="threads per worker process")
    parser.add_argument("--scenarios", default="100/10,20/2", help="limit/interval_s, comma separated")
    parser.add_argument("--worker", nargs=3, metavar=("RUN_ID", "SHARD", "START_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    _env(db_url, redis_url)
    if args.worker:
        _worker(int(args.worker[0]), int(args.worker[1]), float(args.worker[2]))
        return

    _prepare_database(db_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, stdout=io.StringIO())
    results = []
    ok = True
    for spec in args.scenarios.split(","):
        limit, interval = spec.split("/")
        result = _scenario(
            limit=int(limit),
            interval_s=float(interval),
            concurrency=args.concurrency,
            redis_url=redis_url,
            db_url=db_url,
        )
        results.append(result)
        passed = (
            result["ratio"] <= 1.15
            and result["rate_limited_pct"] <= 1.0
            and result["leads_ok"] == LEADS_WITH_CONTACT + EMAIL_ONLY_LEADS
            and result["messages"] == LEADS_WITH_CONTACT * MESSAGES_PER_LEAD
        )
        ok = ok and passed
        print(
            f"limit {result['limit']:>8}: requests {result['requests']}, 429s {result['rate_limited']}"
            f" ({result['rate_limited_pct']:.2f} %), wall {result['wall_s']:.2f} s, bound {result['bound_s']:.1f} s,"
            f" ratio {result['ratio']:.3f}; leads ok {result['leads_ok']}/{result['leads_total']},"
            f" failed {result['leads_failed']}, messages {result['messages']}; run {result['status']}"
            f" -> {'PASS' if passed else 'FAIL'}",
            flush=True,
        )
    print(json.dumps(results, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
