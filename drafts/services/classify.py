"""Tagging an inbound message: the regex fast paths, then the LLM (``drafts.classification``);
the fallback when the LLM fails; storing the tag on the message and on the lead.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import Case, Value, When
from django.utils import timezone

from core.sql import update_rows
from drafts import llm
from drafts.classification import classify_fast, classify_with_llm, opt_out_suspected
from drafts.quoting import reply_text
from drafts.run import ClassifyResult, DraftRun
from drafts.services.lifecycle import CLASSIFY_ERROR_PREFIX, drafts_revive_stale, drafts_skip_for_blacklisted_lead
from leads.models import MACHINE_REPLY_SENTIMENTS, Sentiment
from messaging.models import Message
from messaging.selectors import SWEEP_MAX_ENQUEUES, lead_state_after, message_in_sweep_window
from messaging.services import lead_tag_from_message
from workspaces.models import IntegrationError
from workspaces.services import integration_error_record, integration_error_resolve


def message_classify(*, message: Message, deadline: llm.Deadline, run: DraftRun | None = None) -> ClassifyResult:
    """Tag an inbound message (regex fast paths, then the LLM), store it, update the lead.

    LLM failure falls back to ``Neutral`` (``Interested`` when the provider
    flagged the reply as interested) and records an IntegrationError. ``run``: the task's
    run, which this fills (a fresh one by default).
    """
    run = run if run is not None else DraftRun(message=message)
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
                context=run.transcript(limit=settings.DRAFT_CONTEXT_MESSAGES),
                deadline=deadline,
            )
            tag, source, calls = outcome.tag, "llm", outcome.calls
            if run.openai_errors_open:
                integration_error_resolve(
                    workspace=message.workspace_id, source="openai", code_prefix=CLASSIFY_ERROR_PREFIX
                )
        except llm.LLMError as exc:
            calls.extend(exc.all_calls())
            tag, source = classification_failed(message, text=text, code=exc.code, detail=str(exc))
            if tag is None:
                return ClassifyResult(tag="", source=source, calls=calls)
        # EmailBison's own interest flag wins unless the text said something specific.
        if message.provider_interested and tag == Sentiment.NEUTRAL:
            tag, source = Sentiment.INTERESTED, "provider"
    # A blacklisted lead's message is not classified at all: no flag makes it warm.
    provider_counts = source != "blacklisted_lead"
    run.tag_to_store = (tag, provider_counts)  # stored even if the soft limit interrupts the writes
    stored = classification_store(run=run, tag=tag, provider_counts=provider_counts)
    if stored != tag:
        tag, source = stored, "provider"
    return ClassifyResult(tag=str(tag), source=source, calls=calls)


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


def classification_failed(message: Message, *, text: str, code: str, detail: str) -> tuple[str | None, str]:
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


def classification_store(*, run: DraftRun, tag: str, provider_counts: bool = True) -> str:
    """Store the tag on the lead, then on the message: two single-statement writes.

    The lead's update is ``leads.services.lead_sentiment_set`` (``Blacklist`` is sticky), with
    one more condition in the statement: a late classification of an older message does not
    overwrite the lead's tag when a newer inbound exists (its own task sets it); ``Blacklist``
    always applies. The message is marked classified last: a crash in between leaves it
    unclassified, and the re-delivered task classifies it again (both writes are idempotent),
    so no transaction is needed. A machine reply's tag is the exception: the message first,
    then the lead (``lead_tag_from_message``), then ``drafts_revive_stale``. What the writes
    learn (the lead's state, whether a newer inbound exists) goes to ``run``.
    """
    message = run.message
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
            run.newer_inbound = False  # the update's own condition said so
    else:
        # Blacklisted already, or a newer inbound exists: read the lead's state and which one it was.
        state = lead_state_after(message)
        lead.status, lead.sentiment = state.status, state.sentiment
        run.newer_inbound = state.newer_inbound
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
