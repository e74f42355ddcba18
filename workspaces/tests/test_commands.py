import io
import json

import pytest
from django.core.management import CommandError, call_command

from workspaces.models import Workspace

TOKEN = "pit-abcdef01-2345-6789-abcd-ef0123456789"


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_configure_workspace_creates_and_masks_secrets():
    output = run(
        "configure_workspace",
        "northwind",
        "--name=Northwind",
        "--timezone=America/Chicago",
        f"--ghl-token={TOKEN}",
        "--webhook-secret=whsec-northwind-1234567890",
        "--booking-provider=calendly",
        "--calendly-booking-url=https://calendly.com/northwind/intro",
    )
    data = json.loads(output)
    assert TOKEN not in output and "whsec-northwind-1234567890" not in output
    assert data["ghl_token"] == "****6789"
    assert data["webhook_secret"] == "****7890"
    assert data["webhook_urls"]["ghl"].endswith("/webhooks/ghl/northwind/")
    assert data["webhook_urls"]["emailbison"].endswith("/webhooks/emailbison/northwind/")
    workspace = Workspace.objects.get(slug="northwind")
    assert workspace.ghl_token == TOKEN and workspace.timezone == "America/Chicago"


@pytest.mark.django_db
def test_configure_workspace_updates_only_given_flags(workspace):
    run("configure_workspace", "acme", "--name=Acme 2")
    fresh = Workspace.objects.get(slug="acme")
    assert fresh.name == "Acme 2"
    assert fresh.ghl_token == workspace.ghl_token
    assert fresh.timezone == "America/New_York"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["Bad Slug!"], "slug"),
        (["acme", "--timezone=Mars/Olympus"], "--timezone"),
        (["acme", "--timezone=America"], "--timezone"),
        (["acme", "--booking-provider=outlook"], "--booking-provider"),
        (["acme", "--ghl-booking-url=not a url"], "--ghl-booking-url"),
        (["acme", "--emailbison-base-url=ftp://x"], "--emailbison-base-url"),
        (["acme", "--webhook-secret=short"], "--webhook-secret"),
        (["acme", "--sms-send-window=21:00-08:00"], "--sms-send-window"),
        (["acme", "--sms-send-window=8am-9pm"], "--sms-send-window"),
        (["acme", "--sla-sms-minutes=0"], "--sla-sms-minutes"),
        (["acme", "--sla-notify-webhook-url=not-a-url"], "--sla-notify-webhook-url"),
    ],
)
def test_configure_workspace_bad_input_names_the_flag_and_changes_nothing(workspace, args, flag):
    before = list(Workspace.objects.values())
    with pytest.raises(CommandError) as excinfo:
        run("configure_workspace", *args, "--name=Changed")
    assert flag in str(excinfo.value)
    assert list(Workspace.objects.values()) == before


@pytest.mark.django_db
def test_configure_workspace_bad_input_exits_non_zero_in_a_real_process(tmp_path):
    import os
    import subprocess
    import sys

    from django.conf import settings

    proc = subprocess.run(
        [sys.executable, "manage.py", "configure_workspace", "new-ws", "--timezone=Nowhere/Here"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--timezone" in proc.stderr


@pytest.mark.django_db
def test_workspace_report_json_has_the_documented_keys(workspace):
    from workspaces.services import integration_error_record

    integration_error_record(workspace=workspace, source="ghl", code="rate_limited", message="429 from GHL")
    data = json.loads(run("workspace_report", "acme", "--json"))
    assert set(data) >= {
        "workspace",
        "leads",
        "leads_by_sentiment",
        "messages",
        "drafts",
        "open_errors",
        "availability",
        "last_sync",
        "speed_to_lead",
        "senders",
    }
    assert data["workspace"] == "acme"
    assert data["leads"] == 0
    assert data["messages"] == {"inbound": 0, "outbound": 0}
    assert data["open_errors"][0]["code"] == "rate_limited" and data["open_errors"][0]["count"] == 1
    assert set(data["availability"]) >= {"provider", "slots", "fetched_at", "stale", "last_error"}
    assert data["availability"]["slots"] == 0 and data["availability"]["stale"] is True
    assert data["speed_to_lead"] == {"waiting": 0, "oldest_wait_s": None, "median_reply_s": None, "p90_reply_s": None}
    assert data["senders"] == {"sendable": 0, "unsendable": 0}


@pytest.mark.django_db
def test_workspace_report_unknown_slug():
    with pytest.raises(CommandError, match="slug"):
        run("workspace_report", "nope", "--json")


@pytest.mark.django_db
def test_setup_periodic_tasks_is_idempotent():
    from django_celery_beat.models import PeriodicTask

    first = run("setup_periodic_tasks")
    assert "created" in first
    count = PeriodicTask.objects.count()
    second = run("setup_periodic_tasks")
    assert "created" not in second and "updated" not in second
    assert PeriodicTask.objects.count() == count
    tasks = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {"drafts.tasks.sweep_unprocessed_messages", "availability.tasks.availability_refresh_dispatch"} <= tasks


@pytest.mark.django_db
def test_configure_workspace_sets_the_sms_send_window(workspace):
    out = json.loads(run("configure_workspace", "acme", "--sms-send-window=09:00-20:00"))
    assert out["sms_send_window"] == "09:00-20:00"
    workspace.refresh_from_db()
    assert (workspace.sms_send_start.isoformat(), workspace.sms_send_end.isoformat()) == ("09:00:00", "20:00:00")
