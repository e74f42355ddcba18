"""sync_all against a local fake GHL server (real HTTP): imports, idempotency, bad data,
403, one run at a time, draft work only for live conversations, report and admin."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from core.testing.fake_ghl import fake_ghl_server
from ghl import services
from ghl.models import SyncRun
from ghl.services import SyncAlreadyRunning, SyncCannotRun, sync_run_execute, sync_run_start
from leads.models import Lead
from messaging.models import Direction, Message, Origin
from workspaces.models import IntegrationError

C1 = "contactAAAA000000000001"
C2 = "contactBBBB000000000002"
C3 = "contactCCCC000000000003"


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def msg(mid: str, direction: str, when: dt.datetime, kind: str = "TYPE_SMS") -> dict:
    return {"id": mid, "direction": direction, "messageType": kind, "body": f"text of {mid}", "dateAdded": iso(when)}


@pytest.fixture
def fake(settings):
    with fake_ghl_server(limit=1000, interval_s=10) as server:
        settings.GHL_API_BASE_URL = server.base_url
        settings.GHL_REQUESTS_PER_10S = 1000
        yield server


@pytest.fixture
def enqueued(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(services, "message_work_enqueue", lambda *, message_id, workspace_id: calls.append(message_id))
    return calls


def run_sync(workspace, **kwargs) -> SyncRun:
    run = sync_run_start(workspace=workspace, trigger="test")
    return sync_run_execute(run_id=run.pk, concurrency=1, **kwargs)


def sent_paths(fake) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests]


def test_full_sync_imports_messages_with_their_own_dates_and_a_resync_imports_nothing(
    workspace, fake, enqueued, django_capture_on_commit_callbacks
):
    now = timezone.now()
    created = now - dt.timedelta(days=400)
    fake.page_size = 2  # three pages for five messages: pagination is exercised end to end
    fake.add_contact(
        C1,
        firstName="Jo",
        lastName="Doe",
        email="Jo@Example.com",
        phone="0044 20 7946 0958",
        dateAdded=iso(created),
        dndSettings={"SMS": {"status": "active"}},
        messages=[
            msg("m0000000000000000001", "outbound", now - dt.timedelta(days=30)),
            msg("m0000000000000000002", "inbound", now - dt.timedelta(days=29)),
            msg("m0000000000000000003", "outbound", now - dt.timedelta(days=28)),
            msg("m0000000000000000004", "inbound", now - dt.timedelta(days=27)),
            {"id": "call0000000000000001", "direction": "inbound", "messageType": "TYPE_CALL", "dateAdded": iso(now)},
        ],
    )
    lead = Lead.objects.create(workspace=workspace, ghl_contact_id=C1)
    with django_capture_on_commit_callbacks(execute=True):
        run = run_sync(workspace)
    assert run.status == SyncRun.Status.SUCCEEDED
    assert (run.leads_total, run.leads_ok, run.leads_failed, run.messages_imported) == (1, 1, 0, 4)
    assert run.requests == len(fake.requests) and run.rate_limited == 0
    messages = list(Message.objects.filter(lead=lead).order_by("sent_at"))
    assert [m.ghl_message_id for m in messages] == [f"m000000000000000000{i}" for i in range(1, 5)]
    assert all(m.origin == Origin.SYNC for m in messages)
    # Each message keeps its own date (never the contact's creation date).
    assert messages[0].sent_at == now.replace(microsecond=0) - dt.timedelta(days=30)
    assert all(m.sent_at > created + dt.timedelta(days=300) for m in messages)
    lead.refresh_from_db()
    assert (lead.first_name, lead.email, lead.phone_e164, lead.sms_dnd) == (
        "Jo",
        "jo@example.com",
        "+442079460958",
        True,
    )
    assert enqueued == []  # old history: no drafts

    before = len(fake.requests)
    with django_capture_on_commit_callbacks(execute=True):
        again = run_sync(workspace)
    assert again.messages_imported == 0
    assert Message.objects.filter(lead=lead).count() == 4
    assert again.requests == len(fake.requests) - before
    assert enqueued == []


def test_only_a_live_unanswered_inbound_gets_its_draft_work(
    workspace, fake, enqueued, django_capture_on_commit_callbacks
):
    now = timezone.now()
    fake.add_contact(
        C1,
        messages=[
            msg("a0000000000000000001", "outbound", now - dt.timedelta(hours=3)),
            msg("a0000000000000000002", "inbound", now - dt.timedelta(minutes=20)),
        ],
    )
    fake.add_contact(
        C2,  # answered: the latest message is ours
        messages=[
            msg("b0000000000000000001", "inbound", now - dt.timedelta(hours=2)),
            msg("b0000000000000000002", "outbound", now - dt.timedelta(hours=1)),
        ],
    )
    fake.add_contact(C3, messages=[msg("c0000000000000000001", "inbound", now - dt.timedelta(days=3))])  # old
    for contact in (C1, C2, C3):
        Lead.objects.create(workspace=workspace, ghl_contact_id=contact)
    with django_capture_on_commit_callbacks(execute=True):
        run_sync(workspace)
    live = Message.objects.get(ghl_message_id="a0000000000000000002")
    assert enqueued == [live.pk]
    assert live.direction == Direction.INBOUND


def test_invalid_contact_ids_are_skipped_never_sent_and_resolve_on_the_next_clean_run(workspace, fake):
    fake.add_contact(C1, messages=[])
    good = Lead.objects.create(workspace=workspace, ghl_contact_id=C1)
    bad = Lead.objects.create(workspace=workspace, ghl_contact_id="abc/../123 x")
    short = Lead.objects.create(workspace=workspace, ghl_contact_id="tooshort")
    run = run_sync(workspace)
    assert (run.status, run.leads_ok, run.leads_skipped, run.leads_failed) == ("succeeded", 1, 2, 0)
    assert run.errors["invalid_contact_id"]["count"] == 2
    assert set(run.errors["invalid_contact_id"]["leads"]) == {bad.pk, short.pk}
    assert not any("abc" in r.path or "tooshort" in r.path or "tooshort" in str(r.query) for r in fake.requests)
    error = IntegrationError.objects.get(workspace=workspace, code="invalid_contact_id", resolved_at__isnull=True)
    assert error.source == "ghl"
    assert good.pk not in error.context["leads"]

    Lead.objects.filter(pk__in=[bad.pk, short.pk]).delete()
    run_sync(workspace)
    error.refresh_from_db()
    assert error.resolved_at is not None


def test_email_only_leads_are_upserted_and_linked_and_an_invalid_phone_is_never_sent(workspace, fake):
    ok = Lead.objects.create(workspace=workspace, emailbison_lead_id="eb1", email="Ann@Example.com")
    junk_phone = Lead.objects.create(
        workspace=workspace, emailbison_lead_id="eb2", email="bo@example.com", phone_raw="+999 1234"
    )
    nothing = Lead.objects.create(workspace=workspace, emailbison_lead_id="eb3", email="not-an-email")
    run = run_sync(workspace)
    upserts = [r.body for r in fake.requests if r.path == "/contacts/upsert"]
    assert {b["email"] for b in upserts} == {"ann@example.com", "bo@example.com"}
    assert all("phone" not in b for b in upserts)
    assert all(b["locationId"] == workspace.ghl_location_id for b in upserts)
    ok.refresh_from_db()
    junk_phone.refresh_from_db()
    assert len(ok.ghl_contact_id) == 20 and len(junk_phone.ghl_contact_id) == 20
    assert (run.leads_ok, run.leads_skipped) == (2, 1)
    assert set(run.errors) == {"invalid_phone", "invalid_email", "no_contact_details"}
    assert run.errors["no_contact_details"]["leads"] == [nothing.pk]
    codes = set(
        IntegrationError.objects.filter(workspace=workspace, resolved_at__isnull=True).values_list("code", flat=True)
    )
    assert {"invalid_phone", "invalid_email", "no_contact_details"} <= codes


def test_a_valid_phone_with_00_prefix_is_sent_as_e164(workspace, fake, settings):
    settings.DEFAULT_PHONE_REGION = "US"
    lead = Lead.objects.create(workspace=workspace, emailbison_lead_id="eb1", phone_raw="0044 20 7946 0958")
    run_sync(workspace)
    (body,) = [r.body for r in fake.requests if r.path == "/contacts/upsert"]
    assert body["phone"] == "+442079460958"
    lead.refresh_from_db()
    assert lead.ghl_contact_id


def test_a_403_location_error_stops_the_sync_with_nothing_written(workspace, fake):
    fake.forbidden = True
    lead = Lead.objects.create(workspace=workspace, emailbison_lead_id="eb1", email="ann@example.com")
    run = sync_run_start(workspace=workspace, trigger="test")
    with pytest.raises(SyncCannotRun, match="location"):
        sync_run_execute(run_id=run.pk, concurrency=1)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.FAILED and run.finished_at is not None
    assert sent_paths(fake) == ["GET /conversations/search"]  # the credentials check only
    lead.refresh_from_db()
    assert lead.ghl_contact_id == ""
    error = IntegrationError.objects.get(workspace=workspace, code="forbidden_location", resolved_at__isnull=True)
    assert workspace.ghl_token not in error.message

    with pytest.raises(CommandError, match="could not run.*location"):
        call_command("sync_all", "--workspace", workspace.slug, stdout=io.StringIO())

    fake.forbidden = False
    run_sync(workspace)
    error.refresh_from_db()
    assert error.resolved_at is not None


def test_one_lead_failing_does_not_stop_the_others(workspace, fake):
    fake.add_contact(C1, messages=[])
    Lead.objects.create(workspace=workspace, ghl_contact_id=C1)
    missing = Lead.objects.create(workspace=workspace, ghl_contact_id=C2)  # GHL answers 400 for it
    run = run_sync(workspace)
    assert (run.status, run.leads_ok, run.leads_failed) == ("partial", 1, 1)
    assert run.errors["invalid_input"]["leads"] == [missing.pk]


def test_only_one_sync_runs_per_workspace(workspace, other_workspace, fake):
    first = sync_run_start(workspace=workspace, trigger="test")
    with pytest.raises(SyncAlreadyRunning):
        sync_run_start(workspace=workspace, trigger="test")
    with pytest.raises(CommandError, match="already running"):
        call_command("sync_all", "--workspace", workspace.slug, stdout=io.StringIO())
    # The database itself refuses a second running row, whoever writes it.
    with pytest.raises(IntegrityError), transaction.atomic():
        SyncRun.objects.create(workspace=workspace, started_at=timezone.now())
    sync_run_start(workspace=other_workspace, trigger="test")  # other tenants are free
    sync_run_execute(run_id=first.pk, concurrency=1)
    sync_run_start(workspace=workspace, trigger="test")  # finished: a new run may start


def test_command_prints_the_summary_and_the_report_shows_last_sync(workspace, fake):
    fake.add_contact(C1, messages=[msg("m0000000000000000009", "inbound", timezone.now() - dt.timedelta(days=9))])
    Lead.objects.create(workspace=workspace, ghl_contact_id=C1)
    Lead.objects.create(workspace=workspace, ghl_contact_id="bad id")
    out = io.StringIO()
    call_command("sync_all", "--workspace", workspace.slug, "--concurrency", "1", stdout=out)
    summary = out.getvalue()
    assert "ok 1, skipped 1, failed 0 of 2 leads" in summary
    assert "429s 0" in summary and "requests 4" in summary and "wall " in summary

    report_out = io.StringIO()
    call_command("workspace_report", workspace.slug, "--json", stdout=report_out)
    last = json.loads(report_out.getvalue())["last_sync"]
    run = SyncRun.objects.get(workspace=workspace)
    assert last == {
        "status": "succeeded",
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "leads_total": 2,
        "leads_ok": 1,
        "leads_failed": 0,
        "rate_limited": 0,
    }


def test_report_last_sync_is_null_before_any_run(workspace):
    out = io.StringIO()
    call_command("workspace_report", workspace.slug, "--json", stdout=out)
    assert json.loads(out.getvalue())["last_sync"] is None


def test_command_refuses_bad_arguments(workspace):
    with pytest.raises(CommandError, match="--workspace"):
        call_command("sync_all", "--workspace", "nope", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--concurrency"):
        call_command("sync_all", "--workspace", workspace.slug, "--concurrency", "0", stdout=io.StringIO())
    assert not SyncRun.objects.exists()


def test_admin_sync_all_now_queues_a_task_and_refuses_a_second(
    admin_client, workspace, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[tuple[str, list]] = []
    monkeypatch.setattr(services.current_app, "send_task", lambda name, args: sent.append((name, args)))
    url = reverse("admin:workspaces_workspace_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"action": "sync_all_now", "_selected_action": [workspace.pk]}, follow=True)
    run = SyncRun.objects.get(workspace=workspace)
    assert run.trigger == "admin" and run.status == "running"
    assert sent == [("ghl.tasks.ghl_sync_run", [run.pk, 0])]
    assert f"sync #{run.pk} queued" in response.content.decode()

    response = admin_client.post(url, {"action": "sync_all_now", "_selected_action": [workspace.pk]}, follow=True)
    assert "already running" in response.content.decode()
    assert SyncRun.objects.filter(workspace=workspace).count() == 1


def test_sync_task_has_soft_and_hard_limits(settings):
    from ghl.tasks import ghl_sync_run

    assert ghl_sync_run.soft_time_limit == settings.GHL_SYNC_TASK_SOFT_TIME_LIMIT_S
    assert ghl_sync_run.time_limit == settings.GHL_SYNC_TASK_TIME_LIMIT_S
    assert ghl_sync_run.soft_time_limit < ghl_sync_run.time_limit


def test_periodic_sync_is_off_by_default_and_starts_incremental_runs_when_on(workspace, settings, monkeypatch):
    sent: list = []
    monkeypatch.setattr(services.current_app, "send_task", lambda name, args: sent.append((name, args)))
    settings.GHL_SYNC_INTERVAL_S = 0
    assert services.sync_dispatch_periodic() == 0
    settings.GHL_SYNC_INTERVAL_S = 600
    assert services.sync_dispatch_periodic() == 1
    assert SyncRun.objects.get(workspace=workspace).mode == "incremental"
    assert services.sync_dispatch_periodic() == 0  # still running: not started twice


@pytest.mark.django_db(transaction=True)
def test_concurrent_sync_of_many_leads(fake, settings):
    from workspaces.services import workspace_configure

    ws, _ = workspace_configure(
        slug="many", changes={"ghl_location_id": "LOC_MANY_1", "ghl_token": "pit-77777777-2222-3333-4444-555555555555"}
    )
    now = timezone.now()
    for i in range(12):
        contact = f"manycontact{i:012d}"
        fake.add_contact(contact, messages=[msg(f"many{i:016d}", "inbound", now - dt.timedelta(days=5))])
        Lead.objects.create(workspace=ws, ghl_contact_id=contact)
    run = sync_run_start(workspace=ws, trigger="test")
    run = sync_run_execute(run_id=run.pk, concurrency=4)
    assert (run.status, run.leads_ok, run.messages_imported) == ("succeeded", 12, 12)
    assert Message.objects.filter(workspace=ws).count() == 12


def test_an_interrupted_command_does_not_leave_its_run_running(workspace, fake, monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ghl.management.commands.sync_all.sync_run_execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        call_command("sync_all", "--workspace", workspace.slug, stdout=io.StringIO())
    run = SyncRun.objects.get(workspace=workspace)
    assert (run.status, run.error) == ("failed", "interrupted")
    sync_run_start(workspace=workspace, trigger="test")  # free to start again


def test_the_sync_task_runs_a_queued_run_to_the_end(workspace, fake):
    from ghl.tasks import ghl_sync_run

    fake.add_contact(C1, messages=[msg("t0000000000000000001", "outbound", timezone.now() - dt.timedelta(days=2))])
    Lead.objects.create(workspace=workspace, ghl_contact_id=C1)
    run = sync_run_start(workspace=workspace, trigger="admin")
    ghl_sync_run.apply(args=[run.pk, 0])
    run.refresh_from_db()
    assert (run.status, run.leads_ok, run.messages_imported) == ("succeeded", 1, 1)
    ghl_sync_run.apply(args=[run.pk, 0])  # redelivered: the finished run is left alone
    run.refresh_from_db()
    assert run.leads_ok == 1 and run.shards_done == 1
