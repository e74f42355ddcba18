"""`manage.py check --deploy` with production environment values has nothing to say."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from django.conf import settings


def _check_deploy(tmp_path, **extra: str) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "LEADLINE_")) and k not in ("FIELD_ENCRYPTION_KEY", "DATABASE_URL")
    }
    env.update(
        {
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
            "DJANGO_ALLOWED_HOSTS": "leadline.example.com",
            "FIELD_ENCRYPTION_KEY": "dGVzdC1vbmx5LWZpZWxkLWVuY3J5cHRpb24ta2V5ISE=",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
            "LEADLINE_VAR_DIR": str(tmp_path),
            **extra,
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_values(tmp_path):
    proc = _check_deploy(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_check_deploy_notices_an_insecure_override(tmp_path):
    """The check is live: turning a protection off is reported."""
    proc = _check_deploy(tmp_path, DJANGO_SESSION_COOKIE_SECURE="false")
    assert proc.returncode != 0 and "security.W012" in proc.stdout + proc.stderr
