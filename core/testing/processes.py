"""Start and stop real processes for end-to-end tests and benchmarks.

- ``celery_worker(...)``: a real ``celery -A config worker`` subprocess.
- ``celery_beat(...)``: a real ``celery -A config beat`` (django-celery-beat's scheduler).
- ``redis_server(...)``: a private ``redis-server`` on a free port (a broker a test may stop).
- ``gunicorn_server(...)``: the WSGI app under gunicorn on a free port.
- ``free_port()`` and ``wait_for_port()``.

Each is a context manager that always stops what it started (process group
kill), so a failing test cannot leave workers behind. The child processes get
the current environment plus ``env`` overrides; point ``DATABASE_URL`` at the
test database (``live_database_url()``) so they see the test's rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery", "-A", "config"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


def wait_until(predicate, timeout: float, what: str, *, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def live_database_url() -> str:
    """The URL of the database the current Django connection uses (the test DB under pytest)."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError("end-to-end processes need PostgreSQL")
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or "5432"
    return f"postgres://{user}{password}@{host}:{port}/{s['NAME']}"


def _child_env(env: dict[str, str] | None) -> dict[str, str]:
    child = dict(os.environ)
    child.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    child["PYTHONUNBUFFERED"] = "1"
    child.update(env or {})
    return child


def _spawn(args: list[str], *, env: dict[str, str] | None, log_path: Path):
    """(log file, process): ``args`` in its own process group, output to ``log_path``."""
    log = open(log_path, "w")  # noqa: SIM115 - the caller closes it
    proc = subprocess.Popen(
        args, cwd=BASE_DIR, env=_child_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return log, proc


def stop_process(proc: subprocess.Popen, *, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def celery_worker(
    *,
    env: dict[str, str] | None = None,
    concurrency: int = 2,
    pool: str = "prefork",
    queues: str | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[subprocess.Popen]:
    """Run a real Celery worker until the block exits. Waits for it to be ready."""
    args = [
        *CELERY,
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=test-{os.getpid()}-{time.monotonic_ns()}@%h",
    ]
    # By default the worker serves the default, drafts and sends queues (settings: CELERY_TASK_ROUTES).
    args.append(f"--queues={queues or 'celery,drafts,sends'}")
    log_path = log_path or Path(tempfile.gettempdir()) / f"leadline-worker-{os.getpid()}.log"
    log, proc = _spawn(args, env=env, log_path=log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early ({proc.returncode}); see {log_path}")
            if " ready." in log_path.read_text(errors="replace"):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"celery worker not ready in {ready_timeout}s; see {log_path}")
        yield proc
    finally:
        stop_process(proc)
        log.close()


@contextlib.contextmanager
def celery_beat(*, env: dict[str, str] | None = None, log_path: Path | None = None) -> Iterator[subprocess.Popen]:
    """Run celery-beat (DatabaseScheduler, as the Procfile) until the block exits."""
    log_path = log_path or Path(tempfile.gettempdir()) / f"leadline-beat-{os.getpid()}.log"
    args = [
        *CELERY,
        "beat",
        "--loglevel=INFO",
        "--scheduler=django_celery_beat.schedulers:DatabaseScheduler",
        f"--pidfile={log_path.with_suffix('.pid')}",
    ]
    log, proc = _spawn(args, env=env, log_path=log_path)
    try:
        yield proc
    finally:
        stop_process(proc)
        log.close()


@contextlib.contextmanager
def redis_server(*, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A private redis-server (no persistence) on a free port; yields (URL, process)."""
    port = port or free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def gunicorn_server(
    *,
    env: dict[str, str] | None = None,
    workers: int = 2,
    threads: int = 1,
    port: int | None = None,
    log_path: Path | None = None,
    extra_args: list[str] | None = None,
) -> Iterator[str]:
    """Serve config.wsgi under gunicorn; yields the base URL."""
    port = port or free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        f"--threads={threads}",
        "--log-level=warning",
        *(extra_args or []),
    ]
    log_path = log_path or Path(tempfile.gettempdir()) / f"leadline-gunicorn-{os.getpid()}.log"
    log, proc = _spawn(args, env=env, log_path=log_path)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()
