"""The ``classify_and_draft`` task's service: one inbound message, under its work claim,
loaded in one query, classified, and answered with a draft when the lead is warm.

Every path ends with the draft ``ready``, ``failed``/``skipped`` (with a ``failure_reason``)
or ``superseded``: never left ``pending``/``generating``.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback

import sentry_sdk
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection

from core.sentry import ReportedError
from core.sql import ModelColumns, table
from drafts import llm
from drafts.claims import message_work_claim
from drafts.models import Draft, DraftStatus
from drafts.quoting import reply_text
from drafts.run import DraftRun
from drafts.services.classify import classification_failed, classification_store, message_classify
from drafts.services.generation import draft_generate
from drafts.services.lifecycle import OPEN_STATUSES, draft_fail_open, draft_finish, draft_insert
from drafts.services.onecall import message_tag_and_reply
from leads.models import DRAFTABLE_SENTIMENTS, Lead
from messaging.models import Direction, Message
from workspaces.models import SECRET_FIELDS, IntegrationError, Workspace

logger = logging.getLogger(__name__)


def task_chain_deadline(*, started: float | None = None) -> llm.Deadline:
    """The time the whole classify+draft chain may take, counted from the task's start
    (``started``, ``time.monotonic()``; now by default): the soft limit minus a margin to save."""
    soft = float(settings.DRAFT_TASK_SOFT_TIME_LIMIT_S)
    return llm.Deadline(max(0.5, soft - max(1.0, soft * 0.1)), start=started)


@functools.cache
def _work_columns() -> tuple[ModelColumns, ModelColumns, ModelColumns]:
    # The workspace's credentials are not needed here: not selected, not decrypted (deferred).
    return ModelColumns(Message, "m"), ModelColumns(Lead, "l"), ModelColumns(Workspace, "w", exclude=SECRET_FIELDS)


def _run_load(message_id: int, *, started: float, entered: float) -> DraftRun | None:
    """The run of an inbound message: the message with its lead and workspace, its live draft's
    id and whether the workspace has open OpenAI IntegrationErrors, in one query."""
    m, lead, ws = _work_columns()
    sql = (
        f"SELECT {m.sql}, {lead.sql}, {ws.sql},"  # noqa: S608 (identifiers from _meta; values are parameters)
        f" (SELECT d.id FROM {table(Draft)} d WHERE d.message_id = m.id AND d.workspace_id = m.workspace_id"
        "   AND d.status <> %s LIMIT 1),"
        f" EXISTS (SELECT 1 FROM {table(IntegrationError)} e WHERE e.workspace_id = m.workspace_id"
        "   AND e.source = %s AND e.resolved_at IS NULL)"
        f" FROM {table(Message)} m JOIN {table(Lead)} l ON l.id = m.lead_id AND l.workspace_id = m.workspace_id"
        f" JOIN {table(Workspace)} w ON w.id = m.workspace_id"
        " WHERE m.id = %s AND m.direction = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [DraftStatus.SUPERSEDED, IntegrationError.Source.OPENAI, message_id, Direction.INBOUND])
        row = cursor.fetchone()
    if row is None:
        return None
    a, b, c = len(m), len(m) + len(lead), len(m) + len(lead) + len(ws)
    message = m.build(row[:a])
    message.lead, message.workspace = lead.build(row[a:b]), ws.build(row[b:c])
    message.lead.workspace = message.workspace
    return DraftRun(
        message=message, started=started, entered=entered, live_draft_id=row[c], openai_errors_open=bool(row[c + 1])
    )


def message_classify_and_draft(*, message_id: int, started: float | None = None) -> Draft | None:
    """Classify one inbound message and, for warm leads, write its reply draft. Idempotent.

    ``started`` (``time.monotonic()``) is when the task started (the worker's ``task_prerun``);
    the draft's ``usage.timing.total_ms`` counts from there to the final write. Whatever
    interrupts the run, the message's open draft is failed while the claim is still held (so
    never a draft another worker has taken over): the soft time limit (reason ``timeout``,
    swallowed: the task is done) or an unexpected exception (``unexpected``, re-raised).
    """
    entered = time.monotonic()
    started = entered if started is None else started
    with message_work_claim(message_id) as acquired:
        if not acquired:
            logger.info("classify_and_draft: message %s is being handled by another worker", message_id)
            return None
        try:
            return _classify_and_draft_locked(message_id=message_id, started=started, entered=entered)
        except SoftTimeLimitExceeded:
            _fail_open_quietly(message_id=message_id, reason="timeout", error="the task's soft time limit was reached")
            return None
        except Exception as exc:  # noqa: BLE001 - ends the open draft, reported, re-raised text-free
            # Type and stack only: an exception's text may quote the message. Sentry gets the
            # original (its text dropped by the scrubber); Celery sees a text-free ReportedError.
            logger.error(
                "classify_and_draft(%s) failed: %s\n%s",
                message_id,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            sentry_sdk.capture_exception(exc)
            _fail_open_quietly(
                message_id=message_id, reason="unexpected", error=f"unexpected error: {type(exc).__name__}"
            )
            raise ReportedError(f"classify_and_draft({message_id}) failed: {type(exc).__name__}") from None


def _fail_open_quietly(*, message_id: int, reason: str, error: str) -> None:
    """``draft_fail_open`` that never hides the exception being handled (the database may be
    what failed; then the sweeper ends the draft later)."""
    try:
        draft_fail_open(message_id=message_id, failure_reason=reason, error=error)
    except Exception as exc:  # noqa: BLE001
        logger.error("classify_and_draft(%s): could not fail the open draft: %s", message_id, type(exc).__name__)


def _classify_and_draft_locked(*, message_id: int, started: float, entered: float) -> Draft | None:
    deadline = task_chain_deadline(started=started)
    run = _run_load(message_id, started=started, entered=entered)
    if run is None:
        logger.info("classify_and_draft: no inbound message %s", message_id)
        return None
    message = run.message
    llm.calls_ordered_by(message.created_at.timestamp())  # rate-limit slots: oldest inbound first
    draft = None
    if run.live_draft_id is not None:
        draft = Draft.objects.get(pk=run.live_draft_id, workspace_id=message.workspace_id)
        if draft.status not in OPEN_STATUSES:
            return draft  # done before: a second run stops here
    if message.classified_at is None and draft is None:
        # One call for the tag and the reply when no fast path decides (drafts/services/onecall.py);
        # None: not applicable or it did not work, and the two calls below follow.
        one_call = message_tag_and_reply(run=run, deadline=deadline)
        if one_call is not None:
            run.classification, run.first_answer = one_call
    if message.classified_at is None:
        classify_deadline = llm.Deadline(min(deadline.remaining() * 0.4, 2 * settings.OPENAI_CLASSIFY_TIMEOUT_S))
        try:
            run.classification = message_classify(message=message, deadline=classify_deadline, run=run)
        except SoftTimeLimitExceeded:
            # The LLM's tag if it had answered; else like any failed classification.
            tag, provider_counts = run.tag_to_store or (None, True)
            if tag is None:
                tag, _ = classification_failed(
                    message,
                    text=reply_text(message.body),
                    code="timeout",
                    detail="the task's soft time limit was reached",
                )
            if tag is not None:
                classification_store(run=run, tag=tag, provider_counts=provider_counts)
            raise
    # Fresh lead state (a concurrent opt-out may have blacklisted it): classification just wrote
    # it with a conditional update (or read it back); otherwise read it now.
    lead = (
        message.lead
        if run.classification is not None
        else Lead.objects.get(pk=message.lead_id, workspace_id=message.workspace_id)
    )
    draftable = message.sentiment in DRAFTABLE_SENTIMENTS and not lead.is_blacklisted
    inserted = False
    if draft is None:
        if not draftable:
            return None  # no draft for this tag, nor ever for a blacklisted lead
        if run.has_newer_inbound():
            return None  # the newer message's draft answers the lead (this one's transcript included)
        # Inserted straight in ``generating``: this run generates it now.
        draft, inserted = draft_insert(message=message, status=DraftStatus.GENERATING)
        if draft.status not in OPEN_STATUSES:
            return draft
    elif not draftable:
        draft_finish(
            draft=draft,
            status=DraftStatus.SKIPPED,
            failure_reason="blacklisted" if lead.is_blacklisted else "not_draftable",
            error="the lead's tag no longer gets a draft",
        )
        return draft
    message.lead = lead
    return draft_generate(draft=draft, run=run, deadline=deadline, already_generating=inserted)
