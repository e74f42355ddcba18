"""Benchmark: approve-and-send 100 ready drafts through the admin action, real worker, fake providers.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/leadline \
    CELERY_BROKER_URL=redis://127.0.0.1:6379/4 \
    .venv/bin/python bench/send/run.py [--drafts 100] [--batch 1] [--pool threads --concurrency 8] [--latency 0.05]

Creates its own throwaway database (``bench_send_<name>``), 100 ready drafts (half SMS through
GHL, half email replies through EmailBison, whose threads spread over 10 senders, one of them
dead: listed as connected, refusing every send), starts the fake providers on 127.0.0.1
(``core.testing.fake_outbox``) and a real Celery worker as the Procfile's ``sends`` line runs it
(``DRAFT_SEND_BATCH_SIZE`` from the environment reaches it), then clicks "Approve and send" in the
admin (``--batch`` drafts a click) as a logged-in operator, waits until every draft is final
and prints: drafts sent / failed, sends the providers accepted, refusals, drafts sent more than
once, and the time from each click to the provider receiving that draft (median, p90, max).
It flushes the Redis db it is given.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.common import django_setup, percentile, require_env, throwaway_database


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drafts", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1, help="drafts selected per admin click")
    # The Procfile's sends line: a threads pool of 8 on the sends queue (each task a batch of up
    # to DRAFT_SEND_BATCH_SIZE drafts whose provider calls run at once in threads of its own).
    parser.add_argument("--pool", default="threads", choices=["prefork", "threads"])
    parser.add_argument("--concurrency", type=int, default=8, help="threads (or processes) per worker")
    parser.add_argument("--workers", type=int, default=1, help="worker instances")
    parser.add_argument("--latency", type=float, default=0.05, help="the fake providers' answer time (s)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    problem = require_env(redis=True)
    if problem:
        print(problem, file=sys.stderr)
        return 2

    django_setup()
    with throwaway_database("bench_send"):
        return _run(args)


def _setup(args, fake):
    from django.contrib.auth import get_user_model

    from core.testing.clock import midday_zone
    from drafts.models import Draft, DraftStatus
    from leads.models import Lead
    from messaging.models import Channel, Message, WebhookEvent
    from workspaces.services import workspace_configure

    workspace, _ = workspace_configure(
        slug="bench-send",
        changes={
            "name": "Bench send",
            "timezone": "UTC",
            "ghl_location_id": "LOCBENCHSEND0001",
            "ghl_token": "pit-bench-send-token-0000",
            "emailbison_base_url": fake.emailbison_base_url,
            "emailbison_token": "eb-bench-send-token-0000",
        },
    )
    drafts = {}
    for n in range(args.drafts):
        sms = n % 2 == 0
        lead = Lead.objects.create(
            workspace=workspace,
            first_name=f"Lead{n}",
            email=f"lead{n}@example.com",
            phone_e164=f"+1415555{n:04d}",
            ghl_contact_id=f"benchcontact{n:08d}",
            timezone=midday_zone(),
        )
        inbound = Message.objects.create(
            workspace=workspace,
            lead=lead,
            channel=Channel.SMS if sms else Channel.EMAIL,
            direction="inbound",
            body="Interested, can we talk?",
            sent_at=django_now(),
            sentiment="Interested",
            ghl_message_id=f"in-{n}" if sms else "",
            emailbison_reply_id="" if sms else str(5000 + n),
        )
        if not sms:
            thread_sender = (n // 2) % fake.senders + 1
            WebhookEvent.objects.create(
                workspace=workspace,
                provider="emailbison",
                event_type="LEAD_REPLIED",
                message=inbound,
                status="processed",
                body={"data": {"reply": {"id": 5000 + n}, "sender_email": {"id": thread_sender}}},
            )
        draft = Draft.objects.create(
            workspace=workspace,
            lead=lead,
            message=inbound,
            channel=inbound.channel,
            status=DraftStatus.READY,
            content=f"Reply {n}: happy to talk, does Tuesday 10:00 work?",
            subject="" if sms else "Re: your note",
        )
        drafts[draft.content] = draft.pk
    user = get_user_model().objects.create_superuser("bench-operator", "op@bench.test", "bench-pass-123")
    return workspace, drafts, user


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_pids(workers) -> list[int]:
    """The worker processes and their pool's children (prefork)."""
    pids = []
    for worker in workers:
        pids.append(worker.pid)
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
    return pids


def django_now():
    from django.utils import timezone

    return timezone.now()


def _run(args) -> int:
    import redis
    from django.conf import settings
    from django.test import Client

    from core.testing.fake_outbox import fake_outbox_server
    from core.testing.processes import celery_worker, live_database_url
    from drafts.models import Draft, DraftStatus

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    with fake_outbox_server(senders=10, dead_senders={"3"}, latency_s=args.latency) as fake:
        workspace, drafts, user = _setup(args, fake)
        env = {
            "DATABASE_URL": live_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "GHL_API_BASE_URL": fake.ghl_base_url,
            "GHL_REQUESTS_PER_10S": "1000",
            # The worker runs as in production: no query log, no debug cursor.
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
        }
        if "DRAFT_SEND_BATCH_SIZE" in os.environ:  # the click's split and the worker's threads agree
            env["DRAFT_SEND_BATCH_SIZE"] = os.environ["DRAFT_SEND_BATCH_SIZE"]
        client = Client()
        client.force_login(user)
        # The operator clicks on a page that is already open: the first request's one-time work
        # (URL patterns, templates, the admin's registry) is not part of the click.
        assert client.get("/admin/drafts/draft/").status_code == 200
        ids = sorted(drafts.values())
        clicked_at: dict[int, float] = {}
        with contextlib.ExitStack() as stack:
            workers = [
                stack.enter_context(
                    celery_worker(env=env, pool=args.pool, concurrency=args.concurrency, queues="sends")
                )
                for _ in range(args.workers)
            ]
            cpu_before = sum(_cpu_seconds(pid) for pid in _worker_pids(workers))
            started = time.time()
            for i in range(0, len(ids), args.batch):
                batch = ids[i : i + args.batch]
                now = time.time()
                for draft_id in batch:
                    clicked_at[draft_id] = now
                response = client.post(
                    "/admin/drafts/draft/", {"action": "approve_and_send", "_selected_action": batch}
                )
                assert response.status_code == 302, response.status_code
            clicks_s = time.time() - started
            deadline = time.monotonic() + args.timeout
            final = (DraftStatus.SENT, DraftStatus.FAILED, DraftStatus.SKIPPED)
            while time.monotonic() < deadline:
                if Draft.objects.filter(workspace=workspace).exclude(status__in=final).count() == 0:
                    break
                time.sleep(0.2)
            wall_s = time.time() - started
            worker_cpu_s = sum(_cpu_seconds(pid) for pid in _worker_pids(workers)) - cpu_before

    statuses = collections.Counter(Draft.objects.filter(workspace=workspace).values_list("status", flat=True))
    per_draft = collections.Counter()
    latency = []
    for send in fake.sends:
        draft_id = drafts.get(send.body.get("message", ""))
        per_draft[draft_id] += 1
        if per_draft[draft_id] == 1 and draft_id in clicked_at:
            latency.append(send.received_at - clicked_at[draft_id])
    duplicates = sum(1 for count in per_draft.values() if count > 1)
    by_provider = collections.Counter(send.provider for send in fake.sends)
    print(
        f"drafts: {args.drafts} ({args.drafts // 2 + args.drafts % 2} SMS, {args.drafts // 2} email), "
        f"{args.batch} per click, {args.workers} worker(s): {args.pool} pool of {args.concurrency}, "
        f"provider latency {args.latency * 1000:.0f} ms"
    )
    print(f"final statuses: {dict(statuses)}")
    print(
        f"provider accepted sends: {len(fake.sends)} "
        f"(ghl {by_provider['ghl']}, emailbison {by_provider['emailbison']}); "
        f"refused by dead senders: {len(fake.refusals)}; drafts sent more than once: {duplicates}"
    )
    print(f"clicks took {clicks_s:.2f} s in all; wall until every draft final {wall_s:.2f} s")
    print(
        f"worker CPU during the run: {worker_cpu_s:.2f} s ({worker_cpu_s / args.drafts * 1000:.1f} ms a draft; "
        "what bounds a bulk click's drain on a loaded machine)"
    )
    if latency:
        print(
            f"click -> provider call: min {min(latency) * 1000:.0f} ms, "
            f"median {statistics.median(latency) * 1000:.0f} ms, "
            f"p90 {percentile(latency, 0.9) * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms (n={len(latency)})"
        )
    ok = statuses.get("sent", 0) == args.drafts and duplicates == 0 and len(fake.sends) == args.drafts
    print("RESULT:", "ok" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
