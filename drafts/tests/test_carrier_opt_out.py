"""Carrier opt-out keywords (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPT OUT)
standing as a clause of their own anywhere in a short SMS blacklist the lead, with the LLM down
(the conftest points OpenAI at a closed port)."""

from __future__ import annotations

import pytest

from drafts.classification import classify_fast
from drafts.models import Draft
from drafts.services.pipeline import message_classify_and_draft
from drafts.tests.factories import lead_create, message_create
from leads.models import LeadStatus, Sentiment

pytestmark = pytest.mark.django_db

OPT_OUTS = [
    "STOP",
    "stopall",
    "Who is this? STOP",
    "Stop. Wrong number",
    "Thanks for the info. Unsubscribe",
    "Yes call me tomorrow! QUIT",
    "cancel.",
    "END",
    "Revoke",
    "Not sure how you got this number.\nOPT OUT",
    "opt-out!",
    "Stop, wrong number",
    "Wrong number, stop",
    "STOP - wrong number",
    "Please stop",
    "stop please",
    "Great \u2014 stop",
]
NOT_OPT_OUTS = [
    "I can't stop thinking about it, call me?",
    "Let's meet at the end of the week?",
    "Can we cancel Tuesday and do Wednesday?",
    "We should stop by your office?",
    "Stop by any time. What are your hours?",
    "Sure, end of day works?",
]


@pytest.mark.parametrize("text", OPT_OUTS)
def test_a_keyword_sentence_blacklists_the_lead_without_the_llm(workspace, text):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body=text)
    assert message_classify_and_draft(message_id=message.pk) is None
    message.refresh_from_db()
    lead.refresh_from_db()
    assert message.sentiment == Sentiment.BLACKLIST
    assert lead.status == LeadStatus.BLACKLISTED
    assert not Draft.objects.filter(lead=lead).exists()


@pytest.mark.parametrize("text", NOT_OPT_OUTS)
def test_the_words_inside_a_sentence_are_not_an_opt_out(text):
    assert classify_fast(body=text, channel="sms") != Sentiment.BLACKLIST


def test_a_keyword_clause_in_an_email_is_left_to_the_llm():
    """ "Can't make Tuesday. Cancel." in an email is about a meeting, not the carrier's opt-out."""
    assert classify_fast(body="Can't make Tuesday. Cancel.", channel="email") is None
    assert classify_fast(body="STOP", channel="email") == Sentiment.BLACKLIST  # the whole message still is


def test_a_keyword_sentence_in_a_long_email_is_left_to_the_llm():
    long_text = "Thanks for the detailed proposal, we reviewed it with the team. " * 6 + "End."
    assert len(long_text) > 320
    assert classify_fast(body=long_text, channel="sms") is None


def test_short_means_at_most_320_characters():
    def text(length: int) -> str:
        keyword = ". STOP"
        return "x" * (length - len(keyword)) + keyword

    assert classify_fast(body=text(320), channel="sms") == Sentiment.BLACKLIST
    assert classify_fast(body=text(321), channel="sms") is None
