"""Tagging an inbound message: the regex fast paths, then the LLM (``drafts.classification``);
the fallback when the LLM fails; storing the tag on the message and on the lead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Case, Value, When
from django.utils import timezone

from core.sql import table, update_rows
from drafts import llm
from drafts.classification import classify_fast, classify_with_llm, opt_out_suspected
from drafts.quoting import reply_text
from drafts.services.lifecycle import CLASSIFY_ERROR_PREFIX, drafts_revive_stale, drafts_skip_for_blacklisted_lead
from leads.models import (
    MACHINE_REPLY_SENTIMENTS,
    Lead,
    Sentiment,
)
from messaging.models import Delivery, Direction, Message
from messaging.selectors import (
    SWEEP_MAX_ENQUEUES,
    message_in_sweep_window,
    newer_inbound_sql,
    sent_at_param,
)
from messaging.services import lead_tag_from_message
from workspaces.models import IntegrationError
from workspaces.services import integration_error_record, integration_error_resolve


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
