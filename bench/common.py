"""What the benchmark scripts share: Django set up on the environment's database, a throwaway
database of the bench's own on that server, and percentiles."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]


def django_setup() -> None:
    """Point Django at the repo's settings with the dev defaults a bench needs."""
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1vbmx5LWZpZWxkLWVuY3J5cHRpb24ta2V5ISE=")
    # The fake providers live on loopback: open the outbound guard for them (and the workers).
    os.environ.setdefault("LEADLINE_OUTBOUND_ALLOWLIST", "127.0.0.1")
    import django

    django.setup()


@contextlib.contextmanager
def throwaway_database(prefix: str) -> Iterator[None]:
    """A fresh, migrated ``<prefix>_<name>`` database beside ``DATABASE_URL``'s, dropped after."""
    from django.conf import settings
    from django.db import connection

    base_name = settings.DATABASES["default"]["NAME"]
    settings.DATABASES["default"]["TEST"]["NAME"] = f"{prefix}_{base_name}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(base_name, verbosity=0)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def require_env(*, redis: bool = False) -> str | None:
    """Why the bench cannot run (a message for stderr), or None."""
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        return "set DATABASE_URL to a PostgreSQL server (the bench creates its own database there)"
    if redis and not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        return "set CELERY_BROKER_URL to a Redis database (e.g. redis://127.0.0.1:6379/4)"
    return None


BENCH_FERNET_KEY = "YmVuY2gtb25seS1maWVsZC1lbmNyeXB0aW9uLWtleSE="


def process_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a bench's own processes (web, worker, manage.py): production-like
    settings (DEBUG off) on the bench's database and Redis."""
    env = {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "DJANGO_DEBUG": "0",
        # Plain HTTP on 127.0.0.1: production's HTTPS redirect would answer every post with 301.
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
        "FIELD_ENCRYPTION_KEY": BENCH_FERNET_KEY,
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py <args>`` in a subprocess with ``env``; exits the bench on failure."""
    full = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=full, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout
