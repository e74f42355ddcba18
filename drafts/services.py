"""Writes of the drafts app: classify inbound messages and write reply drafts.

Entry point for the Celery task: ``message_classify_and_draft(message_id=...)``.
Every path ends with the draft ``ready``, ``failed``/``skipped`` (with a
``failure_reason``) or ``superseded``: never left ``pending``/``generating``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from availability.selectors import available_slots_for_lead
from drafts import llm
from drafts.classification import classify_fast, classify_with_llm
from drafts.models import Draft, DraftStatus
from leads.models import DRAFTABLE_SENTIMENTS, Lead, Sentiment
from leads.services import lead_sentiment_set
from messaging.models import Channel, Direction, Message
from workspaces.models import IntegrationError
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

DRAFT_PROMPT_VERSION = "draft-v1"
SMS_MAX_CHARS = 320
# Plain per-channel output budgets (visible + reasoning tokens), before the multiplier.
PLAIN_OUTPUT_TOKENS = {Channel.SMS: 200, Channel.EMAIL: 450}
# Extra budget per input token: longer conversations get longer answers.
INPUT_TOKEN_BUDGET_SHARE = 0.1
OPEN_STATUSES = (DraftStatus.PENDING, DraftStatus.GENERATING)
CLASSIFY_ERROR_CODES = [
    f"classify_{c}"
    for c in (
        "timeout",
        "rate_limited",
        "server_error",
        "connection_error",
        "bad_request",
        "auth",
        "deadline",
        "config",
        "invalid_output",
        "max_output_tokens",
        "unexpected",
    )
]
DRAFT_ERROR_CODES = [
    f"draft_{c}"
    for c in (
        "timeout",
        "rate_limited",
        "server_error",
        "connection_error",
        "bad_request",
        "auth",
        "deadline",
        "config",
        "max_output_tokens",
        "empty_output",
        "too_long",
        "unexpected",
    )
]
_LOCK_NAMESPACE = 4_0004  # pg advisory lock namespace for "classify_and_draft(message)"


# --- Deadlines ---------------------------------------------------------------


def task_chain_deadline() -> llm.Deadline:
    """The time the whole classify+draft chain may take: the soft limit minus a margin to save."""
    soft = float(settings.DRAFT_TASK_SOFT_TIME_LIMIT_S)
    return llm.Deadline(max(0.5, soft - max(1.0, soft * 0.1)))


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
    rows = (
        Message.objects.filter(workspace_id=message.workspace_id, lead_id=message.lead_id)
        .filter(Q(sent_at__lt=message.sent_at) | Q(sent_at=message.sent_at, pk__lt=message.pk))
        .order_by("-sent_at", "-pk")
        .values_list("direction", "body")[: max(0, limit)]
    )
    result = [{"direction": d, "text": (b or "")[:2000]} for d, b in reversed(list(rows))]
    message._conversation_cache = (limit, result)
    return result


def message_classify(*, message: Message, deadline: llm.Deadline) -> ClassifyResult:
    """Tag an inbound message (regex fast paths, then the LLM), store it, update the lead.

    LLM failure falls back to ``Neutral`` (``Interested`` when the provider
    flagged the reply as interested) and records an IntegrationError.
    """
    calls: list[llm.LLMCall] = []
    tag = classify_fast(body=message.body, subject=message.subject)
    source = "regex"
    if tag is None:
        try:
            outcome = classify_with_llm(
                body=message.body[:8000],
                subject=message.subject,
                channel=message.channel,
                context=_conversation(message=message, limit=settings.DRAFT_CONTEXT_MESSAGES),
                deadline=deadline,
            )
            tag, source, calls = outcome.tag, "llm", outcome.calls
            integration_error_resolve(workspace=message.workspace_id, source="openai", codes=CLASSIFY_ERROR_CODES)
        except llm.LLMError as exc:
            if exc.call is not None:
                calls.append(exc.call)
            tag, source = Sentiment.NEUTRAL, "fallback"
            integration_error_record(
                workspace=message.workspace_id,
                source=IntegrationError.Source.OPENAI,
                code=f"classify_{exc.code}",
                message=f"classification failed ({exc}); message tagged by fallback",
                context={"message_id": message.pk},
            )
        # EmailBison's own interest flag wins unless the text said something specific.
        if message.provider_interested and tag == Sentiment.NEUTRAL:
            tag, source = Sentiment.INTERESTED, "provider"
    _classification_store(message=message, tag=tag)
    return ClassifyResult(tag=str(tag), source=source, calls=calls)


# The name for the classification step.
classify_message = message_classify


@transaction.atomic
def _classification_store(*, message: Message, tag: str) -> None:
    now = timezone.now()
    Message.objects.filter(pk=message.pk, workspace_id=message.workspace_id).update(sentiment=tag, classified_at=now)
    message.sentiment, message.classified_at = tag, now
    # A late classification of an older message must not overwrite the lead's tag when a newer
    # inbound exists (its own task sets it); Blacklist always applies.
    newer_exists = _newer_inbound(message=message).exists()
    message._newer_inbound_seen = newer_exists
    if newer_exists and tag != Sentiment.BLACKLIST:
        message.lead = Lead.objects.get(pk=message.lead_id, workspace_id=message.workspace_id)
    else:
        message.lead = lead_sentiment_set(lead=message.lead, sentiment=tag)


def _newer_inbound(*, message: Message):
    return Message.objects.filter(
        workspace_id=message.workspace_id, lead_id=message.lead_id, direction=Direction.INBOUND
    ).filter(Q(sent_at__gt=message.sent_at) | Q(sent_at=message.sent_at, pk__gt=message.pk))


# --- Task entry point ----------------------------------------------------------


@contextlib.contextmanager
def _message_lock(message_id: int) -> Iterator[bool]:
    """A session-level PostgreSQL advisory lock per message.

    Two live workers never work on the same message at once; when a worker
    dies its connection closes and the lock goes with it, so the re-delivered
    task can finish the job. (No-op outside PostgreSQL.)
    """
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_NAMESPACE, message_id])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_NAMESPACE, message_id])


def message_classify_and_draft(*, message_id: int) -> Draft | None:
    """Classify one inbound message and, for warm leads, write its reply draft. Idempotent."""
    started = time.monotonic()
    deadline = task_chain_deadline()
    message = (
        Message.objects.select_related("lead", "workspace").filter(pk=message_id, direction=Direction.INBOUND).first()
    )
    if message is None:
        logger.info("classify_and_draft: no inbound message %s", message_id)
        return None
    with _message_lock(message.pk) as acquired:
        if not acquired:
            logger.info("classify_and_draft: message %s is being handled by another worker", message.pk)
            return None
        draft = _live_draft(message=message)
        if draft is not None and draft.status not in OPEN_STATUSES:
            return draft  # done before: a second run stops here
        classification: ClassifyResult | None = None
        if message.classified_at is None:
            classify_deadline = llm.Deadline(min(deadline.remaining() * 0.4, 2 * settings.OPENAI_CLASSIFY_TIMEOUT_S))
            try:
                classification = message_classify(message=message, deadline=classify_deadline)
            except SoftTimeLimitExceeded:
                _classification_store(message=message, tag=Sentiment.NEUTRAL)
                raise
        # Fresh lead state (a concurrent opt-out may have blacklisted it); classification just re-read it.
        lead = (
            message.lead
            if classification is not None
            else Lead.objects.get(pk=message.lead_id, workspace_id=message.workspace_id)
        )
        draftable = message.sentiment in DRAFTABLE_SENTIMENTS and not lead.is_blacklisted
        if draft is None:
            if not draftable:
                return None  # no draft for this tag, nor ever for a blacklisted lead
            draft = draft_create(message=message)
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
        return draft_generate(
            draft=draft, message=message, deadline=deadline, started=started, classification=classification
        )


def _live_draft(*, message: Message) -> Draft | None:
    return (
        Draft.objects.filter(workspace_id=message.workspace_id, message_id=message.pk)
        .exclude(status=DraftStatus.SUPERSEDED)
        .first()
    )


def draft_create(*, message: Message) -> Draft:
    """Insert the message's draft in ``pending``, or return the live one (insert-and-catch)."""
    try:
        with transaction.atomic():
            return Draft.objects.create(
                workspace_id=message.workspace_id,
                lead_id=message.lead_id,
                message=message,
                channel=message.channel,
                status=DraftStatus.PENDING,
                prompt_version=DRAFT_PROMPT_VERSION,
            )
    except IntegrityError:
        existing = _live_draft(message=message)
        if existing is None:
            raise
        return existing


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


def _prompts(*, message: Message, slots: list[dict]) -> tuple[str, str, str]:
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
    instructions = render_to_string("drafts/draft_instructions.txt", common)
    prompt = render_to_string(
        "drafts/draft_input.txt",
        {
            **common,
            "lead_name": f"{lead.first_name} {lead.last_name}".strip(),
            "transcript": transcript,
            "subject": message.subject,
            "body": message.body[:8000],
        },
    )
    fallback_instructions = render_to_string("drafts/draft_fallback_instructions.txt", common)
    return instructions, prompt, fallback_instructions


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


def _usage(*, calls: list[llm.LLMCall], classification: ClassifyResult | None, started: float) -> dict[str, Any]:
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
            "total_ms": int((time.monotonic() - started) * 1000),
            "llm_ms": sum(c.latency_ms for c in all_calls),
            "server_ms": round(sum(c.server_ms for c in all_calls), 1),
            "backoff_ms": sum(c.backoff_ms for c in all_calls),
        },
    }


def draft_generate(
    *,
    draft: Draft,
    message: Message,
    deadline: llm.Deadline,
    started: float | None = None,
    classification: ClassifyResult | None = None,
) -> Draft:
    """Write the reply for ``draft`` within ``deadline``; ends ready, failed or superseded."""
    started = started if started is not None else time.monotonic()
    workspace = message.workspace
    now = timezone.now()
    Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id, status__in=OPEN_STATUSES).update(
        status=DraftStatus.GENERATING, generation_started_at=now, updated_at=now
    )
    draft.status = DraftStatus.GENERATING
    # Reuse the check classification just made in this run, else ask the database.
    newer_seen = getattr(message, "_newer_inbound_seen", None)
    if newer_seen if newer_seen is not None else _newer_inbound(message=message).exists():
        return _draft_finish(
            draft=draft, status=DraftStatus.SUPERSEDED, failure_reason="stale", error="a newer inbound message arrived"
        )

    slots = available_slots_for_lead(workspace=workspace, lead=message.lead, count=workspace.slots_to_offer)
    instructions, prompt, fallback_instructions = _prompts(message=message, slots=slots)
    budget = draft_token_budget(channel=message.channel, input_chars=len(instructions) + len(prompt))
    cap = settings.OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP
    calls: list[llm.LLMCall] = []
    common = {"draft": draft, "calls": calls, "classification": classification, "started": started, "slots": slots}

    try:
        plan = [(settings.OPENAI_DRAFT_MODEL, instructions, budget, "low")]
        call = _call(plan[0], prompt=prompt, deadline=deadline, calls=calls)
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
            call = _call(
                (settings.OPENAI_DRAFT_FALLBACK_MODEL, fallback_instructions, cap, None),
                prompt=message.body[:4000],
                deadline=deadline,
                calls=calls,
            )
            reason = _unusable_reason(call=call, channel=message.channel)
    except llm.LLMError as exc:
        if exc.call is not None and exc.call not in calls:
            calls.append(exc.call)
        return _draft_failed(**common, failure_reason=exc.code, error=f"OpenAI call failed: {exc}")
    except SoftTimeLimitExceeded:
        return _draft_failed(**common, failure_reason="timeout", error="the task's soft time limit was reached")

    if reason:
        return _draft_failed(
            **common, failure_reason=reason, error=f"no usable output after {len(calls)} calls (last: {reason})"
        )
    integration_error_resolve(workspace=draft.workspace_id, source="openai", codes=DRAFT_ERROR_CODES)
    content = call.text
    if message.channel == Channel.EMAIL:
        signature = workspace.signature.strip()
        if signature and signature not in content:
            content = f"{content.rstrip()}\n\n{signature}"
    subject = ""
    if message.channel == Channel.EMAIL and message.subject:
        subject = message.subject if message.subject.lower().startswith("re:") else f"Re: {message.subject}"
    stale = _newer_inbound(message=message).exists()
    return _draft_finish(
        draft=draft,
        status=DraftStatus.SUPERSEDED if stale else DraftStatus.READY,
        failure_reason="stale" if stale else "",
        error="a newer inbound message arrived while drafting" if stale else "",
        content=content,
        subject=subject,
        model=call.model,
        max_output_tokens=call.max_output_tokens,
        incomplete_reason="",
        usage=_usage(calls=calls, classification=classification, started=started),
        attempts=sum(c.http_attempts for c in calls),
        latency_ms=sum(c.latency_ms for c in calls),
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
    slots: list[dict],
    failure_reason: str,
    error: str,
) -> Draft:
    last = calls[-1] if calls else None
    integration_error_record(
        workspace=draft.workspace_id,
        source=IntegrationError.Source.OPENAI,
        code=f"draft_{failure_reason}"[:64],
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
        incomplete_reason=(last.incomplete_reason if last else "") or "",
        usage=_usage(calls=calls, classification=classification, started=started),
        attempts=sum(c.http_attempts for c in calls),
        latency_ms=sum(c.latency_ms for c in calls),
        offered_slots=slots,
        prompt_version=DRAFT_PROMPT_VERSION,
    )


def _draft_finish(*, draft: Draft, status: str, **fields: Any) -> Draft:
    """Move an open draft to its final status (no-op if someone else already finished it)."""
    now = timezone.now()
    values = {"status": status, "finished_at": now, "updated_at": now, **fields}
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
    """Fail the message's open draft (used when the task's soft limit fires outside generation)."""
    now = timezone.now()
    return Draft.objects.filter(message_id=message_id, status__in=OPEN_STATUSES).update(
        status=DraftStatus.FAILED,
        failure_reason=failure_reason,
        error=error,
        content="",
        finished_at=now,
        updated_at=now,
    )


# --- Operator actions ----------------------------------------------------------------


@transaction.atomic
def draft_approve(*, draft: Draft, user) -> Draft:
    if draft.status != DraftStatus.READY:
        raise ValueError(f"draft #{draft.pk} is {draft.status}: only ready drafts can be approved")
    now = timezone.now()
    Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id).update(
        status=DraftStatus.APPROVED, approved_by=user, approved_at=now, updated_at=now
    )
    draft.refresh_from_db()
    return draft


@transaction.atomic
def draft_reject(*, draft: Draft) -> Draft:
    if draft.status not in (DraftStatus.READY, DraftStatus.APPROVED, DraftStatus.FAILED):
        raise ValueError(f"draft #{draft.pk} is {draft.status}: cannot reject it")
    Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id).update(
        status=DraftStatus.REJECTED, updated_at=timezone.now()
    )
    draft.refresh_from_db()
    return draft


@transaction.atomic
def draft_regenerate(*, draft: Draft) -> Draft:
    """Supersede a finished draft and enqueue a fresh one for the same message (after commit)."""
    if draft.status in OPEN_STATUSES or draft.status in (DraftStatus.SENT, DraftStatus.SUPERSEDED):
        raise ValueError(f"draft #{draft.pk} is {draft.status}: cannot regenerate it")
    lead = Lead.objects.get(pk=draft.lead_id, workspace_id=draft.workspace_id)
    if lead.is_blacklisted:
        raise ValueError(f"draft #{draft.pk}: the lead is blacklisted, no new drafts")
    Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id).update(
        status=DraftStatus.SUPERSEDED, failure_reason="regenerated", updated_at=timezone.now()
    )
    draft.refresh_from_db()
    message_id = draft.message_id

    def _enqueue() -> None:
        from drafts.tasks import classify_and_draft

        classify_and_draft.delay(message_id)

    transaction.on_commit(_enqueue)
    return draft
