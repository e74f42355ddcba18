"""One LLM call for the tag and the reply (``DRAFT_ONE_CALL``, drafts/services/onecall.py), and the
two-call chain's guarantees kept: opt-outs never drafted, unusable answers handled."""

from __future__ import annotations

import pytest

from drafts.models import Draft, DraftStatus
from drafts.services.pipeline import message_classify_and_draft
from drafts.tests.factories import lead_create, message_create
from leads.models import LeadStatus, Sentiment
from messaging.models import Channel

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_call(settings):
    settings.DRAFT_ONE_CALL = True


def _kinds(fake) -> list[str]:
    """Per request: the structured answer asked for (or "draft" for free text)."""
    return [((b.get("text") or {}).get("format") or {}).get("name", "draft") for b in fake.requests]


def test_a_warm_reply_is_tagged_and_drafted_in_one_call(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="Yes I'm interested, can we book a meeting?")
    fake_openai.enqueue_draft_texts("Great! Would Tuesday at 2pm work for a short call?")

    draft = message_classify_and_draft(message_id=message.pk)

    message.refresh_from_db()
    lead.refresh_from_db()
    assert _kinds(fake_openai) == ["tag_and_reply"]
    assert message.sentiment == Sentiment.MEETING_REQUESTED and lead.sentiment == Sentiment.MEETING_REQUESTED
    assert draft.status == DraftStatus.READY
    assert draft.content == "Great! Would Tuesday at 2pm work for a short call?"
    assert draft.usage["classification"]["source"] == "llm_one_call"
    assert len(draft.usage["calls"]) == 1 and draft.usage["input_tokens"] > 0
    # The one prompt carries the classification rules and the reply rules.
    instructions = fake_openai.requests[0]["instructions"]
    assert "MESSAGE TO CLASSIFY" in instructions and "Channel: sms" in instructions


def test_a_cold_tag_gets_no_draft_even_when_the_model_wrote_a_reply(workspace, fake_openai):
    message = message_create(lead=lead_create(workspace=workspace), body="We'll pass on this one for now, thanks")
    fake_openai.enqueue_draft_texts("A reply the model should not have written")

    assert message_classify_and_draft(message_id=message.pk) is None

    message.refresh_from_db()
    assert message.sentiment == Sentiment.NEUTRAL and _kinds(fake_openai) == ["tag_and_reply"]
    assert not Draft.objects.filter(message=message).exists()


def test_an_opt_out_the_model_tags_is_never_drafted(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    # A warm cue keeps the fast path off: the model decides, and says Blacklist.
    message = message_create(lead=lead, body="Interested? No. Please remove me from this list")
    fake_openai.enqueue_draft_texts("Sure, when can we talk?")

    assert message_classify_and_draft(message_id=message.pk) is None

    lead.refresh_from_db()
    assert lead.status == LeadStatus.BLACKLISTED
    assert not Draft.objects.filter(message=message).exists()


@pytest.mark.parametrize("first", ["incomplete", "400", "empty"])
def test_an_unusable_one_call_answer_falls_back_to_the_two_calls(workspace, fake_openai, first):
    message = message_create(
        lead=lead_create(workspace=workspace), body="Interested, what does it cost?", channel=Channel.EMAIL
    )
    fake_openai.enqueue(first, "ok", "ok")

    draft = message_classify_and_draft(message_id=message.pk)

    assert _kinds(fake_openai) == ["tag_and_reply", "sentiment_classification", "draft"]
    assert draft.status == DraftStatus.READY and draft.content
    assert draft.usage["classification"]["source"] == "llm"


def test_a_one_call_sms_reply_over_320_characters_goes_to_the_fallback_model(workspace, fake_openai, settings):
    message = message_create(lead=lead_create(workspace=workspace), body="Yes, interested! Call me?")
    fake_openai.enqueue_draft_texts("x" * 321, "Happy to call: when suits you?")

    draft = message_classify_and_draft(message_id=message.pk)

    assert _kinds(fake_openai) == ["tag_and_reply", "draft"]
    assert fake_openai.requests[1]["model"] == settings.OPENAI_DRAFT_FALLBACK_MODEL
    assert draft.status == DraftStatus.READY and draft.content == "Happy to call: when suits you?"


def test_a_fast_path_tag_makes_no_call(workspace, fake_openai):
    message = message_create(lead=lead_create(workspace=workspace), body="STOP")

    assert message_classify_and_draft(message_id=message.pk) is None
    assert fake_openai.requests == []


def test_a_warm_tag_without_a_reply_gets_its_reply_from_a_draft_call(workspace, fake_openai, settings):
    message = message_create(lead=lead_create(workspace=workspace), body="Interested, what does it cost?")
    fake_openai.enqueue_draft_texts("", "It starts at $99 a month: want a quick call?")

    draft = message_classify_and_draft(message_id=message.pk)

    assert _kinds(fake_openai) == ["tag_and_reply", "draft"]
    assert draft.status == DraftStatus.READY and draft.content == "It starts at $99 a month: want a quick call?"
    assert fake_openai.requests[1]["model"] == settings.OPENAI_DRAFT_MODEL  # a first draft call, not the fallback
