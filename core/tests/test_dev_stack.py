"""The README's run command, for real: web + worker + beat on the embedded
defaults (SQLite + filesystem broker), /healthz 200, admin login with the
printed credentials, and a task travelling through the filesystem broker."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from core.testing.processes import BASE_DIR, free_port

pytestmark = pytest.mark.e2e


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_make_dev_runs_web_worker_and_beat_on_embedded_defaults(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "DJANGO_SETTINGS"))}
    env.update({"PORT": str(port), "LEADLINE_VAR_DIR": str(tmp_path / "var"), "DJANGO_DEBUG": "1"})
    log_path = tmp_path / "dev.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["scripts/dev"], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy():
            try:
                return requests.get(f"{base}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        _wait_for(healthy, 240, f"/healthz on {base}; log: {log_path}")
        assert requests.get(f"{base}/healthz", timeout=2).json() == {"database": "ok", "broker": "ok"}

        text = log_path.read_text()
        match = re.search(r"admin user: (\S+)\s+password: (\S+)", text)
        assert match, text[-2000:]
        username, password = match.groups()

        session = requests.Session()
        login_url = f"{base}/admin/login/"
        page = session.get(login_url, timeout=5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = session.post(
            login_url,
            data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"},
            headers={"Referer": login_url},
            timeout=5,
        )
        assert response.status_code == 200 and "Operator console" in response.text
        assert "demo" in session.get(f"{base}/admin/workspaces/workspace/", timeout=5).text
        assert session.get(f"{base}/static/admin/css/base.css", timeout=5).status_code == 200

        for worker in ("default", "drafts", "availability"):
            _wait_for(lambda w=worker: re.search(rf"{w}@\S+ ready\.", log_path.read_text()), 60, f"{worker} worker")
        _wait_for(lambda: "beat: Starting" in log_path.read_text(), 60, "beat")

        # A task goes through the filesystem broker and the worker runs it.
        subprocess.run(
            [".venv/bin/python", "manage.py", "shell", "-c", "from core.tasks import ping; ping.delay()"],
            cwd=BASE_DIR,
            env=env,
            check=True,
            timeout=60,
        )
        _wait_for(lambda: re.search(r"core\.tasks\.ping\[[^\]]+\] succeeded", log_path.read_text()), 60, "ping")
        # The drafts queue has its worker (threads) too, and the work claim runs on SQLite.
        subprocess.run(
            [
                ".venv/bin/python",
                "manage.py",
                "shell",
                "-c",
                "from drafts.tasks import classify_and_draft as t; t.delay(0)",
            ],
            cwd=BASE_DIR,
            env=env,
            check=True,
            timeout=60,
        )
        _wait_for(
            lambda: re.search(r"classify_and_draft\[[^\]]+\] succeeded", log_path.read_text()), 60, "classify_and_draft"
        )
        assert Path(tmp_path / "var" / "leadline.sqlite3").exists()
        # The only HEAD request of the run: its access-log line is recognisable. Wait for that
        # line itself (gunicorn flushes it after answering), then look for the secret.
        requests.head(f"{base}/healthz?secret=whsec-must-not-be-logged", timeout=5)  # answered 405: logged all the same
        head_line = re.compile(r'"HEAD /healthz[^"]*"')
        _wait_for(
            lambda: head_line.search(log_path.read_text()), 60, f"the HEAD request's access-log line in {log_path}"
        )
        assert "whsec-must-not-be-logged" not in log_path.read_text()  # access log on, without query strings
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
