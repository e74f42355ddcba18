"""The state of one ``classify_and_draft`` run, passed explicitly from step to step.

``drafts.services.pipeline`` builds one ``DraftRun`` per task from its single load query;
classification and generation read and fill it. Nothing of a run is kept on model instances.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from drafts import llm
from drafts.quoting import reply_text
from messaging.models import Direction, Message
from messaging.selectors import conversation_before, message_has_newer_inbound


@dataclass
class ClassifyResult:
    tag: str
    source: str
    calls: list[llm.LLMCall] = field(default_factory=list)


@dataclass
class DraftRun:
    message: Message  # the inbound message, with its lead and workspace loaded
    started: float = field(default_factory=time.monotonic)  # the task's start (``task_prerun``)
    entered: float | None = None  # when the service was entered (after Celery's own work)
    live_draft_id: int | None = None  # the message's live draft when the run began
    # False when the run's first read saw no open OpenAI IntegrationError for the workspace:
    # then a success has nothing to resolve and skips the UPDATE (an error a concurrent task
    # records meanwhile is resolved by the next success that sees it).
    openai_errors_open: bool = True
    # The LLM's tag and whether the provider's flag may still change it, once classification
    # has it: stored even when the soft time limit interrupts the writes.
    tag_to_store: tuple[str, bool] | None = None
    # Whether a newer inbound message of the lead exists: learnt by classification's write, or
    # asked once (``has_newer_inbound``).
    newer_inbound: bool | None = None
    classification: ClassifyResult | None = None
    # The reply the one-call path wrote with the tag (drafts/services/onecall.py): the draft
    # chain's first answer instead of a first draft call.
    first_answer: llm.LLMCall | None = None
    calls: list[llm.LLMCall] = field(default_factory=list)  # the draft's LLM calls
    slots: list[dict] = field(default_factory=list)  # the slots the draft offers
    _transcripts: dict[int, list[dict[str, str]]] = field(default_factory=dict)

    def transcript(self, *, limit: int) -> list[dict[str, str]]:
        """The lead's last ``limit`` messages before this one, oldest first (read once per run).
        A lead's email quotes the history the transcript already holds: only its new text is kept."""
        lines = self._transcripts.get(limit)
        if lines is None:
            lines = self._transcripts[limit] = [
                {"direction": d, "text": (reply_text(b or "") if d == Direction.INBOUND else (b or ""))[:2000]}
                for d, b in conversation_before(self.message, limit=limit)
            ]
        return lines

    def has_newer_inbound(self) -> bool:
        """Whether the lead wrote again after this message (then its draft is stale), asked once."""
        if self.newer_inbound is None:
            self.newer_inbound = message_has_newer_inbound(self.message)
        return self.newer_inbound
