"""celery-beat runs the project's schedule on a fresh database, without setup_periodic_tasks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from django_celery_beat.models import PeriodicTask

from config.beat import beat_entries, beat_schedule
from core.services import periodic_tasks_install
from core.testing.processes import BASE_DIR, live_database_url

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_beat_schedule_and_the_install_command_declare_the_same_entries(db, settings):
    settings.GHL_SYNC_INTERVAL_S = 0
    schedule = beat_schedule()
    assert set(schedule) == {entry.name for entry in beat_entries()}
    assert schedule["leadline: incremental GHL sync"]["task"] == "ghl.tasks.ghl_sync_dispatch"
    periodic_tasks_install()
    assert set(PeriodicTask.objects.values_list("name", flat=True)) >= set(schedule)


def test_periodic_ghl_sync_interval_comes_from_the_environment(settings):
    settings.GHL_SYNC_INTERVAL_S = 900
    entry = beat_schedule()["leadline: incremental GHL sync"]
    assert entry["schedule"].total_seconds() == 900


def _sent_tasks(client: redis.Redis) -> list[str]:
    names = []
    for raw in client.lrange("celery", 0, -1):
        with contextlib.suppress(ValueError, KeyError):
            names.append(json.loads(raw)["headers"]["task"])
    return names


@pytest.mark.django_db(transaction=True)
def test_beat_on_a_fresh_database_runs_the_schedule_without_setup_periodic_tasks():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at TEST_REDIS_URL")
    client.delete("celery")
    assert not PeriodicTask.objects.exists()  # nobody ran setup_periodic_tasks
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": live_database_url(),
        "CELERY_BROKER_URL": REDIS_URL,
        "GHL_SYNC_INTERVAL_S": "1",  # the optional periodic sync, on, every second
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO", "--pidfile="],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "ghl.tasks.ghl_sync_dispatch" not in _sent_tasks(client):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-2000:]
            time.sleep(0.2)
        sent = _sent_tasks(client)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        client.delete("celery")
    assert "ghl.tasks.ghl_sync_dispatch" in sent, "beat sent nothing"
    installed = set(PeriodicTask.objects.filter(enabled=True).values_list("name", flat=True))
    assert {entry.name for entry in beat_entries()} <= installed


def test_sweep_task_is_registered_under_the_beat_name():
    from config.beat import beat_entries
    from config.celery_app import app

    app.loader.import_default_modules()
    names = {entry.task for entry in beat_entries()}
    assert "drafts.tasks.sweep_unprocessed_messages" in names
    assert "drafts.tasks.sweep_unprocessed_messages" in app.tasks


def test_dispatcher_is_registered_under_the_beat_name():
    from config.beat import beat_entries
    from config.celery_app import app

    app.loader.import_default_modules()
    names = {e.task for e in beat_entries()}
    assert "availability.tasks.availability_refresh_dispatch" in names
    assert "availability.tasks.availability_refresh_dispatch" in app.tasks
    refresh = app.tasks["availability.tasks.availability_refresh_workspace"]
    from django.conf import settings

    assert refresh.soft_time_limit > settings.AVAILABILITY_WORKSPACE_DEADLINE_S
    assert refresh.time_limit > refresh.soft_time_limit
