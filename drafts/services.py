"""Writes of the drafts app: classify inbound messages and write reply drafts.

Entry point for the Celery task: ``message_classify_and_draft(message_id=...)``.
Every path ends with the draft ``ready``, ``failed``/``skipped`` (with a
``failure_reason``) or ``superseded``: never left ``pending``/``generating``.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sentry_sdk
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Q, Subquery, Value, When
from django.utils import timezone

from availability.selectors import available_slots_for_lead
from core.sentry import ReportedError
from core.sql import ModelColumns, table, update_rows
from drafts import llm
from drafts.claims import message_work_claim
from drafts.classification import classify_fast, classify_with_llm, opt_out_suspected, prompt_template
from drafts.models import Draft, DraftStatus
from drafts.onecall import message_tag_and_reply
from drafts.quoting import reply_text
from drafts.selectors import drafts_stale_open
from leads.models import (
    DRAFTABLE_SENTIMENTS,
    MACHINE_REPLACEABLE_SENTIMENTS,
    MACHINE_REPLY_SENTIMENTS,
    Lead,
    LeadStatus,
    Sentiment,
)
from leads.services import lead_open_sql, lead_sentiment_set
from messaging.models import SEND_CLAIMED_DELIVERIES, Channel, Delivery, Direction, Message
from messaging.selectors import (
    SWEEP_MAX_ENQUEUES,
    message_has_newer_inbound,
    message_in_sweep_window,
    newer_inbound_sql,
    sent_at_param,
)
from messaging.services import message_work_enqueue
from workspaces.models import SECRET_FIELDS, IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

DRAFT_PROMPT_VERSION = "draft-v1"
SMS_MAX_CHARS = 320
# Plain per-channel output budgets (visible + reasoning tokens), before the multiplier.
PLAIN_OUTPUT_TOKENS = {Channel.SMS: 200, Channel.EMAIL: 450}
# Extra budget per input token: longer conversations get longer answers.
INPUT_TOKEN_BUDGET_SHARE = 0.1
OPEN_STATUSES = (DraftStatus.PENDING, DraftStatus.GENERATING)
# IntegrationError codes (source ``openai``): ``classify_<LLMError.code>`` and
# ``draft_<failure_reason>``; a success resolves every open code of its prefix.
CLASSIFY_ERROR_PREFIX = "classify_"
DRAFT_ERROR_PREFIX = "draft_"


# --- Deadlines ---------------------------------------------------------------


def task_chain_deadline(*, started: float | None = None) -> llm.Deadline:
    """The time the whole classify+draft chain may take, counted from the task's start
    (``started``, ``time.monotonic()``; now by default): the soft limit minus a margin to save."""
    soft = float(settings.DRAFT_TASK_SOFT_TIME_LIMIT_S)
    return llm.Deadline(max(0.5, soft - max(1.0, soft * 0.1)), start=started)


# --- Classification ----------------------------------------------------------


@dataclass
class ClassifyResult:
    tag: str
    source: str
    calls: list[llm.LLMCall] = field(default_factory=list)


def _conversation(*, message: Message, limit: int) -> list[dict[str, str]]:
    """The lead's last ``limit`` messages up to (excluding) ``message``, oldest first (read once per run)."""
    cached = getattr(message, "_conversation_cache", None)
    if cached is not None and cached[0] == limit:
        return cached[1]
    sent_at = sent_at_param(message)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT direction, body FROM {table(Message)} WHERE workspace_id = %s AND lead_id = %s"  # noqa: S608
            " AND (sent_at < %s OR (sent_at = %s AND id < %s)) AND delivery <> %s"  # a failed send never reached them
            " ORDER BY sent_at DESC, id DESC LIMIT %s",
            [message.workspace_id, message.lead_id, sent_at, sent_at, message.pk, Delivery.FAILED, max(0, limit)],
        )
        rows = cursor.fetchall()
    # A lead's email quotes the history the transcript already holds: keep only its new text.
    result = [
        {"direction": d, "text": (reply_text(b or "") if d == Direction.INBOUND else (b or ""))[:2000]}
        for d, b in reversed(rows)
    ]
    message._conversation_cache = (limit, result)
    return result


def message_classify(*, message: Message, deadline: llm.Deadline) -> ClassifyResult:
    """Tag an inbound message (regex fast paths, then the LLM), store it, update the lead.

    LLM failure falls back to ``Neutral`` (``Interested`` when the provider
    flagged the reply as interested) and records an IntegrationError.
    """
    calls: list[llm.LLMCall] = []
    text = reply_text(message.body)  # the lead's new text, once (both steps below read only it)
    tag = classify_fast(body=text, subject=message.subject, channel=message.channel)
    source = "regex"
    if tag is None and message.lead.is_blacklisted:
        # An opted-out lead never gets a draft: a paid LLM call could change nothing.
        tag, source = Sentiment.NEUTRAL, "blacklisted_lead"
    if tag is None:
        try:
            outcome = classify_with_llm(
                body=text[:8000],
                subject=message.subject,
                channel=message.channel,
                context=_conversation(message=message, limit=settings.DRAFT_CONTEXT_MESSAGES),
                deadline=deadline,
            )
            tag, source, calls = outcome.tag, "llm", outcome.calls
            if _openai_errors_may_be_open(message):
                integration_error_resolve(
                    workspace=message.workspace_id, source="openai", code_prefix=CLASSIFY_ERROR_PREFIX
                )
        except llm.LLMError as exc:
            calls.extend(exc.all_calls())
            tag, source = _classification_failed(message, text=text, code=exc.code, detail=str(exc))
            if tag is None:
                return ClassifyResult(tag="", source=source, calls=calls)
        # EmailBison's own interest flag wins unless the text said something specific.
        if message.provider_interested and tag == Sentiment.NEUTRAL:
            tag, source = Sentiment.INTERESTED, "provider"
    # A blacklisted lead's message is not classified at all: no flag makes it warm.
    provider_counts = source != "blacklisted_lead"
    message._tag_to_store = (tag, provider_counts)  # stored even if the soft limit interrupts the writes
    stored = _classification_store(message=message, tag=tag, provider_counts=provider_counts)
    if stored != tag:
        tag, source = stored, "provider"
    return ClassifyResult(tag=str(tag), source=source, calls=calls)


# The name for the classification step.
classify_message = message_classify


DEFERRED_OUTCOME = "it may be an opt-out: left unclassified, retried by the sweeper"
FALLBACK_OUTCOME = "message tagged by fallback"
# LLM failures a later try may not meet; the others (auth, config, bad request) would repeat.
TRANSIENT_LLM_CODES = frozenset(
    {"timeout", "rate_limited", "server_error", "connection_error", "deadline", "max_output_tokens", "invalid_output"}
)
# Not under the ``classify_`` prefix: the next good classification does not close it, an operator does.
OPT_OUT_BY_FALLBACK_CODE = "opt_out_by_fallback"


def _fallback_tag(message: Message) -> str:
    """The tag of a message the LLM could not classify (and that has no opt-out words):
    ``Interested`` when the provider flagged it, else ``Neutral``."""
    return Sentiment.INTERESTED if message.provider_interested else Sentiment.NEUTRAL


def _classification_failed(message: Message, *, text: str, code: str, detail: str) -> tuple[str | None, str]:
    """(tag, source) for a message the LLM could not classify; the IntegrationError is recorded.

    Opt-out words the fast path left to the LLM (a warm cue beside them): while the failure is
    transient and the sweeper will enqueue the message again, it stays unclassified (tag None,
    source ``deferred``): neither a final ``Blacklist`` nor a warm tag on a guess. Once no retry
    is left (or the failure would repeat) the lead is blacklisted as a precaution, and an
    IntegrationError that only an operator closes names the message to review. Otherwise the
    fallback tag (``_fallback_tag``).
    """
    if not opt_out_suspected(text):
        _classify_error_record(message, code=code, detail=detail)
        return _fallback_tag(message), "fallback"
    retries_left = message.work_enqueue_count < SWEEP_MAX_ENQUEUES and message_in_sweep_window(
        message, now=timezone.now()
    )
    if code in TRANSIENT_LLM_CODES and retries_left:
        _classify_error_record(message, code=code, detail=detail, outcome=DEFERRED_OUTCOME)
        return None, "deferred"
    integration_error_record(
        workspace=message.workspace_id,
        source=IntegrationError.Source.OPENAI,
        code=OPT_OUT_BY_FALLBACK_CODE,
        message=(
            f"classification failed ({detail}) on message #{message.pk}, which has opt-out words: the lead is"
            " blacklisted as a precaution; review the message (un-blacklist the lead if it was no opt-out)"
        ),
        context={"message_id": message.pk, "lead_id": message.lead_id},
    )
    return Sentiment.BLACKLIST, "fallback_opt_out"


def _classify_error_record(message: Message, *, code: str, detail: str, outcome: str = FALLBACK_OUTCOME) -> None:
    integration_error_record(
        workspace=message.workspace_id,
        source=IntegrationError.Source.OPENAI,
        code=f"{CLASSIFY_ERROR_PREFIX}{code}",
        message=f"classification failed ({detail}); {outcome}",
        context={"message_id": message.pk},
    )


def _openai_errors_may_be_open(message: Message) -> bool:
    """False when the task's first read saw no open OpenAI IntegrationError for the workspace.

    Then a success has nothing to resolve and skips the UPDATE; an error recorded by a
    concurrent task meanwhile is resolved by the next success that sees it.
    """
    return getattr(message, "openai_errors_open", True)


def _classification_store(*, message: Message, tag: str, provider_counts: bool = True) -> str:
    """Store the tag on the lead, then on the message: two single-statement writes.

    The lead's update is ``leads.services.lead_sentiment_set`` (``Blacklist`` is sticky), with
    one more condition in the statement: a late classification of an older message does not
    overwrite the lead's tag when a newer inbound exists (its own task sets it); ``Blacklist``
    always applies. The message is marked classified last: a crash in between leaves it
    unclassified, and the re-delivered task classifies it again (both writes are idempotent),
    so no transaction is needed. A machine reply's tag is the exception: the message first,
    then the lead (``lead_tag_from_message``), then ``drafts_revive_stale``.
    """
    lead = message.lead
    # A machine reply's tag goes to the lead after the message's own write (that write makes it
    # "not newer" for the person's message whose tag the lead may take instead).
    machine = tag in MACHINE_REPLY_SENTIMENTS
    updated = False if machine else lead_tag_from_message(message=message, lead=lead, tag=tag)
    now = timezone.now()
    if tag == Sentiment.NEUTRAL and provider_counts:
        stored = _message_store_neutral(message, now=now)
        if stored != tag:  # the provider's interest flag landed meanwhile
            tag = stored
            updated = lead_tag_from_message(message=message, lead=lead, tag=tag)
    else:
        where, params = "id = %s AND workspace_id = %s", [message.pk, message.workspace_id]
        update_rows(Message, {"sentiment": tag, "classified_at": now}, where, params)
    message.sentiment, message.classified_at = tag, now
    if machine:
        updated = lead_tag_from_message(message=message, lead=lead, tag=tag)
        drafts_revive_stale(message=message)
    if updated:
        if tag == Sentiment.BLACKLIST:
            drafts_skip_for_blacklisted_lead(lead_id=message.lead_id, workspace_id=message.workspace_id)
        else:
            message._newer_inbound_seen = False  # the update's own condition said so
    else:
        # Blacklisted already, or a newer inbound exists: read the lead's state and which one it was.
        newer_sql, newer_params = newer_inbound_sql(message)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT status, sentiment, {newer_sql} FROM {table(Lead)} WHERE id = %s AND workspace_id = %s",  # noqa: S608
                [*newer_params, message.lead_id, message.workspace_id],
            )
            lead.status, lead.sentiment, newer = cursor.fetchone()
        message._newer_inbound_seen = bool(newer)
    message.lead = lead
    return tag


def lead_tag_from_message(*, message: Message, lead: Lead, tag: str) -> bool:
    """The lead takes ``message``'s tag unless a newer inbound message exists (its own task
    sets the lead's tag); ``Blacklist`` always applies and is sticky. A machine reply
    (out-of-office, automated) replaces only a tag no person's message gave (New, Neutral,
    another machine reply): a warm lead stays warm while their auto-responder answers."""
    if tag in MACHINE_REPLY_SENTIMENTS:
        person = _latest_person_tagged_before(message)
        if person is not None:
            # The lead's tag is what the person last said (that message's own rule applies): a
            # warm message classified while this reply was not yet classified left it untouched.
            return lead_tag_from_message(message=person, lead=lead, tag=person.sentiment)
    newer_sql, newer_params = newer_inbound_sql(message)
    if tag in MACHINE_REPLY_SENTIMENTS:
        marks = ", ".join(["%s"] * len(MACHINE_REPLACEABLE_SENTIMENTS))
        newer_sql = f"({newer_sql} OR sentiment NOT IN ({marks}))"
        newer_params = [*newer_params, *MACHINE_REPLACEABLE_SENTIMENTS]
    return lead_sentiment_set(lead=lead, sentiment=tag, unless_sql=newer_sql, unless_params=newer_params)


def _latest_person_tagged_before(message: Message) -> Message | None:
    """The lead's latest inbound message before ``message`` with a tag a person's words gave it
    (not New/Neutral, not a machine reply), or None."""
    return (
        Message.objects.filter(
            workspace_id=message.workspace_id,
            lead_id=message.lead_id,
            direction=Direction.INBOUND,
            classified_at__isnull=False,
        )
        .filter(Q(sent_at__lt=message.sent_at) | Q(sent_at=message.sent_at, id__lt=message.pk))
        .exclude(sentiment__in=[*MACHINE_REPLACEABLE_SENTIMENTS, ""])
        .order_by("-sent_at", "-id")
        .only("id", "workspace_id", "lead_id", "sent_at", "sentiment")
        .first()
    )


def drafts_revive_stale(*, message: Message) -> int:
    """``message`` (of the lead) turned out to be a machine reply: a draft it made stale while it
    was not classified yet is ``ready`` again. Only the latest superseded-as-stale draft with
    content, finished after ``message`` arrived (so one this reply may have made stale, never an
    old one), of a message with no newer inbound but machine replies, with no live draft, for a
    lead not blacklisted. One UPDATE, on the machine-reply path only; a live draft inserted
    concurrently for that message wins (nothing revived)."""
    d, msg = table(Draft), table(Message)
    machine = ", ".join(["%s"] * len(MACHINE_REPLY_SENTIMENTS))
    open_sql, open_params = lead_open_sql(lead_id=message.lead_id, workspace_id=message.workspace_id)
    where = (
        "workspace_id = %s AND lead_id = %s AND status = %s AND failure_reason = %s AND content <> ''"  # noqa: S608
        " AND finished_at >= %s"
        f" AND id = (SELECT MAX(d2.id) FROM {d} d2 WHERE d2.message_id = {d}.message_id AND d2.status = %s"
        "   AND d2.failure_reason = %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {d} live WHERE live.message_id = {d}.message_id AND live.status <> %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {msg} w JOIN {msg} n ON n.workspace_id = w.workspace_id"
        "   AND n.lead_id = w.lead_id AND n.direction = %s"
        "   AND (n.sent_at > w.sent_at OR (n.sent_at = w.sent_at AND n.id > w.id))"
        f"   WHERE w.id = {d}.message_id AND n.sentiment NOT IN ({machine}))"
        f" AND {open_sql}"
    )
    stale = [DraftStatus.SUPERSEDED, "stale"]
    params = [
        message.workspace_id,
        message.lead_id,
        *stale,
        Draft._meta.get_field("finished_at").get_db_prep_value(message.created_at, connection),
        *stale,
        DraftStatus.SUPERSEDED,
        Direction.INBOUND,
        *MACHINE_REPLY_SENTIMENTS,
        *open_params,
    ]
    values = {"status": DraftStatus.READY, "failure_reason": "", "error": "", "updated_at": timezone.now()}
    try:
        with transaction.atomic(savepoint=connection.in_atomic_block):
            return update_rows(Draft, values, where, params)
    except IntegrityError:  # draft_one_live_per_message: a live draft was inserted meanwhile
        return 0


def _message_store_neutral(message: Message, *, now: datetime) -> str:
    """Store ``Neutral`` on the message, or ``Interested`` when the provider's interest flag is
    set by the time the row is written; returns the tag stored.

    The flag is read inside the UPDATE: a late ``LEAD_INTERESTED`` webhook either committed
    before it (then this write sees the flag) or writes after it (then it sees a ``Neutral``
    message and upgrades it itself, ``messaging.services.message_provider_interest_note``).
    """
    messages = Message.objects.filter(pk=message.pk, workspace_id=message.workspace_id)
    messages.update(
        sentiment=Case(
            When(provider_interested=True, then=Value(Sentiment.INTERESTED)), default=Value(Sentiment.NEUTRAL)
        ),
        classified_at=now,
    )
    stored = messages.values_list("sentiment", "provider_interested").first()
    if stored is None:
        return Sentiment.NEUTRAL
    message.provider_interested = stored[1]
    return stored[0]


def _newer_inbound_exists(message: Message) -> bool:
    """Whether an inbound message of the lead is newer than ``message`` (then its draft is stale)."""
    return message_has_newer_inbound(message)


def _newer_inbound_cached(message: Message) -> bool:
    """``_newer_inbound_exists``, answered once per run: classification's write already
    learnt it (``_newer_inbound_seen``), else the database is asked and the answer kept."""
    seen = getattr(message, "_newer_inbound_seen", None)
    if seen is None:
        seen = message._newer_inbound_seen = _newer_inbound_exists(message)
    return seen


# --- Task entry point ----------------------------------------------------------


@functools.cache
def _work_columns() -> tuple[ModelColumns, ModelColumns, ModelColumns]:
    # The workspace's credentials are not needed here: not selected, not decrypted (deferred).
    return ModelColumns(Message, "m"), ModelColumns(Lead, "l"), ModelColumns(Workspace, "w", exclude=SECRET_FIELDS)


def _message_for_work(message_id: int) -> Message | None:
    """The inbound message with its lead and workspace, its live draft's id (``live_draft_id``)
    and whether the workspace has open OpenAI IntegrationErrors (``openai_errors_open``): one query."""
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
    message.live_draft_id, message.openai_errors_open = row[c], bool(row[c + 1])
    return message


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
    message = _message_for_work(message_id)
    if message is None:
        logger.info("classify_and_draft: no inbound message %s", message_id)
        return None
    llm.calls_ordered_by(message.created_at.timestamp())  # rate-limit slots: oldest inbound first
    draft = None
    if message.live_draft_id is not None:
        draft = Draft.objects.get(pk=message.live_draft_id, workspace_id=message.workspace_id)
        if draft.status not in OPEN_STATUSES:
            return draft  # done before: a second run stops here
    classification: ClassifyResult | None = None
    first_answer: llm.LLMCall | None = None
    if message.classified_at is None and draft is None:
        # One call for the tag and the reply when no fast path decides (drafts/onecall.py);
        # None: not applicable or it did not work, and the two calls below follow.
        one_call = message_tag_and_reply(message=message, deadline=deadline)
        if one_call is not None:
            classification, first_answer = one_call
    if message.classified_at is None:
        classify_deadline = llm.Deadline(min(deadline.remaining() * 0.4, 2 * settings.OPENAI_CLASSIFY_TIMEOUT_S))
        try:
            classification = message_classify(message=message, deadline=classify_deadline)
        except SoftTimeLimitExceeded:
            # The LLM's tag if it had answered; else like any failed classification.
            tag, provider_counts = getattr(message, "_tag_to_store", (None, True))
            if tag is None:
                tag, _ = _classification_failed(
                    message,
                    text=reply_text(message.body),
                    code="timeout",
                    detail="the task's soft time limit was reached",
                )
            if tag is not None:
                _classification_store(message=message, tag=tag, provider_counts=provider_counts)
            raise
    # Fresh lead state (a concurrent opt-out may have blacklisted it): classification just wrote
    # it with a conditional update (or read it back); otherwise read it now.
    lead = (
        message.lead
        if classification is not None
        else Lead.objects.get(pk=message.lead_id, workspace_id=message.workspace_id)
    )
    draftable = message.sentiment in DRAFTABLE_SENTIMENTS and not lead.is_blacklisted
    inserted = False
    if draft is None:
        if not draftable:
            return None  # no draft for this tag, nor ever for a blacklisted lead
        if _newer_inbound_cached(message):
            return None  # the newer message's draft answers the lead (this one's transcript included)
        # Inserted straight in ``generating``: this run generates it now.
        draft, inserted = _draft_insert(message=message, status=DraftStatus.GENERATING)
        if draft.status not in OPEN_STATUSES:
            return draft
    elif not draftable:
        _draft_finish(
            draft=draft,
            status=DraftStatus.SKIPPED,
            failure_reason="blacklisted" if lead.is_blacklisted else "not_draftable",
            error="the lead's tag no longer gets a draft",
        )
        return draft
    message.lead = lead
    message._entered_at = entered
    return draft_generate(
        draft=draft,
        message=message,
        deadline=deadline,
        started=started,
        classification=classification,
        already_generating=inserted,
        first_answer=first_answer,
    )


def _live_draft(*, message: Message) -> Draft | None:
    return (
        Draft.objects.filter(workspace_id=message.workspace_id, message_id=message.pk)
        .exclude(status=DraftStatus.SUPERSEDED)
        .first()
    )


def draft_create(*, message: Message, status: str = DraftStatus.PENDING) -> Draft:
    """Insert the message's draft (``pending``, or ``generating`` when the caller generates it
    right away), or return the live one (insert-and-catch on ``draft_one_live_per_message``)."""
    return _draft_insert(message=message, status=status)[0]


def _draft_insert(*, message: Message, status: str) -> tuple[Draft, bool]:
    """(draft, inserted by this call). In autocommit mode (the task) the INSERT is its own
    transaction and a conflict needs no savepoint; inside a caller's transaction it gets one."""
    now = timezone.now()
    fields = {
        "workspace_id": message.workspace_id,
        "lead_id": message.lead_id,
        "message": message,
        "channel": message.channel,
        "status": status,
        "prompt_version": DRAFT_PROMPT_VERSION,
        "generation_started_at": now if status == DraftStatus.GENERATING else None,
    }
    try:
        if connection.in_atomic_block:
            with transaction.atomic():
                return Draft.objects.create(**fields), True
        return Draft.objects.create(**fields), True
    except IntegrityError:
        existing = _live_draft(message=message)
        if existing is None:
            raise
        return existing, False


# --- Generation ----------------------------------------------------------------


def draft_token_budget(*, channel: str, input_chars: int) -> int:
    """Adaptive output budget: plain per-channel budget plus a share of the input, times the multiplier."""
    plain = PLAIN_OUTPUT_TOKENS.get(channel, PLAIN_OUTPUT_TOKENS[Channel.EMAIL])
    adaptive = plain + INPUT_TOKEN_BUDGET_SHARE * (input_chars / 4)
    budget = int(adaptive * settings.OPENAI_DRAFT_TOKEN_BUDGET_MULTIPLIER)
    return max(16, min(settings.OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP, budget))


def _booking_url(workspace) -> str:
    if workspace.booking_provider == "calendly":
        return workspace.calendly_booking_url
    return workspace.ghl_booking_url or workspace.calendly_booking_url


def _prompts(*, message: Message, slots: list[dict]) -> tuple[str, str, dict[str, Any]]:
    """(instructions, input, context); the fallback instructions render from the context only when needed."""
    workspace, lead = message.workspace, message.lead
    signature = workspace.signature or "\n".join(p for p in (workspace.persona_name, workspace.company_name) if p)
    common = {
        "channel": message.channel,
        "persona_name": workspace.persona_name,
        "persona_tone": workspace.persona_tone,
        "company_name": workspace.company_name,
        "offer_description": workspace.offer_description,
        "signature": signature,
        "sms_max_chars": SMS_MAX_CHARS - 20,  # headroom: the model counts loosely
        "slots": slots,
        "booking_url": _booking_url(workspace),
        "sentiment": message.sentiment,
    }
    transcript = "\n".join(
        f"[{'LEAD' if m['direction'] == Direction.INBOUND else 'US'}] {m['text']}"
        for m in _conversation(message=message, limit=settings.DRAFT_CONTEXT_MESSAGES)
    )
    instructions = prompt_template("draft_instructions").render(common)
    prompt = prompt_template("draft_input").render(
        {
            **common,
            "lead_name": f"{lead.first_name} {lead.last_name}".strip(),
            "transcript": transcript,
            "subject": message.subject,
            "body": message.body[:8000],
        },
    )
    return instructions, prompt, common


def _unusable_reason(*, call: llm.LLMCall, channel: str) -> str:
    """Why a response cannot become a draft ("" when it can)."""
    if call.status == "incomplete":
        return call.incomplete_reason or "incomplete"
    if call.status != "completed":
        return f"status_{call.status or 'unknown'}"
    if not call.text:
        return "empty_output"
    if channel == Channel.SMS and len(call.text) > SMS_MAX_CHARS:
        return "too_long"
    return ""


def _usage(
    *, calls: list[llm.LLMCall], classification: ClassifyResult | None, started: float, entered: float | None
) -> dict[str, Any]:
    """Tokens and calls of this draft; ``timing`` (ms, see docs/drafts.md): ``total_ms`` from the
    task's start (``task_prerun``) to now (just before the final write), ``dispatch_ms`` the part
    before the service was entered, ``llm_ms`` client-side time inside ``responses.create``
    (every HTTP attempt of classification and drafting), ``server_ms`` the provider's
    self-reported processing time, ``backoff_ms`` retry sleeps."""
    all_calls = calls + (classification.calls if classification else [])
    return {
        "input_tokens": sum(c.input_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls),
        "reasoning_tokens": sum(c.reasoning_tokens for c in calls),
        "calls": [c.as_dict() for c in calls],
        "classification": (
            {
                "tag": classification.tag,
                "source": classification.source,
                "calls": [c.as_dict() for c in classification.calls],
            }
            if classification
            else None
        ),
        "timing": {
            "total_ms": round((time.monotonic() - started) * 1000, 1),
            "dispatch_ms": round(((entered or started) - started) * 1000, 1),
            "llm_ms": round(sum(c.latency_ms for c in all_calls), 1),
            "server_ms": round(sum(c.server_ms for c in all_calls), 1),
            "backoff_ms": round(sum(c.backoff_ms for c in all_calls), 1),
        },
    }


def draft_generate(
    *,
    draft: Draft,
    message: Message,
    deadline: llm.Deadline,
    started: float | None = None,
    classification: ClassifyResult | None = None,
    already_generating: bool = False,
    first_answer: llm.LLMCall | None = None,
) -> Draft:
    """Write the reply for ``draft`` within ``deadline``; ends ready, failed or superseded.

    ``already_generating``: the caller inserted the draft in ``generating`` in this run (no
    transition needed). ``first_answer``: a reply already written (the one-call path), used as
    the first draft call's answer.
    """
    started = started if started is not None else time.monotonic()
    if not already_generating:
        now = timezone.now()
        moved = Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id, status__in=OPEN_STATUSES).update(
            status=DraftStatus.GENERATING, generation_started_at=now, updated_at=now
        )
        if not moved:  # finished by someone else meanwhile
            draft.refresh_from_db()
            return draft
        draft.status, draft.generation_started_at = DraftStatus.GENERATING, now
    if _newer_inbound_cached(message):
        return _draft_finish(
            draft=draft, status=DraftStatus.SUPERSEDED, failure_reason="stale", error="a newer inbound message arrived"
        )

    calls: list[llm.LLMCall] = []
    common: dict[str, Any] = {
        "draft": draft,
        "calls": calls,
        "classification": classification,
        "started": started,
        "entered": getattr(message, "_entered_at", None),
        "slots": [],
    }
    try:
        return _draft_write(message=message, deadline=deadline, common=common, first_answer=first_answer)
    except llm.LLMError as exc:
        if exc.call is not None and exc.call not in calls:
            calls.append(exc.call)
        return _draft_failed(**common, failure_reason=exc.code, error=f"OpenAI call failed: {exc}")
    except SoftTimeLimitExceeded:
        return _draft_failed(**common, failure_reason="timeout", error="the task's soft time limit was reached")
    except Exception as exc:  # noqa: BLE001 - whatever happens, the draft must not stay `generating`
        # Type and stack only: an exception's text may quote the message or the reply
        # (Sentry's copy has its text dropped by the scrubber).
        logger.error(
            "draft %s: generation failed unexpectedly (%s)\n%s",
            draft.pk,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        sentry_sdk.capture_exception(exc)
        return _draft_failed(**common, failure_reason="unexpected", error=f"unexpected error: {type(exc).__name__}")


def _draft_write(
    *, message: Message, deadline: llm.Deadline, common: dict[str, Any], first_answer: llm.LLMCall | None = None
) -> Draft:
    """Slots, prompts and the LLM calls (first try, larger budget, fallback); the final write."""
    draft, calls = common["draft"], common["calls"]
    workspace = message.workspace
    slots = common["slots"] = available_slots_for_lead(
        workspace=workspace, lead=message.lead, count=workspace.slots_to_offer
    )
    instructions, prompt, prompt_context = _prompts(message=message, slots=slots)
    budget = draft_token_budget(channel=message.channel, input_chars=len(instructions) + len(prompt))
    cap = settings.OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP
    if first_answer is not None:
        call = first_answer
        calls.append(call)
    else:
        call = _call(
            (settings.OPENAI_DRAFT_MODEL, instructions, budget, "low"), prompt=prompt, deadline=deadline, calls=calls
        )
    reason = _unusable_reason(call=call, channel=message.channel)
    if reason == "max_output_tokens" and budget < cap:
        # Retry: at least double the budget, less reasoning, never above the cap.
        budget = min(cap, budget * 2)
        call = _call(
            (settings.OPENAI_DRAFT_MODEL, instructions, budget, "minimal"),
            prompt=prompt,
            deadline=deadline,
            calls=calls,
        )
        reason = _unusable_reason(call=call, channel=message.channel)
    if reason:
        # One fallback call: the fallback model (no reasoning) with a minimal prompt.
        fallback_instructions = prompt_template("draft_fallback_instructions").render(prompt_context)
        call = _call(
            (settings.OPENAI_DRAFT_FALLBACK_MODEL, fallback_instructions, cap, None),
            prompt=message.body[:4000],
            deadline=deadline,
            calls=calls,
        )
        reason = _unusable_reason(call=call, channel=message.channel)
    if reason:
        return _draft_failed(
            **common, failure_reason=reason, error=f"no usable output after {len(calls)} calls (last: {reason})"
        )
    if _openai_errors_may_be_open(message):
        integration_error_resolve(workspace=draft.workspace_id, source="openai", code_prefix=DRAFT_ERROR_PREFIX)
    content = call.text
    if message.channel == Channel.EMAIL:
        signature = workspace.signature.strip()
        if signature and signature not in content:
            content = f"{content.rstrip()}\n\n{signature}"
    subject = ""
    if message.channel == Channel.EMAIL and message.subject:
        subject = message.subject if message.subject.lower().startswith("re:") else f"Re: {message.subject}"
    return _draft_finish_ready(
        draft=draft,
        message=message,
        content=content,
        subject=subject,
        model=call.model,
        max_output_tokens=call.max_output_tokens,
        incomplete_reason="",
        usage=_usage(
            calls=calls, classification=common["classification"], started=common["started"], entered=common["entered"]
        ),
        attempts=sum(c.http_attempts for c in calls),
        latency_ms=round(sum(c.latency_ms for c in calls)),
        offered_slots=slots,
        prompt_version=DRAFT_PROMPT_VERSION,
    )


def _call(step: tuple[str, str, int, str | None], *, prompt: str, deadline: llm.Deadline, calls: list) -> llm.LLMCall:
    model, instructions, budget, effort = step
    call = llm.responses_create(
        model=model,
        instructions=instructions,
        input=prompt,
        max_output_tokens=budget,
        reasoning_effort=effort,
        deadline=deadline,
        timeout_s=settings.OPENAI_DRAFT_TIMEOUT_S,
    )
    calls.append(call)
    return call


def _draft_failed(
    *,
    draft: Draft,
    calls: list[llm.LLMCall],
    classification: ClassifyResult | None,
    started: float,
    entered: float | None,
    slots: list[dict],
    failure_reason: str,
    error: str,
) -> Draft:
    last = calls[-1] if calls else None
    integration_error_record(
        workspace=draft.workspace_id,
        source=IntegrationError.Source.OPENAI,
        code=f"{DRAFT_ERROR_PREFIX}{failure_reason}"[:64],
        message=f"draft generation failed: {error}",
        context={"draft_id": draft.pk, "message_id": draft.message_id, "calls": len(calls)},
    )
    return _draft_finish(
        draft=draft,
        status=DraftStatus.FAILED,
        failure_reason=failure_reason,
        error=error,
        content="",  # never store a truncated or partial reply
        model=last.model if last else "",
        max_output_tokens=last.max_output_tokens if last else None,
        # Why the model's answers were cut, even when a later call failed for another reason.
        incomplete_reason=next((c.incomplete_reason for c in reversed(calls) if c.incomplete_reason), ""),
        usage=_usage(calls=calls, classification=classification, started=started, entered=entered),
        attempts=sum(c.http_attempts for c in calls),
        latency_ms=round(sum(c.latency_ms for c in calls)),
        offered_slots=slots,
        prompt_version=DRAFT_PROMPT_VERSION,
    )


def _draft_finish_ready(*, draft: Draft, message: Message, **fields: Any) -> Draft:
    """The final write of a usable reply, with the last checks in the same statement: ``ready``
    unless a newer inbound arrived while drafting (then ``superseded``, content kept) or the
    lead opted out meanwhile (then ``skipped``, reason ``blacklisted``)."""
    now = timezone.now()
    values = {"status": DraftStatus.READY, "failure_reason": "", "error": "", "finished_at": now, "updated_at": now}
    values.update(fields)
    newer_sql, newer_params = newer_inbound_sql(message)
    open_sql, open_params = lead_open_sql(lead_id=message.lead_id, workspace_id=message.workspace_id)
    updated = update_rows(
        Draft,
        values,
        f"id = %s AND workspace_id = %s AND status IN (%s, %s) AND NOT {newer_sql} AND {open_sql}",
        [draft.pk, draft.workspace_id, *OPEN_STATUSES, *newer_params, *open_params],
    )
    if updated:
        for key, value in values.items():
            setattr(draft, key, value)
        return draft
    if Lead.objects.filter(
        pk=message.lead_id, workspace_id=message.workspace_id, status=LeadStatus.BLACKLISTED
    ).exists():
        return _draft_finish(
            draft=draft,
            status=DraftStatus.SKIPPED,
            failure_reason="blacklisted",
            error="the lead opted out while the reply was written",
            **fields,
        )
    if _newer_inbound_exists(message):
        return _draft_finish(
            draft=draft,
            status=DraftStatus.SUPERSEDED,
            failure_reason="stale",
            error="a newer inbound message arrived while drafting",
            **fields,
        )
    draft.refresh_from_db()  # someone else finished it
    return draft


def drafts_skip_for_blacklisted_lead(*, lead_id: int, workspace_id: int) -> int:
    """A lead just opted out: its drafts awaiting review or sending are never sent (``skipped``,
    reason ``blacklisted``). Open drafts end the same way at their final write."""
    return Draft.objects.filter(
        workspace_id=workspace_id,
        lead_id=lead_id,
        status__in=(DraftStatus.READY, DraftStatus.APPROVED, DraftStatus.SCHEDULED),
    ).update(
        status=DraftStatus.SKIPPED,
        failure_reason="blacklisted",
        error="the lead opted out before the reply was sent",
        updated_at=timezone.now(),
    )


def _draft_finish(*, draft: Draft, status: str, **fields: Any) -> Draft:
    """Move an open draft to its final status (no-op if someone else already finished it)."""
    now = timezone.now()
    values = {"status": status, "finished_at": now, "updated_at": now, **fields}
    if "failure_reason" in values:
        values["failure_reason"] = values["failure_reason"][:32]  # the column's length
    updated = Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id, status__in=OPEN_STATUSES).update(
        **values
    )
    if updated:
        for key, value in values.items():
            setattr(draft, key, value)
    else:
        draft.refresh_from_db()
    return draft


def draft_fail_open(*, message_id: int, failure_reason: str, error: str) -> int:
    """Fail the message's open draft (used when the task's soft limit or an unexpected error
    ends the run outside generation). Scoped to the message's own workspace."""
    workspace_id = Message.objects.filter(pk=message_id).values("workspace_id")
    drafts = Draft.objects.filter(workspace_id=Subquery(workspace_id[:1]), message_id=message_id)
    return _drafts_fail_open(drafts, failure_reason=failure_reason, error=error)


def _drafts_fail_open(drafts, *, failure_reason: str, error: str) -> int:
    """The drafts of ``drafts`` that are still open end ``failed`` (no content). One UPDATE."""
    now = timezone.now()
    return drafts.filter(status__in=OPEN_STATUSES).update(
        status=DraftStatus.FAILED,
        failure_reason=failure_reason[:32],
        error=error,
        content="",
        finished_at=now,
        updated_at=now,
    )


# --- Stale open drafts (the sweeper) ---------------------------------------------------

# An open draft whose work was enqueued the maximum number of times is failed only after this long
# without a change: a task that waits in a long queue still gets its turn.
DRAFT_ABANDON_AFTER = timedelta(hours=1)


def draft_sweep_stale(*, workspace_id: int, now: datetime | None = None, limit: int = 500) -> tuple[int, int, bool]:
    """Hand open drafts whose task was lost back to the workers, or fail them for good.

    A draft is stale when it is ``pending`` longer than ``DRAFT_SWEEP_AFTER_S`` (its enqueue
    was lost: broker down during a regenerate) or ``generating`` longer than the task's hard
    time limit plus a margin (its worker was killed and the task not re-delivered). Its
    message is enqueued again (``force``: the per-message work claim makes a duplicate
    harmless), at most ``SWEEP_MAX_ENQUEUES`` times per message; after that, once the draft
    has not changed for ``DRAFT_ABANDON_AFTER`` (its last task is not merely waiting in a busy
    queue), it ends ``failed`` with reason ``abandoned`` and an IntegrationError. Returns
    (enqueued, failed, whether the broker took every enqueue).
    """
    now = now or timezone.now()
    enqueued = failed = 0
    stale = drafts_stale_open(workspace_id=workspace_id, now=now, limit=limit)
    for draft_id, message_id, enqueues, changed_at in stale:
        if enqueues >= SWEEP_MAX_ENQUEUES:
            if changed_at <= now - DRAFT_ABANDON_AFTER:
                failed += draft_abandon(draft_id=draft_id, workspace_id=workspace_id)
            continue
        if not message_work_enqueue(message_id=message_id, workspace_id=workspace_id, force=True):
            return enqueued, failed, False  # broker down: the next run retries
        enqueued += 1
    return enqueued, failed, True


def draft_abandon(*, draft_id: int, workspace_id: int) -> int:
    """Fail an open draft whose work was handed out ``SWEEP_MAX_ENQUEUES`` times without an end."""
    error = "the draft's task was lost or killed repeatedly; regenerate it to try again"
    drafts = Draft.objects.filter(pk=draft_id, workspace_id=workspace_id)
    done = _drafts_fail_open(drafts, failure_reason="abandoned", error=error)
    if done:
        integration_error_record(
            workspace=workspace_id,
            source=IntegrationError.Source.OPENAI,
            code=f"{DRAFT_ERROR_PREFIX}abandoned",
            message=f"draft generation abandoned: {error}",
            context={"draft_id": draft_id},
        )
    return done


# --- Operator actions ----------------------------------------------------------------

REJECTABLE_STATUSES = (
    DraftStatus.READY,
    DraftStatus.APPROVED,
    DraftStatus.SCHEDULED,
    DraftStatus.FAILED,
    DraftStatus.SKIPPED,
)
# Editing an approved or scheduled draft takes the approval back: what is sent was approved.
EDITABLE_STATUSES = (DraftStatus.READY, DraftStatus.APPROVED, DraftStatus.SCHEDULED)
REGENERATABLE_STATUSES = (
    DraftStatus.READY,
    DraftStatus.APPROVED,
    DraftStatus.SCHEDULED,
    DraftStatus.FAILED,
    DraftStatus.SKIPPED,
    DraftStatus.REJECTED,
)


def _draft_transition(
    *, draft: Draft, allowed: tuple[str, ...], action: str, lead_open: bool = False, **values: Any
) -> Draft:
    """One conditional UPDATE: applies only while the draft is still in ``allowed`` (a worker or
    another operator may have moved it since the page was shown) and, with ``lead_open``, while
    its lead is not blacklisted; raises ValueError otherwise."""
    values.setdefault("updated_at", timezone.now())
    with transaction.atomic():
        # The send's claim holds this row's lock while it writes the outbound row: once we
        # have the lock, a send that started is visible, and a draft on its way out is final.
        Draft.objects.select_for_update().filter(pk=draft.pk, workspace_id=draft.workspace_id).first()
        if Message.objects.filter(
            workspace_id=draft.workspace_id, draft_source_id=draft.pk, delivery__in=SEND_CLAIMED_DELIVERIES
        ).exists():
            raise ValueError(f"draft #{draft.pk} is being sent or was sent: cannot {action} it")
        drafts = Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id, status__in=allowed)
        if lead_open:
            drafts = drafts.exclude(lead__status=LeadStatus.BLACKLISTED).exclude(lead__sentiment=Sentiment.BLACKLIST)
        done = drafts.update(**values)
    draft.refresh_from_db()
    if not done:
        if lead_open and draft.status in allowed:
            raise ValueError(f"draft #{draft.pk}: the lead is blacklisted, cannot {action} it")
        raise ValueError(f"draft #{draft.pk} is {draft.status}: cannot {action} it")
    return draft


def draft_reject(*, draft: Draft) -> Draft:
    return _draft_transition(draft=draft, allowed=REJECTABLE_STATUSES, action="reject", status=DraftStatus.REJECTED)


def draft_edit(*, draft: Draft, content: str, subject: str) -> Draft:
    """An operator's edit of the reply. Editing an approved draft takes the approval back
    (``ready`` again): what is sent is always exactly what was approved."""
    if not content.strip():
        raise ValueError("content: a draft cannot be empty")
    if draft.channel == Channel.SMS and subject:
        raise ValueError("subject: SMS drafts have no subject")
    return _draft_transition(
        draft=draft,
        allowed=EDITABLE_STATUSES,
        action="edit",
        lead_open=True,
        content=content,
        subject=subject,
        status=DraftStatus.READY,
        approved_by=None,
        approved_at=None,
        send_after=None,
    )


@transaction.atomic
def draft_regenerate(*, draft: Draft) -> Draft:
    """Supersede a finished draft with a new ``pending`` one for the same message; returns it.

    Both rows change in one transaction; the work is handed to the broker after commit by
    ``message_work_enqueue``, which never raises: with the broker down the new draft stays
    ``pending`` and the sweeper enqueues it later (``draft_sweep_stale``).
    """
    message = Message.objects.select_related("lead").get(pk=draft.message_id, workspace_id=draft.workspace_id)
    if message.lead.is_blacklisted:
        raise ValueError(f"draft #{draft.pk}: the lead is blacklisted, no new drafts")
    if message.sentiment not in DRAFTABLE_SENTIMENTS:
        raise ValueError(f"draft #{draft.pk}: a {message.sentiment or 'unclassified'} message gets no draft")
    _draft_transition(
        draft=draft,
        allowed=REGENERATABLE_STATUSES,
        action="regenerate",
        status=DraftStatus.SUPERSEDED,
        failure_reason="regenerated",
    )
    new_draft, _ = _draft_insert(message=message, status=DraftStatus.PENDING)
    # A fresh job the operator asked for: the sweeper's retry count starts again.
    Message.objects.filter(pk=message.pk, workspace_id=message.workspace_id).update(
        work_enqueued_at=None, work_enqueue_count=0
    )
    transaction.on_commit(
        functools.partial(message_work_enqueue, message_id=message.pk, workspace_id=message.workspace_id, force=True)
    )
    return new_draft
