"""Benchmark: a reply burst. N inbound SMS posted at once to the real GHL webhook (gunicorn, the
Procfile's ``web`` line), drafted by the worker started with the Procfile's ``drafts`` line (the
README's production command) against a fake LLM answering every call in 3 s.

    .venv/bin/python bench/burst/run.py [--messages 200] [--latency 3]
        [--rate-limit 60/10] [--worker-command "..."] [--env KEY=VALUE ...]

Prints inbound → ready draft p50/p90/max (``Message.created_at``, written by the webhook, to
``Draft.finished_at``, written by the worker), calls and tokens per draft, the peak number of
PostgreSQL connections to the bench database during the run (``pg_stat_activity``, sampled every
50 ms by a connection to the ``postgres`` database, so not counting itself; by process through
``application_name``), the worker's peak
RSS, 429s answered by the fake, and whether the LLM saw the messages oldest first (per model:
the pairs where a newer message's call reached the fake more than a second before an older
one's).

Uses ``BENCH_DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/leadline_bench_burst``,
created and emptied) and ``BENCH_REDIS_URL`` (default db 9, **flushed**). Traffic goes only to
127.0.0.1. ``--rate-limit R/S``: the fake allows R requests per S seconds per model and announces
it (``x-ratelimit-*``), answering 429 beyond.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import manage, percentile, process_env  # noqa: E402
from core.testing.fake_openai import fake_openai_server  # noqa: E402
from core.testing.processes import free_port, wait_for_port  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/leadline_bench_burst"
DEFAULT_REDIS = "redis://127.0.0.1:6379/9"
SECRET = "whsec-bench-burst-0123456789abcdef"
LOCATION = "LOC_BURST"
BODIES = [
    "Yes, I'm interested. What does it cost for a team like ours? ref {n}",
    "Sounds good, interested! Can we book a meeting next Tuesday? ref {n}",
    "Could you call me tomorrow about this? ref {n}",
    "Interested - send me more details please, ref {n}",
]
FINAL = ("ready", "failed", "skipped", "superseded", "approved", "rejected", "sent", "scheduled")


def _prepare(database_url: str, redis_url: str) -> None:
    import psycopg
    import redis

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    env = process_env(database_url, redis_url)
    manage(env, "migrate", "--noinput")
    manage(env, "configure_workspace", "burst", "--name", "Burst", "--webhook-secret", SECRET,
            "--ghl-location-id", LOCATION, "--persona-name", "Sam", "--company-name", "Acme")  # fmt: skip
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE messaging_webhookevent, messaging_message, leads_lead, drafts_draft,"
            " drafts_messageworkclaim, workspaces_integrationerror RESTART IDENTITY CASCADE"
        )
        conn.execute("VACUUM ANALYZE")
    redis.Redis.from_url(redis_url).flushdb()


def _procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"no {name!r} process in the Procfile")


@contextlib.contextmanager
def _process(command: str, *, env: dict[str, str], log_path: Path, ready: str | None = None, port: int | None = None):
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while ready and ready not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command!r} did not start; see {log_path}")
            time.sleep(0.1)
        if port:
            wait_for_port(port)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def _group_rss_kib(pgid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if os.getpgid(int(entry.name)) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class Sampler(threading.Thread):
    """Peak connections to the bench database and peak RSS of the worker's process group."""

    def __init__(self, *, admin_url: str, database: str, worker_pgid: int) -> None:
        super().__init__(daemon=True)
        self.admin_url, self.database, self.worker_pgid = admin_url, database, worker_pgid
        self.peak_connections, self.peak_states, self.peak_rss_kib = 0, {}, 0
        self._done = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self._done.is_set():
                rows = conn.execute(
                    "SELECT coalesce(nullif(application_name, ''), '?'), count(*) FROM pg_stat_activity"
                    " WHERE datname = %s GROUP BY 1",
                    [self.database],
                ).fetchall()
                total = sum(n for _, n in rows)
                if total > self.peak_connections:
                    self.peak_connections, self.peak_states = total, dict(rows)
                self.peak_rss_kib = max(self.peak_rss_kib, _group_rss_kib(self.worker_pgid))
                self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


def _post_all(port: int, n: int, run: str) -> tuple[float, int]:
    import requests

    session_local = threading.local()

    def post(i: int) -> int:
        session = getattr(session_local, "s", None)
        if session is None:
            session = session_local.s = requests.Session()
        contact = f"burst-{run}-{i}"
        body = {
            "type": "InboundMessage",
            "locationId": LOCATION,
            "contactId": contact,
            "conversationId": f"conv-{contact}",
            "messageId": f"msg-{run}-{i}",
            "body": BODIES[i % len(BODIES)].format(n=i),
            "messageType": "SMS",
            "direction": "inbound",
            "status": "delivered",
            "contentType": "text/plain",
            "attachments": [],
        }
        response = session.post(
            f"http://127.0.0.1:{port}/webhooks/ghl/burst/", json=body, headers={"X-Webhook-Secret": SECRET}, timeout=30
        )
        return response.status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(post, range(n)))
    return time.monotonic() - started, sum(1 for c in codes if 200 <= c < 300)


def _order_violations(fake, created_rank: dict[int, int], queued_by_ref: dict[int, list[float]]) -> dict[str, int]:
    """Per model: pairs of calls where the older message's call was already waiting for its
    rate-limit slot when the newer message's call reached the fake, and reached it more than a
    second later (slots freed together are taken in any order within that second). The wait
    start is the arrival minus the ``queued_ms`` the worker recorded for that call."""
    calls: dict[str, list[tuple[float, float, int]]] = {}
    seen: dict[int, int] = {}
    for record in sorted((r for r in fake.records if r.request_index >= 0), key=lambda r: r.received_at):
        body = fake.requests[record.request_index]
        found = re.search(r"ref (\d+)", json.dumps(body.get("input")))
        if not found or int(found.group(1)) not in created_rank or record.status_code != 200:
            continue
        ref = int(found.group(1))
        index = seen[ref] = seen.get(ref, -1) + 1
        queued = queued_by_ref.get(ref, [])
        waited_s = queued[index] / 1000 if index < len(queued) else 0.0
        calls.setdefault(record.model, []).append(
            (record.received_at, record.received_at - waited_s, created_rank[ref])
        )
    result = {}
    for model, items in calls.items():
        result[model] = sum(
            1
            for arrival_a, waiting_a, rank_a in items
            for arrival_b, _, rank_b in items
            if rank_a < rank_b and waiting_a < arrival_b - 0.2 and arrival_a > arrival_b + 1.0
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--latency", type=float, default=3.0)
    parser.add_argument("--rate-limit", default="", help="R/S: R requests per S seconds per model (announced)")
    parser.add_argument("--worker-command", default="", help="instead of the Procfile's drafts line")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the web and worker processes")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    import psycopg

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    database = database_url.rsplit("/", 1)[1]
    _prepare(database_url, redis_url)
    extra = dict(item.split("=", 1) for item in args.env)
    rl_requests, rl_interval = (
        (int(args.rate_limit.split("/")[0]), float(args.rate_limit.split("/")[1])) if args.rate_limit else (0, 60.0)
    )
    worker_command = args.worker_command or _procfile_command("drafts")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}  worker: {worker_command}")
    if extra:
        print(f"env: {extra}")
    run = str(int(time.time()))
    logs = Path("/tmp")
    with fake_openai_server(
        latency_s=args.latency, rate_limit_requests=rl_requests, rate_limit_interval_s=rl_interval
    ) as fake:
        env = process_env(
            database_url, redis_url, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-bench-burst", **extra
        )
        port = free_port()
        web = _procfile_command("web").replace("${PORT:-8000}", str(port))
        with (
            _process(
                worker_command,
                env={**env, "PGAPPNAME": "drafts-worker"},  # libpq names the sessions (the sampler's breakdown)
                log_path=logs / f"burst-worker-{run}.log",
                ready=" ready.",
            ) as worker,
            _process(web, env={**env, "PGAPPNAME": "web"}, log_path=logs / f"burst-web-{run}.log", port=port),
        ):
            sampler = Sampler(
                admin_url=database_url.rsplit("/", 1)[0] + "/postgres", database=database, worker_pgid=worker.pid
            )
            sampler.start()
            started = time.monotonic()
            post_s, accepted = _post_all(port, args.messages, run)
            done = 0
            with psycopg.connect(database_url, autocommit=True) as conn:
                while time.monotonic() - started < args.timeout:
                    done = conn.execute(
                        "SELECT count(*) FROM messaging_message m WHERE m.direction = 'inbound' AND ("
                        " EXISTS (SELECT 1 FROM drafts_draft d WHERE d.message_id = m.id AND d.status = ANY(%s))"
                        " OR (m.classified_at IS NOT NULL AND NOT EXISTS"
                        "     (SELECT 1 FROM drafts_draft d WHERE d.message_id = m.id)))",
                        [list(FINAL)],
                    ).fetchone()[0]
                    if done >= args.messages:
                        break
                    time.sleep(0.25)
            wall = time.monotonic() - started
            sampler.stop()
            cpu_s = sum(
                int(x) for x in Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
            ) / os.sysconf("SC_CLK_TCK")

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT m.body, m.created_at, d.status, d.finished_at, d.usage, d.failure_reason"
            " FROM messaging_message m LEFT JOIN drafts_draft d ON d.message_id = m.id AND d.status <> 'superseded'"
            " WHERE m.direction = 'inbound' ORDER BY m.created_at, m.id"
        ).fetchall()
    created_rank, queued_by_ref = {}, {}
    latencies, statuses, tokens_in, tokens_out, failures = [], {}, 0, 0, {}
    for rank, (body, created_at, status, finished_at, usage, failure) in enumerate(rows):
        ref = int(re.search(r"ref (\d+)", body).group(1))
        created_rank[ref] = rank
        statuses[status or "none"] = statuses.get(status or "none", 0) + 1
        if failure:
            failures[failure] = failures.get(failure, 0) + 1
        if status == "ready":
            latencies.append((finished_at - created_at).total_seconds())
        usage = usage or {}
        calls = list(((usage.get("classification") or {}).get("calls")) or []) + list(usage.get("calls") or [])
        queued_by_ref[ref] = [c.get("queued_ms", 0.0) for c in calls if c.get("http_attempts")]
        tokens_in += sum(c.get("input_tokens", 0) for c in calls)
        tokens_out += sum(c.get("output_tokens", 0) for c in calls)
    ready = statuses.get("ready", 0)
    calls_ok = sum(1 for r in fake.records if r.status_code == 200)
    # The fake's usage counts only the input; the instructions are input tokens too (chars / 4).
    prompt_chars = sum(len(str(b.get("instructions") or "")) + len(json.dumps(b.get("input"))) for b in fake.requests)
    by_kind: dict[str, int] = {}
    for r in fake.records:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    result = {
        "messages": args.messages,
        "accepted": accepted,
        "post_s": round(post_s, 2),
        "wall_s": round(wall, 1),
        "statuses": statuses,
        "failures": failures,
        "p50_s": round(percentile(latencies, 0.5), 2),
        "p90_s": round(percentile(latencies, 0.9), 2),
        "max_s": round(max(latencies), 2) if latencies else None,
        "llm_requests": len(fake.records),
        "llm_requests_by_kind": by_kind,
        "calls_per_draft": round(calls_ok / max(1, ready), 2),
        "tokens_per_draft": {
            "input_with_instructions_est": round(prompt_chars / 4 / max(1, ready)),
            "input_fake_usage": round(tokens_in / max(1, ready)),
            "output_fake_usage": round(tokens_out / max(1, ready)),
        },
        "rate_limited_429": fake.rate_limited,
        "order_violations": _order_violations(fake, created_rank, queued_by_ref),
        "peak_pg_connections": sampler.peak_connections,
        "peak_pg_by_process": sampler.peak_states,
        "worker_peak_rss_mib": round(sampler.peak_rss_kib / 1024, 1),
        "worker_cpu_s": round(cpu_s, 1),
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    print("RESULT " + json.dumps(result))
    return 0 if ready == args.messages and done >= args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
