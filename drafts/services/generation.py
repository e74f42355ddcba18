"""Writing the reply of a draft with the LLM: slots, prompts, token budget, the calls (first
try, larger budget, fallback model) and the draft's final write.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import sentry_sdk
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from drafts import llm
from drafts.classification import prompt_template
from drafts.models import Draft, DraftStatus
from drafts.run import DraftRun
from drafts.selectors import slots_to_offer
from drafts.services.lifecycle import (
    DRAFT_ERROR_PREFIX,
    DRAFT_PROMPT_VERSION,
    OPEN_STATUSES,
    draft_finish,
    draft_finish_ready,
)
from messaging.models import Channel, Direction
from workspaces.models import IntegrationError
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

SMS_MAX_CHARS = 320

# Plain per-channel output budgets (visible + reasoning tokens), before the multiplier.
PLAIN_OUTPUT_TOKENS = {Channel.SMS: 200, Channel.EMAIL: 450}

# Extra budget per input token: longer conversations get longer answers.
INPUT_TOKEN_BUDGET_SHARE = 0.1


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


def draft_prompts(*, run: DraftRun) -> tuple[str, str, dict[str, Any]]:
    """(instructions, input, context); the fallback instructions render from the context only when needed."""
    message, slots = run.message, run.slots
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
        for m in run.transcript(limit=settings.DRAFT_CONTEXT_MESSAGES)
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


def _usage(*, run: DraftRun) -> dict[str, Any]:
    """Tokens and calls of this draft; ``timing`` (ms, see docs/drafts.md): ``total_ms`` from the
    task's start (``task_prerun``) to now (just before the final write), ``dispatch_ms`` the part
    before the service was entered, ``llm_ms`` client-side time inside ``responses.create``
    (every HTTP attempt of classification and drafting), ``server_ms`` the provider's
    self-reported processing time, ``backoff_ms`` retry sleeps."""
    calls, classification, started = run.calls, run.classification, run.started
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
            "dispatch_ms": round(((run.entered or started) - started) * 1000, 1),
            "llm_ms": round(sum(c.latency_ms for c in all_calls), 1),
            "server_ms": round(sum(c.server_ms for c in all_calls), 1),
            "backoff_ms": round(sum(c.backoff_ms for c in all_calls), 1),
        },
    }


def draft_generate(*, draft: Draft, run: DraftRun, deadline: llm.Deadline, already_generating: bool = False) -> Draft:
    """Write the reply for ``draft`` within ``deadline``; ends ready, failed or superseded.

    ``already_generating``: the caller inserted the draft in ``generating`` in this run (no
    transition needed).
    """
    if not already_generating:
        now = timezone.now()
        moved = Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id, status__in=OPEN_STATUSES).update(
            status=DraftStatus.GENERATING, generation_started_at=now, updated_at=now
        )
        if not moved:  # finished by someone else meanwhile
            draft.refresh_from_db()
            return draft
        draft.status, draft.generation_started_at = DraftStatus.GENERATING, now
    if run.has_newer_inbound():
        return draft_finish(
            draft=draft, status=DraftStatus.SUPERSEDED, failure_reason="stale", error="a newer inbound message arrived"
        )

    try:
        return _draft_write(draft=draft, run=run, deadline=deadline)
    except llm.LLMError as exc:
        if exc.call is not None and exc.call not in run.calls:
            run.calls.append(exc.call)
        return _draft_failed(draft=draft, run=run, failure_reason=exc.code, error=f"OpenAI call failed: {exc}")
    except SoftTimeLimitExceeded:
        return _draft_failed(
            draft=draft, run=run, failure_reason="timeout", error="the task's soft time limit was reached"
        )
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
        return _draft_failed(
            draft=draft, run=run, failure_reason="unexpected", error=f"unexpected error: {type(exc).__name__}"
        )


def _draft_write(*, draft: Draft, run: DraftRun, deadline: llm.Deadline) -> Draft:
    """Slots, prompts and the LLM calls (first try, larger budget, fallback); the final write."""
    message, calls = run.message, run.calls
    workspace = message.workspace
    if run.first_answer is None:
        run.slots = slots_to_offer(workspace=workspace, lead=message.lead, count=workspace.slots_to_offer)
    slots = run.slots  # with a first answer: the slots that answer offers (drafts/services/onecall.py)
    instructions, prompt, prompt_context = draft_prompts(run=run)
    budget = draft_token_budget(channel=message.channel, input_chars=len(instructions) + len(prompt))
    cap = settings.OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP
    if run.first_answer is not None:
        call = run.first_answer  # the one-call reply: every check of a drafted reply applies
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
            draft=draft,
            run=run,
            failure_reason=reason,
            error=f"no usable output after {len(calls)} calls (last: {reason})",
        )
    if run.openai_errors_open:
        integration_error_resolve(workspace=draft.workspace_id, source="openai", code_prefix=DRAFT_ERROR_PREFIX)
    content = call.text
    if message.channel == Channel.EMAIL:
        signature = workspace.signature.strip()
        if signature and signature not in content:
            content = f"{content.rstrip()}\n\n{signature}"
    subject = ""
    if message.channel == Channel.EMAIL and message.subject:
        subject = message.subject if message.subject.lower().startswith("re:") else f"Re: {message.subject}"
    return draft_finish_ready(
        draft=draft,
        message=message,
        content=content,
        subject=subject,
        model=call.model,
        max_output_tokens=call.max_output_tokens,
        incomplete_reason="",
        usage=_usage(run=run),
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


def _draft_failed(*, draft: Draft, run: DraftRun, failure_reason: str, error: str) -> Draft:
    calls = run.calls
    last = calls[-1] if calls else None
    integration_error_record(
        workspace=draft.workspace_id,
        source=IntegrationError.Source.OPENAI,
        code=f"{DRAFT_ERROR_PREFIX}{failure_reason}"[:64],
        message=f"draft generation failed: {error}",
        context={"draft_id": draft.pk, "message_id": draft.message_id, "calls": len(calls)},
    )
    return draft_finish(
        draft=draft,
        status=DraftStatus.FAILED,
        failure_reason=failure_reason,
        error=error,
        content="",  # never store a truncated or partial reply
        model=last.model if last else "",
        max_output_tokens=last.max_output_tokens if last else None,
        # Why the model's answers were cut, even when a later call failed for another reason.
        incomplete_reason=next((c.incomplete_reason for c in reversed(calls) if c.incomplete_reason), ""),
        usage=_usage(run=run),
        attempts=sum(c.http_attempts for c in calls),
        latency_ms=round(sum(c.latency_ms for c in calls)),
        offered_slots=run.slots,
        prompt_version=DRAFT_PROMPT_VERSION,
    )
