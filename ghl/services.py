"""GHL sync: ``sync_all`` of a workspace's leads, one ``SyncRun`` per run.

For every lead of the workspace:
- with a GHL contact id: refresh the contact's fields (name, email, phone, DND)
  and import the conversations' missing messages (idempotent by GHL message id);
- without one but with a phone or an email: upsert the contact to GHL and link it;
- a contact id that cannot be a GHL id is skipped and recorded, never sent.

Imported messages are ``Origin.SYNC``. Only a conversation whose latest message
is an unanswered inbound inside the sweeper's window gets its classify+draft
work (after commit), as if its webhook had arrived: history never starts drafts.

A run starts with ``sync_run_start`` (one running per workspace, enforced by a
partial unique constraint) and executes in ``sync_run_execute``, once per shard
(one shard per worker process taking part; the command runs one). Per-lead
failures are summarised on the run and recorded as IntegrationErrors grouped by
code; codes a finished run did not see are resolved.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Mod
from django.utils import timezone

from core.http import Deadline, ProviderError
from core.redaction import redact_text
from core.timeparse import safe_zoneinfo
from ghl.client import (
    ContactUpsert,
    GhlAuthError,
    GhlClient,
    GhlContact,
    GhlForbiddenLocation,
    GhlMessage,
    contact_id_clean,
    error_kind,
    redact_pii,
)
from ghl.models import SyncRun
from ghl.normalize import email_clean, phone_to_e164
from leads.models import Lead
from messaging.models import Channel, Direction, Message, Origin
from messaging.selectors import message_in_sweep_window
from messaging.serializers import ParsedMessage
from messaging.services import message_ingest, message_work_enqueue
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

# Codes a run resolves when it finishes without seeing them again.
LEAD_ERROR_CODES = (
    "invalid_contact_id",
    "invalid_phone",
    "invalid_email",
    "no_contact_details",
    "contact_conflict",
    "message_without_date",
    "forbidden_location",
    "auth_failed",
    "not_found",
    "invalid_input",
    "rate_limited",
    "pit_context",
    "server_error",
    "timeout",
    "connection_failed",
    "bad_response",
    "provider_error",
    "ghl_error",
    "internal_error",
)
RUN_ERROR_CODES = ("auth_failed", "forbidden_location", "sync_not_configured", "enqueue_failed")
ERROR_LEADS_KEPT = 20
STALE_RUN_GRACE = timedelta(minutes=5)


class SyncAlreadyRunning(Exception):
    """Another sync of this workspace is running (the database says so)."""


class SyncCannotRun(Exception):
    """The sync as a whole cannot run (no credentials, bad token, location refused)."""

    def __init__(self, message: str, *, code: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class LeadProblem:
    code: str
    message: str


@dataclass(frozen=True)
class LeadSyncOutcome:
    lead_id: int
    status: str  # ok | skipped | failed
    problems: tuple[LeadProblem, ...] = ()
    messages_imported: int = 0
    work_enqueued: int = 0


@dataclass
class ShardTotals:
    """What one shard did (summed into its SyncRun at the end)."""

    ok: int = 0
    skipped: int = 0
    failed: int = 0
    messages_imported: int = 0
    requests: int = 0
    rate_limited: int = 0
    errors: dict[str, dict] = field(default_factory=dict)

    def add(self, outcome: LeadSyncOutcome) -> None:
        if outcome.status == "ok":
            self.ok += 1
        elif outcome.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        self.messages_imported += outcome.messages_imported
        for problem in outcome.problems:
            _merge_error(self.errors, problem.code, count=1, message=problem.message, leads=[outcome.lead_id])


def _merge_error(errors: dict[str, dict], code: str, *, count: int, message: str, leads: list[int]) -> None:
    entry = errors.setdefault(code, {"count": 0, "message": "", "leads": []})
    entry["count"] += count
    entry["message"] = message or entry["message"]
    entry["leads"] = sorted(set(entry["leads"]) | set(leads))[:ERROR_LEADS_KEPT]


# --- starting a run ---------------------------------------------------------------------


def _abandon_stale_runs(*, workspace_id: int) -> None:
    """A run still "running" past the task's hard limit died with its worker: mark it failed."""
    limit = timedelta(seconds=settings.GHL_SYNC_TASK_TIME_LIMIT_S) + STALE_RUN_GRACE
    SyncRun.objects.filter(
        workspace_id=workspace_id, status=SyncRun.Status.RUNNING, started_at__lt=timezone.now() - limit
    ).update(status=SyncRun.Status.FAILED, finished_at=timezone.now(), error="abandoned: its worker stopped")


def sync_run_start(
    *, workspace: Workspace, mode: str = SyncRun.Mode.FULL, trigger: str = "", shards: int = 1
) -> SyncRun:
    """Create the workspace's running SyncRun; :class:`SyncAlreadyRunning` when one runs already."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    _abandon_stale_runs(workspace_id=workspace.pk)
    try:
        with transaction.atomic():
            return SyncRun.objects.create(
                workspace=workspace,
                mode=mode,
                trigger=trigger[:32],
                shards=shards,
                started_at=timezone.now(),
                leads_total=Lead.objects.filter(workspace=workspace).count(),
            )
    except IntegrityError as exc:
        raise SyncAlreadyRunning(f"a sync of workspace {workspace.slug} is already running") from exc


# --- executing a run --------------------------------------------------------------------


def _client_for(workspace: Workspace) -> GhlClient:
    return GhlClient(token=workspace.ghl_token, location_id=workspace.ghl_location_id)


def _preflight(*, workspace: Workspace) -> tuple[int, int]:
    """One cheap authenticated call before any lead is touched: a bad token or a refused location
    stops the whole sync with nothing half-written. Returns (requests, 429s)."""
    if not (workspace.ghl_location_id and workspace.ghl_token):
        raise SyncCannotRun(
            f"workspace {workspace.slug} has no GHL location id and token (configure_workspace"
            " --ghl-location-id --ghl-token)",
            code="sync_not_configured",
        )
    with _client_for(workspace) as client:
        try:
            client.conversations_search(limit=1, deadline=Deadline(settings.GHL_SYNC_LEAD_DEADLINE_S))
        except GhlForbiddenLocation as exc:
            raise SyncCannotRun(
                f"GHL refused location {workspace.ghl_location_id}: the token does not have access to it"
                f" ({exc.message})",
                code="forbidden_location",
            ) from exc
        except GhlAuthError as exc:
            raise SyncCannotRun(f"GHL refused the workspace's token ({exc.message})", code="auth_failed") from exc
        return client.requests_sent, client.rate_limited_answers


def sync_run_execute(
    *,
    run_id: int,
    shard: int = 0,
    concurrency: int | None = None,
    on_lead: Callable[[LeadSyncOutcome], None] | None = None,
) -> SyncRun:
    """Sync this shard's leads of the run (``lead.id % shards == shard``), ``concurrency`` at a time.

    Returns the run as it stands after this shard (finished when it was the last shard).
    Raises :class:`SyncCannotRun` (the run marked failed, no lead touched) when the sync as a
    whole cannot run.
    """
    run = SyncRun.objects.select_related("workspace").get(pk=run_id)
    workspace = run.workspace
    if run.status != SyncRun.Status.RUNNING:
        return run
    concurrency = max(1, concurrency or settings.SYNC_ALL_CONCURRENCY)
    totals = ShardTotals()
    try:
        totals.requests, totals.rate_limited = _preflight(workspace=workspace)
    except SyncCannotRun as exc:
        _run_fail(run=run, code=exc.code, message=str(exc))
        raise
    except ProviderError as exc:
        message = f"GHL could not be reached: {exc}"
        _run_fail(run=run, code=error_kind(exc), message=message)
        raise SyncCannotRun(message, code=error_kind(exc)) from exc
    integration_error_resolve(workspace=workspace, source=IntegrationError.Source.GHL, codes=RUN_ERROR_CODES)

    leads = Lead.objects.filter(workspace=workspace)
    if run.shards > 1:
        leads = leads.annotate(shard=Mod("id", run.shards)).filter(shard=shard)
    lead_ids = list(leads.order_by("id").values_list("id", flat=True))
    incremental = run.mode == SyncRun.Mode.INCREMENTAL
    lock = threading.Lock()

    def record(outcome: LeadSyncOutcome) -> None:
        with lock:
            totals.add(outcome)
        if on_lead is not None:
            on_lead(outcome)

    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for lead_id in lead_ids:
        work.put(lead_id)

    def worker(in_thread: bool) -> None:
        client = _client_for(workspace)
        try:
            while True:
                try:
                    lead_id = work.get_nowait()
                except queue.Empty:
                    return
                record(lead_sync(client=client, workspace=workspace, lead_id=lead_id, incremental=incremental))
        finally:
            with lock:
                totals.requests += client.requests_sent
                totals.rate_limited += client.rate_limited_answers
            client.close()
            if in_thread:
                connection.close()

    if concurrency == 1 or len(lead_ids) <= 1:
        worker(False)
    else:
        threads = [threading.Thread(target=worker, args=(True,), daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return _run_shard_done(run_id=run.pk, totals=totals)


def sync_run_abort(*, run_id: int, reason: str) -> None:
    """End a run that stops before finishing (the command interrupted): the next may start at once."""
    SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.RUNNING).update(
        status=SyncRun.Status.FAILED, finished_at=timezone.now(), error=reason[:2000]
    )


def _run_fail(*, run: SyncRun, code: str, message: str) -> None:
    message = redact_text(message, extra_secrets=[run.workspace.ghl_token])
    SyncRun.objects.filter(pk=run.pk).update(
        status=SyncRun.Status.FAILED, finished_at=timezone.now(), error=message[:2000]
    )
    integration_error_record(
        workspace=run.workspace,
        source=IntegrationError.Source.GHL,
        code=code,
        message=message,
        context={"sync_run": run.pk},
        secrets=[run.workspace.ghl_token],
    )


@transaction.atomic
def _run_shard_done(*, run_id: int, totals: ShardTotals) -> SyncRun:
    """Add a shard's totals to its run; the last shard finishes the run and settles the errors."""
    run = SyncRun.objects.select_for_update().select_related("workspace").get(pk=run_id)
    errors = dict(run.errors or {})
    for code, entry in totals.errors.items():
        _merge_error(errors, code, count=entry["count"], message=entry["message"], leads=entry["leads"])
    run.errors = errors
    run.leads_ok = F("leads_ok") + totals.ok
    run.leads_skipped = F("leads_skipped") + totals.skipped
    run.leads_failed = F("leads_failed") + totals.failed
    run.messages_imported = F("messages_imported") + totals.messages_imported
    run.requests = F("requests") + totals.requests
    run.rate_limited = F("rate_limited") + totals.rate_limited
    run.shards_done = F("shards_done") + 1
    run.save()
    run.refresh_from_db()
    if run.shards_done >= run.shards and run.status == SyncRun.Status.RUNNING:
        run.status = SyncRun.Status.PARTIAL if run.leads_failed else SyncRun.Status.SUCCEEDED
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])
        _settle_errors(run=run)
    return run


def _settle_errors(*, run: SyncRun) -> None:
    """One IntegrationError per code this run saw; the codes it did not see are resolved."""
    seen = set(run.errors)
    for code, entry in sorted(run.errors.items()):
        integration_error_record(
            workspace=run.workspace,
            source=IntegrationError.Source.GHL,
            code=code,
            message=f"sync: {entry['count']} lead(s): {entry['message']}",
            context={"sync_run": run.pk, "leads": entry["leads"]},
            secrets=[run.workspace.ghl_token],
        )
    clean = [code for code in LEAD_ERROR_CODES if code not in seen]
    integration_error_resolve(workspace=run.workspace, source=IntegrationError.Source.GHL, codes=clean)


# --- one lead ----------------------------------------------------------------------------


def lead_sync(*, client: GhlClient, workspace: Workspace, lead_id: int, incremental: bool = False) -> LeadSyncOutcome:
    """Sync one lead; never raises for a GHL or data problem (it is the outcome)."""
    deadline = Deadline(settings.GHL_SYNC_LEAD_DEADLINE_S)
    try:
        lead = Lead.objects.get(pk=lead_id, workspace=workspace)
        if lead.ghl_contact_id:
            contact_id = contact_id_clean(lead.ghl_contact_id)
            if contact_id is None:
                return LeadSyncOutcome(
                    lead_id=lead_id,
                    status="skipped",
                    problems=(LeadProblem("invalid_contact_id", "contact id is not a GHL id: not sent"),),
                )
            return _lead_sync_contact(
                client=client, lead=lead, contact_id=contact_id, incremental=incremental, deadline=deadline
            )
        return _lead_link_contact(client=client, lead=lead, deadline=deadline)
    except ProviderError as exc:
        return LeadSyncOutcome(
            lead_id=lead_id, status="failed", problems=(LeadProblem(error_kind(exc), redact_pii(str(exc))),)
        )
    except Exception as exc:  # one lead's failure never stops the others
        logger.exception("sync of lead %s failed", lead_id)
        return LeadSyncOutcome(
            lead_id=lead_id, status="failed", problems=(LeadProblem("internal_error", type(exc).__name__),)
        )


def _lead_link_contact(*, client: GhlClient, lead: Lead, deadline: Deadline) -> LeadSyncOutcome:
    """A lead without a GHL contact (e.g. from EmailBison): upsert it to GHL and link it."""
    problems: list[LeadProblem] = []
    phone, phone_problem = phone_to_e164(lead.phone_e164 or lead.phone_raw)
    if phone_problem:
        problems.append(LeadProblem("invalid_phone", f"{phone_problem}: left out of the GHL contact"))
    email, email_problem = email_clean(lead.email)
    if email_problem:
        problems.append(LeadProblem("invalid_email", f"{email_problem}: left out of the GHL contact"))
    if not (phone or email):
        problems.append(LeadProblem("no_contact_details", "no valid phone or email to create a GHL contact"))
        return LeadSyncOutcome(lead_id=lead.pk, status="skipped", problems=tuple(problems))
    result = client.contact_upsert(
        contact=ContactUpsert(first_name=lead.first_name, last_name=lead.last_name, email=email, phone=phone),
        deadline=deadline,
    )
    try:
        # Only while still unlinked: a webhook may have linked the lead meanwhile (its id stays).
        with transaction.atomic():
            Lead.objects.filter(pk=lead.pk, workspace_id=lead.workspace_id, ghl_contact_id="").update(
                ghl_contact_id=result.contact_id, updated_at=timezone.now()
            )
    except IntegrityError:
        problems.append(LeadProblem("contact_conflict", "GHL answered with a contact another lead is linked to"))
        return LeadSyncOutcome(lead_id=lead.pk, status="failed", problems=tuple(problems))
    return LeadSyncOutcome(lead_id=lead.pk, status="ok", problems=tuple(problems))


def _lead_sync_contact(
    *, client: GhlClient, lead: Lead, contact_id: str, incremental: bool, deadline: Deadline
) -> LeadSyncOutcome:
    contact = client.contact_get(contact_id=contact_id, deadline=deadline)
    conversations = client.conversations_search(contact_id=contact_id, deadline=deadline)
    fetched: list[list[GhlMessage]] = []
    for conversation in conversations:
        messages: list[GhlMessage] = []
        for page in client.conversation_messages_pages(conversation_id=conversation.id, deadline=deadline):
            messages.extend(page)
            if incremental and page and _all_known(workspace_id=lead.workspace_id, messages=page):
                break
        fetched.append(messages)
    return _lead_apply(lead=lead, contact=contact, conversations=fetched)


def _all_known(*, workspace_id: int, messages: list[GhlMessage]) -> bool:
    ids = {m.id for m in messages}
    known = Message.objects.filter(workspace_id=workspace_id, ghl_message_id__in=ids).count()
    return known >= len(ids)


def _contact_changes(*, lead: Lead, contact: GhlContact) -> tuple[dict, list[LeadProblem]]:
    problems: list[LeadProblem] = []
    changes: dict = {"sms_dnd": contact.sms_dnd}
    if contact.first_name:
        changes["first_name"] = contact.first_name
    if contact.last_name:
        changes["last_name"] = contact.last_name
    email, email_problem = email_clean(contact.email)
    if email:
        changes["email"] = email
    elif email_problem:
        problems.append(LeadProblem("invalid_email", f"GHL contact email: {email_problem}"))
    phone, phone_problem = phone_to_e164(contact.phone)
    if phone:
        changes["phone_e164"] = phone
        changes["phone_raw"] = contact.phone[:64]
    elif phone_problem:
        problems.append(LeadProblem("invalid_phone", f"GHL contact phone: {phone_problem}"))
        changes["phone_raw"] = contact.phone[:64]
    if contact.timezone and safe_zoneinfo(contact.timezone) is not None:
        changes["timezone"] = contact.timezone
    return {k: v for k, v in changes.items() if getattr(lead, k) != v}, problems


@transaction.atomic
def _lead_apply(*, lead: Lead, contact: GhlContact, conversations: list[list[GhlMessage]]) -> LeadSyncOutcome:
    """Write what GHL said about the lead in one transaction; enqueue work after commit."""
    changes, problems = _contact_changes(lead=lead, contact=contact)
    if changes:
        Lead.objects.filter(pk=lead.pk, workspace_id=lead.workspace_id).update(**changes, updated_at=timezone.now())
        for key, value in changes.items():
            setattr(lead, key, value)
    imported = 0
    enqueued = 0
    undated = 0
    now = timezone.now()
    for messages in conversations:
        kept = [m for m in messages if m.channel and m.direction]
        undated += sum(1 for m in kept if m.sent_at is None)
        dated = sorted((m for m in kept if m.sent_at is not None), key=lambda m: m.sent_at)
        latest: Message | None = None
        for item in dated:
            message, created = message_ingest(
                workspace_id=lead.workspace_id,
                lead=lead,
                parsed=ParsedMessage(
                    channel=Channel.SMS if item.channel == "sms" else Channel.EMAIL,
                    direction=item.direction,
                    body=item.body,
                    subject=item.subject,
                    sent_at=item.sent_at,
                    ghl_message_id=item.id,
                    ghl_conversation_id=item.conversation_id,
                    origin=Origin.SYNC,
                ),
            )
            imported += int(created)
            latest = message
        if latest is not None and _needs_work(latest, now=now):
            transaction.on_commit(
                partial(message_work_enqueue, message_id=latest.pk, workspace_id=lead.workspace_id), robust=True
            )
            enqueued += 1
    if undated:
        problems.append(LeadProblem("message_without_date", f"{undated} message(s) without a date: not imported"))
    return LeadSyncOutcome(
        lead_id=lead.pk, status="ok", problems=tuple(problems), messages_imported=imported, work_enqueued=enqueued
    )


def _needs_work(message: Message, *, now) -> bool:
    """The conversation's latest message is an unanswered inbound, received within the sweeper's
    window, whose work nobody started (a webhook would have)."""
    return (
        message.direction == Direction.INBOUND
        and message.work_enqueued_at is None
        and message.classified_at is None
        and message_in_sweep_window(message, now=now)
    )


# --- queued runs (admin, beat) ------------------------------------------------------------

SYNC_TASK_NAME = "ghl.tasks.ghl_sync_run"


def _enqueue_shards(*, run_id: int, shards: int) -> None:
    for shard in range(shards):
        current_app.send_task(SYNC_TASK_NAME, args=[run_id, shard])


@transaction.atomic
def sync_run_start_queued(
    *, workspace: Workspace, trigger: str, mode: str = SyncRun.Mode.FULL, shards: int = 1
) -> SyncRun:
    """Start a run and hand its shards to Celery workers after commit (``SyncAlreadyRunning``
    when one runs). Should the broker refuse, the run fails now instead of blocking the next."""
    run = sync_run_start(workspace=workspace, mode=mode, trigger=trigger, shards=shards)

    def enqueue() -> None:
        try:
            _enqueue_shards(run_id=run.pk, shards=shards)
        except Exception as exc:  # noqa: BLE001 - any broker failure ends the run
            _run_fail(run=run, code="enqueue_failed", message=f"could not queue the sync: {type(exc).__name__}")

    transaction.on_commit(enqueue)
    return run


def sync_dispatch_periodic() -> int:
    """Beat's incremental sync: one queued run per active GHL workspace not syncing already.
    Does nothing while ``GHL_SYNC_INTERVAL_S`` is 0 (the default). Returns how many started."""
    if not settings.GHL_SYNC_INTERVAL_S:
        return 0
    started = 0
    for workspace in sync_due_workspaces():
        try:
            sync_run_start_queued(workspace=workspace, trigger="beat", mode=SyncRun.Mode.INCREMENTAL)
        except SyncAlreadyRunning:
            continue
        started += 1
    return started


def sync_due_workspaces() -> list[Workspace]:
    """Active workspaces with GHL credentials."""
    return [ws for ws in Workspace.objects.filter(is_active=True).exclude(ghl_location_id="") if ws.ghl_token]
