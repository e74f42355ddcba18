"""Benchmark: N inbound messages through a real Celery worker against the fake Responses API.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/leadline \
    CELERY_BROKER_URL=redis://127.0.0.1:6379/4 \
    .venv/bin/python bench/drafts/run.py [--messages 200] [--concurrency 4] \
        [--latency 1] [--incomplete-ratio 0.2] [--error-ratio 0.1] [--timeout 600]

Creates its own throwaway database (``bench_drafts_<name>``), migrates it,
starts the fake (1 s latency, 20 % of first draft attempts incomplete for
``max_output_tokens``, 10 % of all requests 500) and a worker
(``core.testing.processes.celery_worker``), enqueues ``classify_and_draft``
for every message, waits until every draft is final, prints the figures and
drops the database. Traffic goes only to 127.0.0.1.

Two overhead figures per draft, both from ``Draft.usage["timing"]`` (written by
the worker, see docs/drafts.md):

- primary: ``total_ms - llm_ms - backoff_ms``. ``total_ms`` runs from the
  worker's ``task_prerun`` signal to just before the draft's final write;
  ``llm_ms`` is the wall time spent inside the SDK's ``responses.create`` calls,
  measured client-side around each HTTP attempt (classification and drafting,
  failed attempts included): the time the task is blocked on the provider.
  ``backoff_ms`` are the retry sleeps the provider's 500s forced.
- strict: ``total_ms - server_ms - backoff_ms``, with ``server_ms`` the fake's
  self-reported processing time (``openai-processing-ms``). This also charges
  us for the SDK's HTTP round trip (request serialisation, loopback TCP, the
  fake's own HTTP stack and JSON encoding outside its timer).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1vbmx5LWZpZWxkLWVuY3J5cHRpb24ta2V5ISE=")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-real-key")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--incomplete-ratio", type=float, default=0.2)
    parser.add_argument("--error-ratio", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting after this many seconds")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("set DATABASE_URL to a PostgreSQL server (the bench creates its own database there)", file=sys.stderr)
        return 2
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        print("set CELERY_BROKER_URL to a Redis database (e.g. redis://127.0.0.1:6379/4)", file=sys.stderr)
        return 2

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    base_name = settings.DATABASES["default"]["NAME"]
    settings.DATABASES["default"]["TEST"]["NAME"] = f"bench_drafts_{base_name}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        return _run(args)
    finally:
        connection.creation.destroy_test_db(base_name, verbosity=0)


def _run(args: argparse.Namespace) -> int:
    import redis
    from django.conf import settings
    from django.utils import timezone

    from core.testing.fake_openai import fake_openai_server
    from core.testing.processes import celery_worker, live_database_url
    from drafts.models import Draft, DraftStatus
    from drafts.tasks import classify_and_draft
    from leads.models import Lead
    from messaging.models import Channel, Direction, Message
    from workspaces.services import workspace_configure

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # the bench's own Redis db: no stale tasks
    workspace, _ = workspace_configure(
        slug="bench-drafts",
        changes={"name": "Bench", "timezone": "America/New_York", "persona_name": "Sam", "company_name": "Acme"},
    )
    bodies = [
        "Yes, I'm interested. What does it cost for a {n}-person team?",
        "Sounds good, interested! Can we book a meeting next Tuesday? (ref {n})",
        "Could you call me tomorrow about this? Ref {n}",
        "Interested - send me more details please, order {n}",
    ]
    message_ids = []
    for n in range(args.messages):
        channel = Channel.SMS if n % 2 == 0 else Channel.EMAIL
        lead = Lead.objects.create(
            workspace=workspace, first_name=f"Lead{n}", email=f"lead{n}@example.com", ghl_contact_id=f"c{n}"
        )
        msg = Message.objects.create(
            workspace=workspace,
            lead=lead,
            channel=channel,
            direction=Direction.INBOUND,
            body=bodies[n % len(bodies)].format(n=n),
            subject="Re: roofing quote" if channel == Channel.EMAIL else "",
            sent_at=timezone.now(),
            ghl_message_id=f"m{n}" if channel == Channel.SMS else "",
            emailbison_reply_id=f"r{n}" if channel == Channel.EMAIL else "",
        )
        message_ids.append(msg.pk)

    with fake_openai_server(
        latency_s=args.latency,
        incomplete_ratio=args.incomplete_ratio,
        error_ratio=args.error_ratio,
        seed=args.seed,
    ) as fake:
        env = {
            "DATABASE_URL": live_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-bench-not-a-real-key",
            # A production-like worker: DEBUG off (no query log, cached templates).
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789abcdef",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        }
        log_path = Path(tempfile.gettempdir()) / f"bench-drafts-worker-{os.getpid()}.log"
        with celery_worker(env=env, concurrency=args.concurrency, log_path=log_path):
            started = time.monotonic()
            for message_id in message_ids:
                classify_and_draft.delay(message_id)
            final = [s for s in DraftStatus.values if s not in (DraftStatus.PENDING, DraftStatus.GENERATING)]
            while time.monotonic() - started < args.timeout:
                done = Draft.objects.filter(workspace=workspace, status__in=final).count()
                classified_without_draft = (
                    Message.objects.filter(workspace=workspace, classified_at__isnull=False)
                    .exclude(drafts__isnull=False)
                    .count()
                )
                if done + classified_without_draft >= len(message_ids):
                    break
                time.sleep(1.0)
            wall = time.monotonic() - started
        records = list(fake.records)

    drafts = list(Draft.objects.filter(workspace=workspace))
    by_status: dict[str, int] = {}
    for d in drafts:
        by_status[d.status] = by_status.get(d.status, 0) + 1
    ready = by_status.get(DraftStatus.READY, 0)
    open_left = by_status.get(DraftStatus.PENDING, 0) + by_status.get(DraftStatus.GENERATING, 0)
    no_draft = len(message_ids) - len(drafts)
    primary, strict, totals, llm_times, server_times, backoffs, dispatch = [], [], [], [], [], [], []
    for d in drafts:
        timing = (d.usage or {}).get("timing")
        if not timing:
            continue
        primary.append(timing["total_ms"] - timing["llm_ms"] - timing["backoff_ms"])
        strict.append(timing["total_ms"] - timing["server_ms"] - timing["backoff_ms"])
        totals.append(timing["total_ms"])
        llm_times.append(timing["llm_ms"])
        server_times.append(timing["server_ms"])
        backoffs.append(timing["backoff_ms"])
        dispatch.append(timing.get("dispatch_ms", 0.0))
    failures: dict[str, int] = {}
    for d in drafts:
        if d.failure_reason:
            failures[d.failure_reason] = failures.get(d.failure_reason, 0) + 1
    behaviours: dict[str, int] = {}
    for r in records:
        behaviours[r.behaviour] = behaviours.get(r.behaviour, 0) + 1

    print(f"messages: {len(message_ids)}  worker concurrency: {args.concurrency}  wall: {wall:.1f} s")
    print(
        f"fake: latency {args.latency} s, incomplete first attempts {args.incomplete_ratio:.0%}, "
        f"500s {args.error_ratio:.0%}; requests: {len(records)} {behaviours}"
    )
    print(f"drafts by status: {by_status}  messages without a draft: {no_draft}  failure reasons: {failures}")
    print(f"ready: {ready}/{len(message_ids)} = {100 * ready / max(1, len(message_ids)):.1f} %")
    print(f"left pending/generating: {open_left}")
    print(
        f"per draft (medians, ms): total {statistics.median(totals):.1f} (task_prerun to final write), "
        f"in responses.create {statistics.median(llm_times):.1f}, "
        f"server-reported {statistics.median(server_times):.1f}, "
        f"backoff sleeps {statistics.median(backoffs):.1f} (mean {statistics.fmean(backoffs):.1f}), "
        f"task_prerun to our code {statistics.median(dispatch):.2f}"
    )
    print(
        f"overhead per draft, primary (total - time inside responses.create - backoff): "
        f"median {statistics.median(primary):.1f} ms, p95 {_pct(primary, 0.95):.1f} ms, max {max(primary):.1f} ms"
    )
    print(
        f"overhead per draft, strict (total - server-reported time - backoff): "
        f"median {statistics.median(strict):.1f} ms, p95 {_pct(strict, 0.95):.1f} ms, max {max(strict):.1f} ms"
    )
    ok = ready / max(1, len(message_ids)) >= 0.995 and open_left == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
