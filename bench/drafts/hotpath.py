"""In-process profile of the per-draft path: queries per draft and our overhead, no worker, no latency.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/leadline \
    .venv/bin/python bench/drafts/hotpath.py [--messages 100] [--latency 0] \
        [--pyinstrument | --cprofile] [--show-queries]

Creates a throwaway database (``bench_drafts_profile_<name>``), N leads with
one inbound message each (half SMS, half email), runs
``message_classify_and_draft`` for each in this process against the in-process
fake (default 0 s latency, no incomplete answers, no 500s) with DEBUG off, and
prints:

- queries per message (``CaptureQueriesContext``, a separate pass so the
  query log does not inflate the timings) and the statements of one message;
- overhead per draft as the benchmark defines it (``usage.timing``): the
  task's wall minus the client-side time inside ``responses.create`` (primary)
  and minus the fake's self-reported time (strict).

``--pyinstrument`` / ``--cprofile`` profile the timing pass (install the
profiler into the venv yourself; it is not a project requirement).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1vbmx5LWZpZWxkLWVuY3J5cHRpb24ta2V5ISE=")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-real-key")
os.environ["DJANGO_DEBUG"] = "0"
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789abcdef")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--show-queries", action="store_true")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("set DATABASE_URL to a PostgreSQL server (the profile creates its own database there)", file=sys.stderr)
        return 2

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    base_name = settings.DATABASES["default"]["NAME"]
    settings.DATABASES["default"]["TEST"]["NAME"] = f"bench_drafts_profile_{base_name}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        return _run(args)
    finally:
        connection.close()
        connection.creation.destroy_test_db(base_name, verbosity=0)


def _messages(workspace, n: int, offset: int) -> list[int]:
    from django.utils import timezone

    from leads.models import Lead
    from messaging.models import Channel, Direction, Message

    ids = []
    for i in range(offset, offset + n):
        channel = Channel.SMS if i % 2 == 0 else Channel.EMAIL
        lead = Lead.objects.create(
            workspace=workspace, first_name=f"Lead{i}", email=f"lead{i}@example.com", ghl_contact_id=f"c{i}"
        )
        msg = Message.objects.create(
            workspace=workspace,
            lead=lead,
            channel=channel,
            direction=Direction.INBOUND,
            body=f"Yes, I'm interested. Can we book a meeting? (ref {i})",
            subject="Re: roofing quote" if channel == Channel.EMAIL else "",
            sent_at=timezone.now(),
            ghl_message_id=f"m{i}" if channel == Channel.SMS else "",
            emailbison_reply_id=f"r{i}" if channel == Channel.EMAIL else "",
        )
        ids.append(msg.pk)
    return ids


def _run(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from core.testing.fake_openai import fake_openai_server
    from drafts.models import Draft, DraftStatus
    from drafts.services.pipeline import message_classify_and_draft
    from workspaces.services import workspace_configure

    workspace, _ = workspace_configure(
        slug="bench-drafts-profile",
        changes={"name": "Bench", "timezone": "America/New_York", "persona_name": "Sam", "company_name": "Acme"},
    )
    with fake_openai_server(latency_s=args.latency, seed=1) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-bench-not-a-real-key"

        # Warm-up (imports, template compilation, connection pool), then the query-count pass.
        for mid in _messages(workspace, 4, 0):
            message_classify_and_draft(message_id=mid)
        counts, sample = [], None
        for mid in _messages(workspace, 10, 10_000):
            connection.close()  # like a fresh task: Celery closes stale connections around tasks
            with CaptureQueriesContext(connection) as ctx:
                message_classify_and_draft(message_id=mid)
            counts.append(len(ctx.captured_queries))
            sample = sample or [q["sql"] for q in ctx.captured_queries]

        ids = _messages(workspace, args.messages, 20_000)
        profiler = None
        if args.pyinstrument:
            import pyinstrument

            profiler = pyinstrument.Profiler(interval=0.0005)
            profiler.start()
        elif args.cprofile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        for mid in ids:
            message_classify_and_draft(message_id=mid)
        if args.pyinstrument:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        elif args.cprofile:
            import pstats

            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)

    drafts = list(Draft.objects.filter(message_id__in=ids))
    ready = sum(1 for d in drafts if d.status == DraftStatus.READY)
    timings = [d.usage["timing"] for d in drafts if d.usage.get("timing")]
    client = [t["total_ms"] - t["llm_ms"] - t["backoff_ms"] for t in timings]
    strict = [t["total_ms"] - t["server_ms"] - t["backoff_ms"] for t in timings]
    print(f"queries per message (classify + draft): {sorted(set(counts))} (median {statistics.median(counts)})")
    if args.show_queries and sample:
        for sql in sample:
            print("   ", sql[:160])
    print(f"drafts ready: {ready}/{len(ids)}; fake latency {args.latency} s")
    print(
        f"total per draft median {statistics.median(t['total_ms'] for t in timings):.2f} ms; "
        f"in responses.create median {statistics.median(t['llm_ms'] for t in timings):.2f} ms"
    )
    for label, values in (("client-side LLM time", client), ("server-reported time", strict)):
        print(f"overhead ({label}): median {statistics.median(values):.2f} ms, p95 {_pct(values, 0.95):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
