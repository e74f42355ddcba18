"""Webhook ingestion benchmark: latency (open loop) and capacity (closed loop, wrk).

Starts everything it needs and stops it all at the end (bounded in time):
PostgreSQL database (created and migrated if missing), a workspace, the fake
OpenAI server answering after 30 s, a real Celery worker on Redis, and the app
under gunicorn. Then:

1. open loop: distinct inbound SMS at a fixed rate (default 100/s for 30 s),
   latency measured from each request's scheduled send time (no coordinated
   omission), so a stall shows up as latency, not as a lower rate;
2. closed loop: ``wrk`` with 8 connections for 30 s, a Lua script making every
   body unique (``bench/webhooks/wrk_unique.lua``).

Usage (from the repository root)::

    .venv/bin/python bench/webhooks/run.py [--rate 100] [--duration 30] [--workers 4]
        [--wrk-connections 8] [--skip-open-loop] [--skip-wrk] [--profile]

Environment: ``BENCH_DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/leadline_bench_webhooks``) and
``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``; the bench flushes
that Redis database). Traffic goes to 127.0.0.1 only. ``--profile`` runs
``py-spy`` (if installed in the venv) on one gunicorn worker during the wrk run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import manage, process_env  # noqa: E402
from core.testing.processes import celery_worker, free_port, gunicorn_server, wait_for_port  # noqa: E402

SECRET = "whsec-bench-0123456789abcdef"
LOCATION = "LOC_BENCH"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/leadline_bench_webhooks"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


_env = process_env
_manage = manage


def _prepare_database(database_url: str, redis_url: str) -> None:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    env = _env(database_url, redis_url)
    _manage(env, "migrate", "--noinput")
    _manage(
        env,
        "configure_workspace",
        "bench",
        "--name",
        "Bench",
        "--webhook-secret",
        SECRET,
        "--ghl-location-id",
        LOCATION,
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Fresh tables each run so figures do not drift with accumulated rows.
        conn.execute(
            "TRUNCATE messaging_webhookevent, messaging_message, leads_lead, drafts_draft RESTART IDENTITY CASCADE"
        )


def _flush_redis(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def _body(run: str, n: int, contacts: int = 500) -> bytes:
    contact = f"ol-contact-{n % contacts}"
    return json.dumps(
        {
            "type": "InboundMessage",
            "locationId": LOCATION,
            "contactId": contact,
            "conversationId": f"conv-{contact}",
            "messageId": f"ol-{run}-{n}",
            "body": f"Yes I am interested, can we book a call? ({run}-{n})",
            "messageType": "SMS",
            "direction": "inbound",
            "status": "delivered",
            "contentType": "text/plain",
            "attachments": [],
        }
    ).encode()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def open_loop(port: int, *, rate: float, duration: float, senders: int = 32) -> dict:
    """Send at a fixed rate; latency from each request's scheduled time."""
    run = uuid.uuid4().hex[:8]
    jobs: queue.Queue = queue.Queue()
    latencies: list[float] = []
    service: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    total = int(rate * duration)

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            job = jobs.get()
            if job is None:
                conn.close()
                return
            n, scheduled = job
            body = _body(run, n)
            started = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    "/webhooks/ghl/bench/",
                    body=body,
                    headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
                )
                response = conn.getresponse()
                response.read()
                code = response.status
            except (OSError, http.client.HTTPException):
                code = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            finished = time.perf_counter()
            with lock:
                latencies.append((finished - scheduled) * 1000)
                service.append((finished - started) * 1000)
                codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    start = time.perf_counter() + 0.1
    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        jobs.put((n, scheduled))
    for _ in threads:
        jobs.put(None)
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.perf_counter() - start
    ok = sum(n for code, n in codes.items() if 200 <= code < 300)
    return {
        "requests": total,
        "ok_2xx": ok,
        "non_2xx": total - ok,
        "codes": codes,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p95_ms": round(_percentile(latencies, 95), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "service_p50_ms": round(statistics.median(service), 2) if service else None,
    }


def closed_loop_wrk(port: int, *, connections: int, duration: int, threads: int = 2) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get update && apt-get install -y wrk")
    result = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(Path(__file__).with_name("wrk_unique.lua")),
            f"http://127.0.0.1:{port}/webhooks/ghl/bench/",
        ],
        env={**os.environ, "WEBHOOK_SECRET": SECRET, "LOCATION_ID": LOCATION},
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRK_RESULT")), "")
    if not line:
        raise SystemExit(f"wrk gave no result:\n{result.stdout}\n{result.stderr}")
    figures = dict(part.split("=", 1) for part in line.split()[1:])
    return {k: (float(v) if "." in v else int(v)) for k, v in figures.items()}


def _db_summary(database_url: str) -> dict:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(work_enqueued_at), (SELECT count(*) FROM leads_lead),"
            " (SELECT count(*) FROM messaging_webhookevent) FROM messaging_message"
        ).fetchone()
    return {"messages": row[0], "messages_enqueued": row[1], "leads": row[2], "webhook_events": row[3]}


def _analyze(database_url: str) -> None:
    """Fresh planner statistics, as autovacuum would give a long-running database."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE leads_lead, messaging_message, messaging_webhookevent")


def _queue_length(redis_url: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).llen("celery"))


@contextlib.contextmanager
def _fake_llm(latency: float):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.testing.fake_openai", "--port", str(port), "--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()


@contextlib.contextmanager
def _py_spy(pid: int, seconds: int, out: Path):
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not installed in the venv: no profile", file=sys.stderr)
        yield None
        return
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=seconds + 30)


def _gunicorn_worker_pids(port: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"gunicorn config.wsgi:application --bind=127.0.0.1:{port}"], capture_output=True, text=True
    )
    pids = [int(p) for p in out.stdout.split()]
    # The master is the oldest; its children are the workers.
    children = []
    for pid in pids:
        with contextlib.suppress(OSError):
            ppid = int(Path(f"/proc/{pid}/stat").read_text().split()[3])
            if ppid in pids:
                children.append(pid)
    return children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (3 measured best on 2 cores)")
    parser.add_argument("--wrk-connections", type=int, default=8)
    parser.add_argument("--llm-latency", type=float, default=30.0)
    parser.add_argument("--skip-open-loop", action="store_true")
    parser.add_argument("--skip-wrk", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy one gunicorn worker during the wrk run")
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    print(f"bench: database {database_url.rsplit('/', 1)[1]}, redis {redis_url}, cpus {os.cpu_count()}", flush=True)
    _prepare_database(database_url, redis_url)
    _flush_redis(redis_url)

    results: dict = {}
    with _fake_llm(args.llm_latency) as llm_url:
        worker_env = _env(database_url, redis_url, OPENAI_BASE_URL=llm_url, OPENAI_API_KEY="sk-bench-fake-0000")
        with celery_worker(env=worker_env, concurrency=2):
            port = free_port()
            with gunicorn_server(env=_env(database_url, redis_url), workers=args.workers, port=port):
                # Warm up every worker (imports, DB connection, workspace cache, producer connection).
                warm = open_loop(port, rate=200, duration=2)
                print(f"warm-up: {warm['ok_2xx']}/{warm['requests']} 2xx", flush=True)
                _analyze(database_url)
                if not args.skip_open_loop:
                    print(f"open loop: {args.rate:g} req/s for {args.duration}s ...", flush=True)
                    results["open_loop"] = open_loop(port, rate=args.rate, duration=args.duration)
                    print(json.dumps(results["open_loop"]), flush=True)
                if not args.skip_wrk:
                    print(f"closed loop: wrk {args.wrk_connections} connections for {args.duration}s ...", flush=True)
                    profile_out = Path("/tmp") / f"leadline-webhooks-pyspy-{port}.txt"
                    spy = (
                        _py_spy(_gunicorn_worker_pids(port)[0], args.duration - 5, profile_out)
                        if args.profile
                        else contextlib.nullcontext()
                    )
                    with spy:
                        results["wrk"] = closed_loop_wrk(port, connections=args.wrk_connections, duration=args.duration)
                    print(json.dumps(results["wrk"]), flush=True)
                    if args.profile:
                        print(f"py-spy profile (raw, collapsed stacks): {profile_out}")
            results["queue_length_after"] = _queue_length(redis_url)
    results["database"] = _db_summary(database_url)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
