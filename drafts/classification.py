"""Sentiment classification of inbound messages: regex fast paths, then the LLM.

Pure functions over text plus one LLM call; the writes (message, lead,
IntegrationError) live in ``drafts.services.classify``.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.template.loader import get_template

from drafts import llm
from drafts.quoting import new_text, reply_text
from leads.models import Sentiment
from messaging.models import Channel

CLASSIFY_PROMPT_VERSION = "classify-v1"
CLASSIFY_MAX_OUTPUT_TOKENS = 512
CLASSIFY_RETRY_MAX_OUTPUT_TOKENS = 1024

# Tags the model may answer. ``New`` (never classified) and ``Snoozed`` (an
# operator's choice) are states, not something a message can say.
LLM_TAGS: list[str] = [s.value for s in Sentiment if s not in (Sentiment.NEW, Sentiment.SNOOZED)]

CLASSIFICATION_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "name": "sentiment_classification",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": LLM_TAGS}},
        "required": ["sentiment"],
        "additionalProperties": False,
    },
}

_I = re.IGNORECASE | re.MULTILINE

# The fast paths save an LLM call on plain messages; a wrong cold tag costs a warm lead its
# reply, so they are conservative: only the lead's new text counts, and a message with a
# warm cue (a question, a yes, a "but", scheduling or pricing words, an un-negated
# "interested") goes to the LLM, which knows every tag. Exceptions: the opt-out keyword as
# the whole message, and subjects that only mail servers write (bounces, auto-replies).

# Opt-outs: a bare keyword as the whole message, or an explicit request.
_OPT_OUT_WHOLE = re.compile(r"\A\W*(stop|stop ?all|unsubscribe|cancel|end|quit|revoke|opt[ -]?out|remove)\W*\Z", _I)
# Carrier opt-out keywords (CTIA; the FCC's 2024 rule adds revoke and opt out) standing as a
# sentence or clause of their own anywhere in a short SMS ("Who is this? STOP", "Stop, wrong
# number", "STOP - wrong number", "please stop"): carriers act on them, so do we, whatever else
# the text says. Clauses end at . ! ? ; : , a dash or a line break.
_CARRIER_KEYWORD_CLAUSE = re.compile(
    r"(?:\A|[.!?;:,\n]|\s[-\u2013\u2014])\W*(?:please\s+)?"
    r"(?:stop ?all|stop|unsubscribe|cancel|end|quit|revoke|opt[ -]?out)"
    r"(?:\s+(?:please|now|thanks?|thank you))?\W*?(?:[.!?;:,\n]|\s[-\u2013\u2014]|\Z)",
    _I,
)
SHORT_TEXT_CHARS = 320
_OPT_OUT_PHRASES = re.compile(
    r"\bunsubscribe\b|\bopt(?:ed)?[ -]?out\b|\bremove me\b|\btake me off\b"
    r"|\bstop (?:texting|messaging|emailing|contacting|calling|sending)\b"
    r"|\bdo not (?:contact|text|email|call|message) me\b|\bdon'?t (?:contact|text|email|call|message) me\b"
    r"|\blose my (?:number|email)\b",
    _I,
)
_BOUNCE = re.compile(
    r"\bdelivery status notification \(fail(?:ure|ed)\)|\bundeliverable\b|\bmail delivery (?:failed|failure)\b"
    r"|\bmailer-daemon\b|\baddress not found\b|\bmessage (?:was )?not delivered\b"
    r"|\bdelivery has failed\b|\brecipient address rejected\b|\bmailbox (?:unavailable|not found|full)\b",
    _I,
)
_OUT_OF_OFFICE = re.compile(
    r"\bout of (?:the )?office\b|\bOOO\b|\bon (?:annual|parental|maternity|paternity|sick) leave\b"
    r"|\baway from (?:the office|my desk|email)\b|\blimited access to (?:my )?e-?mail\b"
    r"|\bI(?:'m| am) (?:currently )?(?:away|out|travell?ing|on (?:vacation|holiday)) (?:until|through|till)\b",
    _I,
)
_AUTOMATED = re.compile(
    r"\bauto(?:matic|mated)?[- ]?(?:reply|response)\b|\bthis is an automated\b|\bdo not reply to this\b"
    r"|\bthis (?:mailbox|inbox) is not monitored\b|\bthank you for (?:your email|contacting us)[^.]{0,200}\bwe will\b",
    _I,
)
_NOT_INTERESTED = re.compile(
    r"\bnot interested\b|\bno longer interested\b|\bnot (?:a good fit|for us|for me)\b"
    r"|\A\W*no,? thanks?(?: you)?\W*\Z|\bno thank you\b|\bnot looking\b",
    _I,
)
# Anything that may make a cold-looking message warm: then the LLM decides.
_WARM_CUE = re.compile(
    r"\?|\b(?:yes|yeah|yep|sure|ok(?:ay)?|sounds good|let'?s|but|however|although|though|unless|maybe"
    r"|call me|give me a call|talk|chat|meet|meeting|book|schedule|demo|quote|price|pricing|cost|how much"
    r"|tell me more|send (?:me|over|it)|works|available|free (?:on|at|this|next)|tomorrow)\b"
    r"|(?<!not )(?<!no longer )\binterested\b",
    _I,
)
# Deferred interest ("not right now, follow up in Q3") is Follow Up, which gets a draft: these
# words keep only the Not Interested fast path off ("do not reach out again" stays an opt-out).
_DEFERRED_CUE = re.compile(
    r"\b(?:follow(?:ing)?[ -]up|reach(?:ing)? out|circle back|check back|touch base|later|right now|at the moment"
    r"|at this (?:time|point)|(?:this|next) (?:week|month|quarter|year|spring|summer|fall|autumn|winter)"
    r"|in (?:Q[1-4]|a (?:few )?(?:weeks?|months?))|january|february|march|april|june|july|august"
    r"|september|october|november|december)\b",
    _I,
)
# Subjects mail servers set (never a person's "Re: ..."): read only at the start.
# Failures only: "Delivery Status Notification (Delay)" / "(Relay)" / "(Success)" are not bounces.
_SUBJECT_BOUNCE = re.compile(
    r"\A\W*(?:undeliverable|undelivered mail|delivery status notification \(fail(?:ure|ed)\)"
    r"|mail delivery (?:failed|failure)|returned mail|failure notice|delivery failure)",
    _I,
)
_SUBJECT_OUT_OF_OFFICE = re.compile(r"\A\W*(?:out of (?:the )?office|OOO)\b", _I)
_SUBJECT_AUTOMATED = re.compile(r"\A\W*(?:automatic reply|auto[- ]?reply|autoreply|auto[- ]?response)\b", _I)


def classify_fast(*, body: str, subject: str = "", channel: str = "") -> str | None:
    """The tag when the message says it plainly, else None (then the LLM decides).

    Only the lead's new text counts (``quoting.new_text``): an unsubscribe footer, an
    out-of-office notice or a "not interested" in the quoted history says nothing about this
    reply, and a message with no new text at all goes to the LLM. The subject counts only for
    what mail servers write at its start (bounces, automatic replies, out-of-office).
    """
    reply = new_text(body or "")
    subject = (subject or "")[:200]
    carrier = channel == Channel.SMS and carrier_opt_out(reply)
    if _OPT_OUT_WHOLE.search(reply) or _SUBJECT_BOUNCE.search(subject) or carrier:
        return Sentiment.BLACKLIST
    if _SUBJECT_OUT_OF_OFFICE.search(subject):
        return Sentiment.OUT_OF_OFFICE
    if _SUBJECT_AUTOMATED.search(subject):
        return Sentiment.OUT_OF_OFFICE if _OUT_OF_OFFICE.search(reply) else Sentiment.AUTOMATED_REPLY
    if not reply.strip() or _WARM_CUE.search(reply):
        return None
    if _OPT_OUT_PHRASES.search(reply) or _BOUNCE.search(reply):
        return Sentiment.BLACKLIST
    if _OUT_OF_OFFICE.search(reply):
        return Sentiment.OUT_OF_OFFICE
    if _AUTOMATED.search(reply):
        return Sentiment.AUTOMATED_REPLY
    if _NOT_INTERESTED.search(reply) and not _DEFERRED_CUE.search(reply):
        return Sentiment.NOT_INTERESTED
    return None


def carrier_opt_out(text: str) -> bool:
    """A carrier keyword as a clause of its own in a short text (an SMS's new text)."""
    return len(text) <= SHORT_TEXT_CHARS and bool(_CARRIER_KEYWORD_CLAUSE.search(text))


def opt_out_suspected(body: str) -> bool:
    """The lead's new text asks to opt out in words the fast path left to the LLM ("Interested!
    Please remove me from the other list"). When the LLM fails, such a message is left
    unclassified for a retry: neither a final ``Blacklist`` nor a warm tag on a guess."""
    return bool(_OPT_OUT_PHRASES.search(new_text(body or "")))


@dataclass
class ClassificationOutcome:
    tag: str
    source: str  # "regex" | "llm" | "provider" | "fallback"
    calls: list[llm.LLMCall] = field(default_factory=list)
    error: llm.LLMError | None = None


@functools.cache
def prompt_template(name: str):
    """A compiled prompt template, loaded once per process (``drafts/<name>.txt``)."""
    return get_template(f"drafts/{name}.txt")


@functools.cache
def _classify_instructions() -> str:
    # The same for every message: rendered once per process.
    return prompt_template("classify_instructions").render({"tags": LLM_TAGS})


def _transcript(context: list[dict[str, str]]) -> str:
    lines = []
    for item in context:
        who = "LEAD" if item["direction"] == "inbound" else "US"
        lines.append(f"[{who}] {item['text']}")
    return "\n".join(lines)


def classify_with_llm(
    *,
    body: str,
    subject: str,
    channel: str,
    context: list[dict[str, str]],
    deadline: llm.Deadline,
) -> ClassificationOutcome:
    """Ask the LLM for one tag from the strict enum. Raises ``llm.LLMError`` on failure.

    The model reads only the lead's new text of ``body`` (``reply_text``,
    idempotent, so a caller may strip it first too); ``context`` is used as given.
    """
    body = reply_text(body or "")
    instructions = _classify_instructions()
    prompt = prompt_template("classify_input").render(
        {"channel": channel, "transcript": _transcript(context), "subject": subject, "body": body}
    )
    calls: list[llm.LLMCall] = []
    try:
        for budget in (CLASSIFY_MAX_OUTPUT_TOKENS, CLASSIFY_RETRY_MAX_OUTPUT_TOKENS):
            call = llm.responses_create(
                model=settings.OPENAI_CLASSIFY_MODEL,
                instructions=instructions,
                input=prompt,
                max_output_tokens=budget,
                reasoning_effort="low" if budget == CLASSIFY_MAX_OUTPUT_TOKENS else "minimal",
                text_format=CLASSIFICATION_FORMAT,
                deadline=deadline,
                timeout_s=settings.OPENAI_CLASSIFY_TIMEOUT_S,
            )
            calls.append(call)
            if call.status == "incomplete":
                continue
            tag = _parse_tag(call.text)
            if tag is None:
                raise llm.LLMError("invalid_output", "classification is not one of the tags", call)
            return ClassificationOutcome(tag=tag, source="llm", calls=calls)
        raise llm.LLMError("max_output_tokens", "classification incomplete twice", calls[-1])
    except llm.LLMError as exc:
        # Keep the usage of every call made, not only the last one's.
        exc.calls = calls + [c for c in exc.all_calls() if c not in calls]
        raise


def _parse_tag(text: str) -> str | None:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    tag = data.get("sentiment") if isinstance(data, dict) else None
    return tag if tag in LLM_TAGS else None
