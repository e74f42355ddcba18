"""One LLM call instead of two (docs/drafts.md, "One call or two"): for a message that no fast
path tags, the draft model answers the tag and the reply together, as one structured answer.

``message_tag_and_reply`` is asked first by the task (``DRAFT_ONE_CALL``). It stores the tag
exactly as the classification step would (``classification_store``: lead, message, opt-outs
skip drafts) and hands the reply to the draft chain as its first answer (``DraftRun.first_answer``), which then applies
every check of a drafted reply (incomplete, empty, SMS over 320 characters: the usual retries
and fallback model follow). When the call fails, is cut short, or answers no valid tag, nothing
is stored and the two-call flow runs as before (its failure handling included), so the one-call
path adds no way to fail; only that call's time and tokens are lost.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from django.conf import settings

from drafts import llm
from drafts.classification import LLM_TAGS, classify_fast, prompt_template
from drafts.quoting import reply_text
from drafts.run import ClassifyResult, DraftRun
from drafts.selectors import slots_to_offer
from drafts.services.classify import classification_store
from drafts.services.generation import draft_prompts, draft_token_budget
from drafts.services.lifecycle import CLASSIFY_ERROR_PREFIX
from leads.models import DRAFTABLE_SENTIMENTS, Sentiment
from workspaces.services import integration_error_resolve

logger = logging.getLogger(__name__)

ONE_CALL_SOURCE = "llm_one_call"
# The tag's share of the answer, on top of the reply's own budget.
TAG_OUTPUT_TOKENS = 40

TAG_AND_REPLY_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "name": "tag_and_reply",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": LLM_TAGS}, "reply": {"type": "string"}},
        "required": ["sentiment", "reply"],
        "additionalProperties": False,
    },
}


@functools.cache
def _classify_instructions() -> str:
    return prompt_template("classify_instructions").render({"tags": LLM_TAGS})


def _parse(text: str) -> tuple[str, str] | None:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("sentiment") not in LLM_TAGS or not isinstance(data.get("reply"), str):
        return None
    return data["sentiment"], data["reply"].strip()


def message_tag_and_reply(*, run: DraftRun, deadline: llm.Deadline) -> tuple[ClassifyResult, llm.LLMCall | None] | None:
    """Tag ``message`` and write its reply in one call, when no fast path decides it.

    Returns None when the one-call path does not apply or did not work (nothing stored: the
    two-call flow follows); else ``(classification, first_answer)``: the stored tag as a
    ``ClassifyResult`` and, for a draftable tag, the call whose ``text`` is the reply.
    """
    message = run.message
    if not settings.DRAFT_ONE_CALL or message.lead.is_blacklisted:
        return None
    text = reply_text(message.body)
    if classify_fast(body=text, subject=message.subject, channel=message.channel) is not None:
        return None
    # The slots the reply offers: the draft keeps them (``_draft_write`` reads ``run.slots``).
    run.slots = slots_to_offer(workspace=message.workspace, lead=message.lead, count=message.workspace.slots_to_offer)
    draft_instructions, prompt, context = draft_prompts(run=run)
    instructions = prompt_template("tag_and_reply_instructions").render(
        {
            "classify_instructions": _classify_instructions(),
            "draftable": [t for t in LLM_TAGS if t in DRAFTABLE_SENTIMENTS],
            "draft_instructions": prompt_template("draft_instructions").render(
                {**context, "sentiment": "(the tag you chose)"}
            ),
        }
    )
    budget = draft_token_budget(channel=message.channel, input_chars=len(instructions) + len(prompt))
    try:
        call = llm.responses_create(
            model=settings.OPENAI_DRAFT_MODEL,
            instructions=instructions,
            input=prompt,
            max_output_tokens=min(settings.OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP, budget + TAG_OUTPUT_TOKENS),
            reasoning_effort="low",
            text_format=TAG_AND_REPLY_FORMAT,
            deadline=deadline,
            timeout_s=settings.OPENAI_DRAFT_TIMEOUT_S,
        )
    except llm.LLMError as exc:
        logger.info("one-call tag and reply failed (%s): two calls follow", exc.code)
        return None
    parsed = _parse(call.text) if call.status == "completed" else None
    if parsed is None:
        logger.info("one-call answer unusable (%s): two calls follow", call.status or "no status")
        return None
    tag, reply = parsed
    source = ONE_CALL_SOURCE
    if message.provider_interested and tag == Sentiment.NEUTRAL:
        tag, source = Sentiment.INTERESTED, "provider"
    run.tag_to_store = (tag, True)  # stored even if the soft limit interrupts the writes
    stored = classification_store(run=run, tag=tag)
    if run.openai_errors_open:
        integration_error_resolve(workspace=message.workspace_id, source="openai", code_prefix=CLASSIFY_ERROR_PREFIX)
    classification = ClassifyResult(tag=str(stored), source=source if stored == tag else "provider")
    if stored not in DRAFTABLE_SENTIMENTS:
        return classification, None
    if not reply or stored != tag:
        # No reply came with the tag (one the provider's flag changed, a model that left it
        # out): the draft chain writes it from its own first call.
        return classification, None
    # The reply is the draft chain's first answer: its checks (SMS length...) apply.
    call.text = reply
    return classification, call
