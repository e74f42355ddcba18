"""Classification rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

import pytest

from drafts import classification, llm
from drafts.classification import classify_with_llm
from leads.models import Sentiment


def test_the_llm_reads_the_conversation_with_who_said_what(fake_openai):
    context = [
        {"direction": "outbound", "text": "Hi, we fix roofs. Want a quote?"},
        {"direction": "inbound", "text": "What does a quote cost?"},
    ]

    classify_with_llm(body="ok", subject="", channel="sms", context=context, deadline=llm.Deadline(5))

    prompt = fake_openai.requests[0]["input"]
    assert "[US] Hi, we fix roofs. Want a quote?\n[LEAD] What does a quote cost?" in prompt


def _model_answers(monkeypatch, text: str) -> None:
    def answer(**kwargs):
        return llm.LLMCall(model=kwargs["model"], status="completed", text=text, max_output_tokens=16)

    monkeypatch.setattr(classification.llm, "responses_create", answer)


@pytest.mark.parametrize(
    "answer",
    [
        '["Interested"]',  # valid JSON, not an object
        '"Interested"',
        '{"sentiment": "Snoozed"}',  # an operator's state, not a tag the model may give
        '{"sentiment": "New"}',
        '{"sentiment": "Very interested"}',
        '{"tag": "Interested"}',
        "Interested",
    ],
)
def test_an_answer_outside_the_tag_list_is_invalid_output(monkeypatch, answer):
    _model_answers(monkeypatch, answer)

    with pytest.raises(llm.LLMError) as failure:
        classify_with_llm(body="hm", subject="", channel="sms", context=[], deadline=llm.Deadline(5))

    assert failure.value.code == "invalid_output"
    assert [call.text for call in failure.value.calls] == [answer]  # its usage is kept


def test_an_answer_in_the_tag_list_is_the_tag(monkeypatch):
    _model_answers(monkeypatch, '{"sentiment": "Out of Office"}')

    outcome = classify_with_llm(body="hm", subject="", channel="sms", context=[], deadline=llm.Deadline(5))

    assert (outcome.tag, outcome.source) == (Sentiment.OUT_OF_OFFICE, "llm")
