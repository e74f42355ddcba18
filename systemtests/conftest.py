"""The system suite's fixtures: one running system (gunicorn, worker, availability worker, beat)
on PostgreSQL + Redis and the provider fakes, shared by the scenarios that need no private
processes. See support.py for what the suite is and how it runs.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def system(fakes, sentry) -> Iterator[System]:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    _recreate_database(SYSTEM_DB)
    redis.Redis.from_url(SYSTEM_REDIS).flushdb()
    env = app_env(broker=SYSTEM_REDIS, fakes=fakes, sentry_dsn=sentry.dsn)
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
    )
    assert migrated.returncode == 0, migrated.stderr
    with running_system(ARTIFACTS / "shared", fakes=fakes, sentry=sentry, broker=SYSTEM_REDIS) as running:
        yield running
