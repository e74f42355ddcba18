"""Benchmark: the inbox page with 500 waiting drafts, server time and SQL queries.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/leadline \
        .venv/bin/python bench/inbox/run.py [--drafts 500] [--runs 20]

Creates its own throwaway database (``bench_inbox_<name>``) with 500 ready drafts over two
workspaces (half SMS, half email with quoted history and offered slots), then renders
``/admin/inbox/`` ``--runs`` times in-process as a superuser (Django's test client: the whole
view, template included, no network) and prints the median / p95 / max render time and the
number of SQL queries of one render.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.common import django_setup, percentile, require_env, throwaway_database


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drafts", type=int, default=500)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    problem = require_env(redis=False)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    django_setup()
    with throwaway_database("bench_inbox"):
        return _run(args)


def _run(args) -> int:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from drafts.models import Draft
    from leads.models import Lead
    from messaging.models import Message
    from workspaces.services import workspace_configure

    workspaces = [
        workspace_configure(slug=slug, changes={"name": slug, "timezone": "America/New_York"})[0]
        for slug in ("bench-a", "bench-b")
    ]
    now = timezone.now()
    for n in range(args.drafts):
        workspace = workspaces[n % 2]
        email = n % 2 == 1
        lead = Lead.objects.create(workspace=workspace, first_name=f"Lead{n}", email=f"l{n}@example.com")
        body = f"Sounds good, what times work? (ref {n})"
        if email:
            body += "\n\nOn Mon, Jun 1, Sam <sam@acme.test> wrote:\n> our first email\n> with two lines"
        message = Message.objects.create(
            workspace=workspace,
            lead=lead,
            channel="email" if email else "sms",
            direction="inbound",
            body=body,
            sent_at=now,
            sentiment="Interested",
        )
        Message.objects.filter(pk=message.pk).update(created_at=now - dt.timedelta(minutes=n))
        Draft.objects.create(
            workspace=workspace,
            lead=lead,
            message=message,
            channel=message.channel,
            status="ready",
            content=f"Hi Lead{n}, happy to help. Would Tuesday 10:00 or Wednesday 14:00 work?",
            subject="Re: roofs" if email else "",
            offered_slots=[{"label": "Tue Dec 1, 10:00 AM EST"}, {"label": "Wed Dec 2, 2:00 PM EST"}],
        )
    user = get_user_model().objects.create_superuser("bench", "b@bench.test", "bench-pass-123")
    client = Client()
    client.force_login(user)
    client.get("/admin/inbox/")  # warm: templates compiled, connection open
    timings = []
    for _ in range(args.runs):
        started = time.perf_counter()
        response = client.get("/admin/inbox/")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(client.get, "/admin/inbox/")
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_PROFILE", "cumulative")).print_stats(30)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/admin/inbox/")
    rows = response.content.decode().count('class="inbox-row')
    timings.sort()
    p95 = percentile(timings, 0.95)
    print(
        f"inbox with {rows} waiting drafts, {args.runs} renders: median {statistics.median(timings):.0f} ms, "
        f"p95 {p95:.0f} ms, max {timings[-1]:.0f} ms; {len(queries)} SQL queries per render"
    )
    return 0 if rows == args.drafts else 1


if __name__ == "__main__":
    sys.exit(main())
