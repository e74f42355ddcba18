"""Helpers of the system suite (see conftest.py): Leadline as it runs in production (gunicorn, a Celery worker, the
availability worker, celery-beat, PostgreSQL, Redis) against the provider fakes of
``core/testing`` (plus a fake Sentry), driven from outside through HTTP, management commands
and SQL reads. ``scripts/systemtest`` runs it (``.ci/run`` calls that); ``make test`` does not.

The suite uses its own database (``SYSTEM_DATABASE_URL``, dropped and migrated at start) and
Redis database (``SYSTEM_REDIS_URL``, flushed). Process logs land in
``test-artifacts/system/`` and are scanned for secrets and message bodies at the end.
Each scenario prints its key figures (``-s`` shows them; the command passes it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psycopg
import requests

from core.testing.fakes import FakeStack
from core.testing.processes import BASE_DIR, celery_beat, celery_worker, gunicorn_server
from core.testing.serving import serving

SYSTEM_DB = os.environ.get("SYSTEM_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/leadline_system")
SYSTEM_REDIS = os.environ.get("SYSTEM_REDIS_URL", "redis://127.0.0.1:6379/6")
ARTIFACTS = BASE_DIR / "test-artifacts" / "system"
FERNET_KEY = "c3lzdGVtLXRlc3Qtb25seS1lbmNyeXB0aW9uLWtleSE="
SECRET_KEY = "system-test-secret-key-" + "x" * 40

PROXY_HEADERS = {"X-Forwarded-Proto": "https"}
# Everything secret or private a scenario uses is registered here; the last scenario greps
# every log, error record and Sentry event for each of them.
SENSITIVE: set[str] = {FERNET_KEY, SECRET_KEY}


def sensitive(value: str) -> str:
    SENSITIVE.add(value)
    return value


# --- a fake Sentry ---------------------------------------------------------------------


@dataclass
class FakeSentry:
    envelopes: list[bytes] = field(default_factory=list)
    dsn: str = ""


@contextlib.contextmanager
def fake_sentry() -> Iterator[FakeSentry]:
    """Accepts Sentry envelopes (``POST /api/<project>/envelope/``) and keeps their raw bytes."""
    fake = FakeSentry()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                import gzip

                raw = gzip.decompress(raw)
            fake.envelopes.append(raw)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    with serving(Handler) as base_url:
        fake.dsn = base_url.replace("http://", "http://publickey0000@") + "/1"
        yield fake


# --- the database ----------------------------------------------------------------------


def _recreate_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def sql(query: str, params: tuple | dict = ()) -> list[tuple]:
    with psycopg.connect(SYSTEM_DB, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def scalar(query: str, params: tuple | dict = ()):
    return sql(query, params)[0][0]


def workspace_counts(slug: str, table: str, column: str) -> dict[str, int]:
    """{value of ``column``: rows} of ``table`` (a constant name) in the workspace ``slug``."""
    return dict(
        sql(
            f"""SELECT t.{column}, count(*) FROM {table} t JOIN workspaces_workspace w ON w.id = t.workspace_id
                WHERE w.slug = %s GROUP BY 1""",
            (slug,),
        )
    )


# --- the running system ----------------------------------------------------------------


@dataclass
class System:
    base_url: str
    env: dict[str, str]
    fakes: FakeStack
    sentry: FakeSentry
    logs: Path

    def manage(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        # The test's own record of the command: secret-bearing values masked, as the app masks them.
        shown = " ".join("***" if any(v in a for v in SENSITIVE) else a for a in args)
        with open(self.logs / "manage.log", "a") as log:
            log.write(f"$ manage.py {shown} -> {done.returncode}\n{done.stdout}{done.stderr}\n")
        if check and done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def workspace(self, slug: str, **fields: str) -> dict:
        """Create/configure a workspace through ``configure_workspace``; returns its webhook secret etc."""
        secret = sensitive(f"whsec-{slug}-{secrets.token_hex(12)}")
        args = ["configure_workspace", slug, "--name", slug, "--webhook-secret", secret]
        for key, value in fields.items():
            if key.endswith("token"):
                sensitive(value)
            args += [f"--{key.replace('_', '-')}", value]
        self.manage(*args)
        return {"slug": slug, "secret": secret, **fields}

    def post(self, provider: str, slug: str, secret: str, body: bytes | dict, timeout: float = 30) -> tuple[int, float]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        started = time.perf_counter()
        response = requests.post(
            f"{self.base_url}/webhooks/{provider}/{slug}/",
            data=raw,
            headers={"Content-Type": "application/json", "X-Webhook-Secret": secret, **PROXY_HEADERS},
            timeout=timeout,
        )
        return response.status_code, time.perf_counter() - started


def app_env(*, broker: str, fakes: FakeStack, sentry_dsn: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "DATABASE_URL": SYSTEM_DB,
        "CELERY_BROKER_URL": broker,
        "RATE_LIMIT_REDIS_URL": broker,
        "FIELD_ENCRYPTION_KEY": FERNET_KEY,
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # As behind the production TLS proxy: requests carry X-Forwarded-Proto: https.
        "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
        "SENTRY_DSN": sentry_dsn,
        "SENTRY_ENVIRONMENT": "system-test",
        "LOG_LEVEL": "INFO",
        # Short LLM timeouts: a 30 s hang costs one attempt, not the suite's time budget.
        "OPENAI_DRAFT_TIMEOUT_S": "4",
        "OPENAI_CLASSIFY_TIMEOUT_S": "3",
        "AVAILABILITY_FETCH_TIMEOUT_S": "3",
        "AVAILABILITY_WORKSPACE_DEADLINE_S": "8",
        "AVAILABILITY_REFRESH_MINUTES": "1",  # a beat cycle every minute (scenario 6)
        **fakes.env(),
        **(extra or {}),
    }


@contextlib.contextmanager
def running_system(
    logs: Path,
    *,
    fakes: FakeStack,
    sentry: FakeSentry,
    broker: str,
    beat: bool = True,
    worker: bool = True,
    extra_env: dict[str, str] | None = None,
) -> Iterator[System]:
    """gunicorn, the default-queue worker (unless ``worker=False``: the test runs its own), the
    availability worker and beat, until the block exits."""
    env = app_env(broker=broker, fakes=fakes, sentry_dsn=sentry.dsn, extra=extra_env)
    sensitive(env["OPENAI_API_KEY"])
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        base_url = stack.enter_context(
            gunicorn_server(
                env=env, workers=2, threads=4, log_path=logs / "gunicorn.log", extra_args=["--access-logfile=-"]
            )
        )
        if worker:
            stack.enter_context(default_worker(env, logs / "worker.log"))
        stack.enter_context(
            celery_worker(
                env=env, concurrency=8, pool="threads", queues="availability", log_path=logs / "availability.log"
            )
        )
        if beat:
            stack.enter_context(celery_beat(env=env, log_path=logs / "beat.log"))
        _wait_healthy(base_url)
        yield System(base_url=base_url, env=env, fakes=fakes, sentry=sentry, logs=logs)


def default_worker(env: dict[str, str], log_path: Path):
    """The Procfile's ``worker``, ``drafts`` and ``sends`` workers in one (prefork, concurrency 2):
    the default queue (sweeps, sync), the ``drafts`` queue (classify_and_draft) and the
    ``sends`` queue (drafts_send). One process to SIGKILL mid-draft and mid-send (scenario 4);
    the threads pools of production's drafts and sends workers are measured by bench/burst and
    bench/send."""
    return celery_worker(env=env, concurrency=2, pool="prefork", queues="celery,drafts,sends", log_path=log_path)


def _wait_healthy(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/healthz", headers=PROXY_HEADERS, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{base_url}/healthz not 200 within {timeout}s")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def post_all(system: System, jobs: list[tuple[str, str, str, bytes | dict]], *, threads: int = 4, rate: float = 40.0):
    """POST every (provider, slug, secret, body) at about ``rate`` per second; [(status, seconds)]."""
    results: list[tuple[int, float]] = [(0, 0.0)] * len(jobs)
    started = time.monotonic()

    def one(i: int) -> None:
        wait = started + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            results[i] = system.post(*jobs[i])
        except requests.RequestException:
            results[i] = (-1, float("nan"))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(jobs))))
    return results


def report(scenario: str, **figures) -> None:
    line = f"[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print("\n" + line, flush=True)
    with open(ARTIFACTS / "figures.txt", "a") as out:
        out.write(line + "\n")
