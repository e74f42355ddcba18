"""The system suite's fixtures: one running system (gunicorn, worker, availability worker, beat)
on PostgreSQL + Redis and the provider fakes, shared by the scenarios that need no private
processes. See support.py for what the suite is and how it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
from support import (
    ARTIFACTS,
    SYSTEM_DB,
    SYSTEM_REDIS,
    FakeSentry,
    System,
    _recreate_database,
    app_env,
    fake_sentry,
    running_system,
)

from core.testing.fakes import FakeStack, fake_stack
from core.testing.processes import BASE_DIR


@pytest.fixture(scope="session")
def sentry() -> Iterator[FakeSentry]:
    with fake_sentry() as fake:
        yield fake


@pytest.fixture(scope="session")
def fakes() -> Iterator[FakeStack]:
    with fake_stack(openai={"latency_s": 0.2, "hang_s": 30.0}) as stack:
        yield stack


@pytest.fixture(scope="session", autouse=True)
def fresh_state(fakes, sentry) -> None:
    """Once per run, before any scenario: empty artifacts, a re-created and migrated database,
    a flushed Redis database."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    _recreate_database(SYSTEM_DB)
    redis.Redis.from_url(SYSTEM_REDIS).flushdb()
    env = app_env(broker=SYSTEM_REDIS, fakes=fakes, sentry_dsn=sentry.dsn)
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert migrated.returncode == 0, migrated.stderr


@pytest.fixture(scope="session")
def system(fresh_state, fakes, sentry) -> Iterator[System]:
    with running_system(ARTIFACTS / "shared", fakes=fakes, sentry=sentry, broker=SYSTEM_REDIS) as running:
        yield running


@pytest.fixture(autouse=True)
def fakes_restored(fakes) -> Iterator[None]:
    """Whatever a scenario turns on the shared fakes (latency, faults, limits) is undone after it,
    even when it fails half-way."""
    knobs = [
        (fakes.openai, ("latency_s", "incomplete_ratio", "error_ratio", "hang")),
        (fakes.ghl, ("latency_s", "limit", "interval_s", "forbidden", "force_429")),
    ]
    saved = [(fake, name, getattr(fake, name)) for fake, names in knobs for name in names]
    yield
    for fake, name, value in saved:
        setattr(fake, name, value)
    fakes.openai.script.clear()
