"""Availability refresh benchmark: one beat cycle over 50 workspaces with misbehaving providers.

Scenario (default sizes): 50 active workspaces against local fake providers on
127.0.0.1 (``availability/tests/fake_providers.py``):

- 40 healthy: GHL widget URLs with a calendar id, GHL ``/widget/bookings/<slug>``
  pages resolved from their embedded data, GHL calendar ids via the API,
  Calendly booking links and Calendly event type URIs;
- 5 whose booking pages hang forever: 3 GHL widget calendars whose public
  free-slots endpoint never answers (auto-book calendar id configured as
  fallback) and 2 white-label slug pages that never answer (no fallback);
- 5 whose APIs answer 500 (3 GHL calendar ids, 2 Calendly event types), each
  with last-good slots from an earlier refresh.

Modes:
- ``celery`` (the production path): a real Celery worker on the
  ``availability`` queue (``--queues=availability --pool=threads``,
  ``--concurrency`` threads, as in the Procfile) on Redis runs the beat task
  ``availability.tasks.availability_refresh_dispatch``, which fans out one
  refresh task per due workspace. The cycle ends when every workspace's
  snapshot has been saved.
- ``command``: ``manage.py refresh_availability`` (synchronous, threads in-process).

Pass criterion: cycle time <= AVAILABILITY_WORKSPACE_DEADLINE_S x 1.2, all 40
healthy workspaces fresh, the 10 misbehaving ones surfaced as IntegrationErrors;
in celery mode a second dispatch 1 s into the cycle sends no workspace again.

Usage (from the repository root)::

    .venv/bin/python bench/availability/run.py [--mode both|celery|command] [--concurrency 16]
        [--fetch-timeout 8] [--deadline 20]

Environment: ``BENCH_DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/leadline_bench_availability``; created and
migrated if missing) and ``BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/12``; the bench flushes that Redis database).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from availability.tests.fake_providers import FakeProviders  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/leadline_bench_availability"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
FERNET_KEY = "YmVuY2gtb25seS1maWVsZC1lbmNyeXB0aW9uLWtleSE="
GHL_TOKEN = "pit-bench000-0000-0000-0000-000000000000"
CALENDLY_TOKEN = "calendly-bench-token-0000000000"
PREFIX = "bench-av-"


def _cal_id(n: int, kind: str) -> str:
    return f"{kind}{n:04d}".ljust(20, "x")[:20]


def _prepare_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _scenario(fake: FakeProviders, *, workspaces: int, hanging: int, failing: int) -> list[dict]:
    """Workspace configs (and fake behaviours) for the run. Returns [{slug, kind, changes, seed_last_good}]."""
    plans: list[dict] = []
    healthy = workspaces - hanging - failing
    cal_base = f"{fake.base}/calendly/event_types"
    for n in range(healthy):
        slug = f"{PREFIX}ok-{n:02d}"
        variant = n % 5
        if variant == 0:  # widget URL with id, calendar id configured too
            cid = _cal_id(n, "wid")
            fake.backend[cid] = "ok"
            fake.api[cid] = "ok"
            changes = {
                "booking_provider": "ghl",
                "ghl_booking_url": f"https://book.bench.test/widget/booking/{cid}",
                "ghl_calendar_id": cid,
                "ghl_token": GHL_TOKEN,
            }
        elif variant == 1:  # white-label slug page, resolved from the page's embedded data
            cid = _cal_id(n, "pag")
            fake.pages[f"ok-page-{n}"] = ("ok", cid)
            fake.backend[cid] = "ok"
            changes = {"booking_provider": "ghl", "ghl_booking_url": f"{fake.base}/pages/widget/bookings/ok-page-{n}"}
        elif variant == 2:  # calendar id through the API only
            cid = _cal_id(n, "api")
            fake.api[cid] = "ok"
            changes = {"booking_provider": "ghl", "ghl_calendar_id": cid, "ghl_token": GHL_TOKEN}
        elif variant == 3:  # Calendly booking link
            fake.calendly[f"{cal_base}/link{n}"] = "ok"
            changes = {
                "booking_provider": "calendly",
                "calendly_token": CALENDLY_TOKEN,
                "calendly_booking_url": f"https://calendly.com/bench/link{n}",
            }
        else:  # Calendly event type URI
            fake.calendly[f"{cal_base}/uri{n}"] = "ok"
            changes = {
                "booking_provider": "calendly",
                "calendly_token": CALENDLY_TOKEN,
                "calendly_event_type_uri": f"{cal_base}/uri{n}",
            }
        plans.append({"slug": slug, "kind": "healthy", "changes": changes, "seed": False})
    for n in range(hanging):
        slug = f"{PREFIX}hang-{n:02d}"
        if n < (hanging * 3 + 4) // 5:  # most have an auto-book calendar to fall back to
            cid = _cal_id(n, "hng")
            fake.backend[cid] = "hang"
            fake.api[cid] = "ok"
            changes = {
                "booking_provider": "ghl",
                "ghl_booking_url": f"https://book.bench.test/widget/booking/{cid}",
                "ghl_calendar_id": cid,
                "ghl_token": GHL_TOKEN,
            }
        else:
            fake.pages[f"stuck-{n}"] = ("hang", _cal_id(n, "stk"))
            changes = {"booking_provider": "ghl", "ghl_booking_url": f"{fake.base}/pages/widget/bookings/stuck-{n}"}
        plans.append({"slug": slug, "kind": "hanging", "changes": changes, "seed": False})
    for n in range(failing):
        slug = f"{PREFIX}fail-{n:02d}"
        if n < (failing * 3 + 4) // 5:
            cid = _cal_id(n, "err")
            fake.api[cid] = "500"
            changes = {"booking_provider": "ghl", "ghl_calendar_id": cid, "ghl_token": GHL_TOKEN}
        else:
            fake.calendly[f"{cal_base}/err{n}"] = "500"
            changes = {
                "booking_provider": "calendly",
                "calendly_token": CALENDLY_TOKEN,
                "calendly_event_type_uri": f"{cal_base}/err{n}",
            }
        plans.append({"slug": slug, "kind": "failing", "changes": changes, "seed": True})
    return plans


def _install(plans: list[dict]) -> dict[str, int]:
    from django.utils import timezone

    from availability.models import AvailabilitySnapshot
    from workspaces.models import Workspace
    from workspaces.services import workspace_configure

    Workspace.objects.filter(slug__startswith=PREFIX).delete()
    ids = {}
    now = timezone.now()
    for plan in plans:
        ws, _ = workspace_configure(slug=plan["slug"], changes={"timezone": "America/New_York", **plan["changes"]})
        ids[plan["slug"]] = ws.pk
        if plan["seed"]:
            slots = [(now + dt.timedelta(days=d, hours=3)).isoformat() for d in range(1, 6)]
            AvailabilitySnapshot.objects.create(
                workspace=ws,
                provider=ws.booking_provider,
                slots_utc=slots,
                fetched_at=now - dt.timedelta(minutes=30),
                stale_at=now + dt.timedelta(minutes=30),
            )
    return ids


def _report(*, mode: str, plans: list[dict], cycle_s: float, limit_s: float, started) -> bool:
    from availability.models import AvailabilitySnapshot
    from workspaces.models import IntegrationError

    kinds = {p["slug"]: p["kind"] for p in plans}
    snaps = {
        s.workspace.slug: s
        for s in AvailabilitySnapshot.objects.select_related("workspace").filter(workspace__slug__startswith=PREFIX)
    }
    attempted = [s for s in snaps.values() if s.last_attempt_at and s.last_attempt_at >= started]
    fresh = [slug for slug, s in snaps.items() if s.fetched_at and s.fetched_at >= started]
    healthy_fresh = [slug for slug in fresh if kinds[slug] == "healthy"]
    errors = IntegrationError.objects.filter(
        workspace__slug__startswith=PREFIX, source="availability", resolved_at__isnull=True
    ).values_list("workspace__slug", "code")
    error_ws = {slug for slug, _ in errors}
    codes: dict[str, int] = {}
    for _, code in errors:
        codes[code] = codes.get(code, 0) + 1
    fallbacks: dict[str, int] = {}
    for s in snaps.values():
        if s.fallback_used:
            fallbacks[s.fallback_used] = fallbacks.get(s.fallback_used, 0) + 1
    kept = sum(1 for slug, s in snaps.items() if kinds[slug] == "failing" and s.slot_count > 0)
    n_healthy = sum(1 for k in kinds.values() if k == "healthy")
    n_bad = len(kinds) - n_healthy
    ok = cycle_s <= limit_s and len(healthy_fresh) == n_healthy and len(error_ws) == n_bad
    print(f"[{mode}] cycle time            : {cycle_s:.2f}s (limit {limit_s:.1f}s = deadline x 1.2)")
    print(f"[{mode}] workspaces attempted  : {len(attempted)}/{len(kinds)}")
    print(f"[{mode}] healthy fresh         : {len(healthy_fresh)}/{n_healthy}  (fresh overall: {len(fresh)})")
    print(f"[{mode}] errors surfaced       : {len(error_ws)} workspaces {dict(sorted(codes.items()))}")
    print(f"[{mode}] fallbacks used        : {dict(sorted(fallbacks.items()))}")
    print(f"[{mode}] failing kept last-good: {kept}/{sum(1 for k in kinds.values() if k == 'failing')}")
    print(f"[{mode}] {'PASS' if ok else 'FAIL'}")
    return ok


def run_celery(*, plans, env, concurrency: int, limit_s: float, redis_url: str) -> bool:
    import redis
    from django.utils import timezone

    from config.celery_app import app
    from core.testing.processes import celery_worker
    from workspaces.models import Workspace

    redis.Redis.from_url(redis_url).flushdb()
    _install(plans)
    expected = Workspace.objects.filter(slug__startswith=PREFIX).count()
    log = Path("/tmp") / f"leadline-bench-availability-worker-{os.getpid()}.log"
    with celery_worker(
        env=env, pool="threads", concurrency=concurrency, queues="availability", log_path=log, ready_timeout=60
    ):
        started = timezone.now()
        t0 = time.monotonic()
        app.send_task("availability.tasks.availability_refresh_dispatch")
        from availability.models import AvailabilitySnapshot
        from availability.tasks import availability_refresh_dispatch

        # A second beat mid-cycle must not send any workspace again: each is queued, running or done.
        time.sleep(1.0)
        resent = availability_refresh_dispatch()

        limit = time.monotonic() + max(60.0, limit_s * 3)
        done = 0
        while time.monotonic() < limit:
            done = AvailabilitySnapshot.objects.filter(
                workspace__slug__startswith=PREFIX, last_attempt_at__gte=started
            ).count()
            if done >= expected:
                break
            time.sleep(0.05)
        cycle = time.monotonic() - t0
    print(f"[celery] worker: --queues=availability --pool=threads --concurrency={concurrency}; log {log}")
    print(f"[celery] second beat mid-cycle  : {resent} workspace(s) sent again (want 0)")
    ok = _report(mode="celery", plans=plans, cycle_s=cycle, limit_s=limit_s, started=started)
    return ok and resent == 0


def run_command(*, plans, concurrency: int, limit_s: float) -> bool:
    from django.core.management import call_command
    from django.utils import timezone

    _install(plans)
    out = io.StringIO()
    started = timezone.now()
    t0 = time.monotonic()
    call_command("refresh_availability", f"--concurrency={concurrency}", stdout=out)
    cycle = time.monotonic() - t0
    print(f"[command] {out.getvalue().strip().splitlines()[-1]}")
    return _report(mode="command", plans=plans, cycle_s=cycle, limit_s=limit_s, started=started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["both", "celery", "command"], default="both")
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--hanging", type=int, default=5)
    parser.add_argument("--failing", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fetch-timeout", type=float, default=8.0, help="AVAILABILITY_FETCH_TIMEOUT_S")
    parser.add_argument("--deadline", type=float, default=20.0, help="AVAILABILITY_WORKSPACE_DEADLINE_S")
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    _prepare_database(database_url)
    with FakeProviders() as fake:
        env = {
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": redis_url,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
            "FIELD_ENCRYPTION_KEY": FERNET_KEY,
            "LOG_LEVEL": "WARNING",
            "AVAILABILITY_FETCH_TIMEOUT_S": str(args.fetch_timeout),
            "AVAILABILITY_WORKSPACE_DEADLINE_S": str(args.deadline),
            # The fake booking pages listen on 127.0.0.1 (the outbound guard refuses it otherwise).
            "LEADLINE_OUTBOUND_ALLOWLIST": "127.0.0.1",
            **fake.urls,
        }
        os.environ.update(env)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", "--noinput", verbosity=0)
        plans = _scenario(fake, workspaces=args.workspaces, hanging=args.hanging, failing=args.failing)
        limit_s = args.deadline * 1.2
        print(
            f"availability bench: {args.workspaces} workspaces ({args.hanging} hanging booking pages, "
            f"{args.failing} APIs answering 500), fetch timeout {args.fetch_timeout}s, "
            f"workspace deadline {args.deadline}s, concurrency {args.concurrency}"
        )
        results = []
        if args.mode in ("both", "celery"):
            results.append(
                run_celery(plans=plans, env=env, concurrency=args.concurrency, limit_s=limit_s, redis_url=redis_url)
            )
        if args.mode in ("both", "command"):
            results.append(run_command(plans=plans, concurrency=args.concurrency, limit_s=limit_s))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
