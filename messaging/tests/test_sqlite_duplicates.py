"""Repeat deliveries on SQLite (the default dev database) answer duplicate, not 500.

The rest of the suite runs on PostgreSQL, whose IntegrityErrors name the
violated constraint; SQLite's name columns instead. This runs migrate and a
small script in a subprocess with ``DATABASE_URL=sqlite:///...``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json

import django

django.setup()

from django.test import Client

from messaging.models import Message, WebhookEvent
from messaging.tests.factories import SECRET, emailbison, ghl_inbound, post
from workspaces.services import workspace_configure

workspace_configure(slug="acme", changes={"name": "Acme", "webhook_secret": SECRET, "ghl_location_id": "LOC_ACME_123"})
client = Client()
replied = emailbison("LEAD_REPLIED")
interested = {"event": {**replied["event"], "type": "LEAD_INTERESTED"}, "data": replied["data"]}
ghl = ghl_inbound()
answers = []
for provider, payload in [
    ("emailbison", replied), ("emailbison", replied), ("emailbison", interested), ("ghl", ghl), ("ghl", ghl),
]:
    response = post(client, provider, payload)
    answers.append([response.status_code, response.json()])
message = Message.objects.get(emailbison_reply_id=str(replied["data"]["reply"]["id"]))
print(json.dumps({
    "answers": answers,
    "messages": Message.objects.count(),
    "interested": message.provider_interested,
    "events": sorted(WebhookEvent.objects.values_list("status", flat=True)),
}))
"""


@pytest.mark.timeout(120)
def test_repeat_deliveries_are_duplicates_on_sqlite(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.sqlite3'}",
        "CELERY_BROKER_URL": "memory://",
        "LEADLINE_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "1",
    }
    env.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1vbmx5LWZpZWxkLWVuY3J5cHRpb24ta2V5ISE=")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    statuses = [(code, body["status"]) for code, body in result["answers"]]
    assert statuses == [
        (200, "created"), (200, "duplicate"), (200, "duplicate"), (200, "created"), (200, "duplicate"),
    ], result["answers"]  # fmt: skip
    first = result["answers"][0][1]
    assert all(body["message_id"] == first["message_id"] for _, body in result["answers"][:3])
    assert result["messages"] == 2 and result["interested"] is True
    assert result["events"] == ["duplicate", "duplicate", "duplicate", "processed", "processed"]


def test_constraint_recognised_by_postgresql_name_and_by_sqlite_columns():
    from django.db import IntegrityError

    from messaging.services import EVENT_KEY_CONSTRAINT, _is_constraint

    sqlite = IntegrityError(
        "UNIQUE constraint failed: messaging_webhookevent.workspace_id, messaging_webhookevent.provider, "
        "messaging_webhookevent.idempotency_key"
    )
    other = IntegrityError("UNIQUE constraint failed: messaging_message.workspace_id, messaging_message.ghl_message_id")
    named = IntegrityError(f'duplicate key value violates unique constraint "{EVENT_KEY_CONSTRAINT}"')
    assert _is_constraint(sqlite, EVENT_KEY_CONSTRAINT) and _is_constraint(named, EVENT_KEY_CONSTRAINT)
    assert not _is_constraint(other, EVENT_KEY_CONSTRAINT)
