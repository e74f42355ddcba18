"""Classification rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

import pytest

from drafts import classification, llm
from drafts.classification import classify_fast, classify_with_llm
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

    assert str(failure.value) == "invalid_output: classification is not one of the tags"
    assert failure.value.call.text == answer
    assert [call.text for call in failure.value.calls] == [answer]  # its usage is kept


def test_an_answer_in_the_tag_list_is_the_tag(monkeypatch):
    _model_answers(monkeypatch, '{"sentiment": "Out of Office"}')

    outcome = classify_with_llm(body="hm", subject="", channel="sms", context=[], deadline=llm.Deadline(5))

    assert (outcome.tag, outcome.source) == (Sentiment.OUT_OF_OFFICE, "llm")


def test_the_classification_request_asks_the_classify_model_for_one_tag(fake_openai, settings):
    settings.OPENAI_CLASSIFY_MODEL = "classify-model-under-test"

    outcome = classify_with_llm(
        body="Could you come by on Monday?", subject="Re: roof", channel="email", context=[], deadline=llm.Deadline(5)
    )

    (request,) = fake_openai.requests
    assert request["model"] == "classify-model-under-test"
    assert request["max_output_tokens"] == classification.CLASSIFY_MAX_OUTPUT_TOKENS
    assert request["reasoning"]["effort"] == "low"
    assert all(tag in request["instructions"] for tag in classification.LLM_TAGS)
    assert request["input"].startswith("Channel: email\n")
    assert request["input"].endswith("MESSAGE TO CLASSIFY:\nSubject: Re: roof\nCould you come by on Monday?\n")
    assert [call.model for call in outcome.calls] == ["classify-model-under-test"]


def test_an_empty_body_is_classified_as_empty(fake_openai):
    classify_with_llm(body="", subject="", channel="sms", context=[], deadline=llm.Deadline(5))

    assert fake_openai.requests[0]["input"].endswith("MESSAGE TO CLASSIFY:\n\n")


def test_an_answer_cut_short_is_asked_again_with_a_larger_budget_and_less_reasoning(fake_openai):
    fake_openai.enqueue("incomplete", "ok")

    outcome = classify_with_llm(body="ok then", subject="", channel="sms", context=[], deadline=llm.Deadline(5))

    first, second = fake_openai.requests
    assert (first["max_output_tokens"], first["reasoning"]["effort"]) == (512, "low")
    assert (second["max_output_tokens"], second["reasoning"]["effort"]) == (1024, "minimal")
    assert [call.status for call in outcome.calls] == ["incomplete", "completed"]
    assert outcome.source == "llm" and outcome.tag in classification.LLM_TAGS


def test_an_answer_cut_short_twice_is_a_max_output_tokens_error(fake_openai):
    fake_openai.enqueue("incomplete", "incomplete")

    with pytest.raises(llm.LLMError) as failure:
        classify_with_llm(body="ok then", subject="", channel="sms", context=[], deadline=llm.Deadline(5))

    assert str(failure.value) == "max_output_tokens: classification incomplete twice"
    assert failure.value.call.max_output_tokens == 1024
    assert [call.status for call in failure.value.calls] == ["incomplete", "incomplete"]


def test_only_the_first_200_characters_of_a_subject_are_read():
    assert classify_fast(body="hello", subject="-" * 197 + "OOO") == Sentiment.OUT_OF_OFFICE
    assert classify_fast(body="hello", subject="-" * 198 + "OOO") is None
