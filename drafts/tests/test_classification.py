from __future__ import annotations

import time

import pytest

from drafts import llm
from drafts.classification import LLM_TAGS, classify_fast, classify_with_llm
from drafts.services.classify import message_classify
from drafts.tests.factories import lead_create, message_create
from leads.models import Sentiment
from messaging.models import Channel
from workspaces.models import IntegrationError


@pytest.mark.parametrize(
    ("body", "subject", "tag"),
    [
        ("STOP", "", Sentiment.BLACKLIST),
        ("  unsubscribe. ", "", Sentiment.BLACKLIST),
        ("Please remove me from your list", "", Sentiment.BLACKLIST),
        ("stop texting me", "", Sentiment.BLACKLIST),
        ("Address not found: your message wasn't delivered", "Delivery Status Notification (Failure)", "Blacklist"),
        ("Not interested, thanks", "", Sentiment.NOT_INTERESTED),
        ("no thanks", "", Sentiment.NOT_INTERESTED),
        ("I am out of the office until Monday with limited access to email", "", Sentiment.OUT_OF_OFFICE),
        ("Thanks for your message", "Automatic reply: Roofing", Sentiment.AUTOMATED_REPLY),
        ("Yes, interested! When can we talk?", "", None),
        ("Can't stop thinking about your offer, call me", "", None),
        # Subjects mail servers set, and plain text.
        ("Thank you for your email.", "Out of Office: Re: Roofing", Sentiment.OUT_OF_OFFICE),
        ("We received your message.", "Automatic reply: Roofing", Sentiment.AUTOMATED_REPLY),
        ("I am out of the office until the 12th.", "Automatic reply: Roofing", Sentiment.OUT_OF_OFFICE),
        ("The following address failed: x@y.z", "Undeliverable: Roofing", Sentiment.BLACKLIST),
        ("Address not found", "Delivery Status Notification (Failure)", Sentiment.BLACKLIST),
        ("This is the mail system at host mx.example.com.", "Mail delivery failed: returning", Sentiment.BLACKLIST),
        ("Please take me off your list.", "Re: Roofing", Sentiment.BLACKLIST),
        ("I'm currently away until Dec 3 with no access to email.", "", Sentiment.OUT_OF_OFFICE),
        # The deferred-interest words do not turn off the other fast paths.
        ("Please remove me from your list and do not reach out again.", "", Sentiment.BLACKLIST),
        ("Unsubscribe. Not interested at this time.", "", Sentiment.BLACKLIST),
        ("Take me off your list. Do not follow up.", "", Sentiment.BLACKLIST),
        ("I am out of the office until January 6 and will reply later.", "", Sentiment.OUT_OF_OFFICE),
        ("This is an automated response. We will get back to you later.", "", Sentiment.AUTOMATED_REPLY),
        ("Mailbox full, message not delivered. Try again later.", "", Sentiment.BLACKLIST),
        ("Not interested, thanks.", "", Sentiment.NOT_INTERESTED),
    ],
)
def test_fast_paths(body, subject, tag):
    assert classify_fast(body=body, subject=subject) == tag


def test_llm_tags_are_the_design_tags_without_states():
    assert "Interested" in LLM_TAGS and "Blacklist" in LLM_TAGS
    assert "New" not in LLM_TAGS and "Snoozed" not in LLM_TAGS


@pytest.mark.django_db
def test_llm_classification_uses_strict_schema_and_context(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message_create(lead=lead, body="Hi, we fix roofs", direction="outbound")
    message = message_create(lead=lead, body="Can you send pricing info?")

    result = message_classify(message=message, deadline=llm.Deadline(5))

    assert result.tag == Sentiment.INFORMATION_REQUESTED and result.source == "llm"
    request = fake_openai.requests[0]
    fmt = request["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True
    assert fmt["schema"]["properties"]["sentiment"]["enum"] == LLM_TAGS
    assert "we fix roofs" in request["input"]  # the conversation is context
    message.refresh_from_db()
    assert message.sentiment == Sentiment.INFORMATION_REQUESTED


@pytest.mark.django_db
def test_llm_failure_falls_back_to_neutral_records_error_and_next_success_resolves(workspace, fake_openai):
    fake_openai.enqueue("500", "500", "500", "500")
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="hmm, who is this?")

    result = message_classify(message=message, deadline=llm.Deadline(5))

    assert result.tag == Sentiment.NEUTRAL and result.source == "fallback"
    error = IntegrationError.objects.get(workspace=workspace, source="openai", resolved_at__isnull=True)
    assert error.code == "classify_server_error"
    assert "who is this" not in error.message

    second = message_create(lead=lead, body="ok interested")
    assert message_classify(message=second, deadline=llm.Deadline(5)).tag == Sentiment.INTERESTED
    error.refresh_from_db()
    assert error.resolved_at is not None


@pytest.mark.django_db
def test_provider_interested_counts_unless_the_text_says_otherwise(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    vague = message_create(lead=lead, body="ok", channel=Channel.EMAIL, provider_interested=True)
    assert message_classify(message=vague, deadline=llm.Deadline(5)).tag == Sentiment.INTERESTED

    other = lead_create(workspace=workspace)
    declined = message_create(lead=other, body="Not interested.", channel=Channel.EMAIL, provider_interested=True)
    assert message_classify(message=declined, deadline=llm.Deadline(5)).tag == Sentiment.NOT_INTERESTED


@pytest.mark.django_db
def test_blacklist_is_sticky_on_the_lead(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message_classify(message=message_create(lead=lead, body="unsubscribe"), deadline=llm.Deadline(5))
    message_classify(message=message_create(lead=lead, body="interested after all"), deadline=llm.Deadline(5))
    lead.refresh_from_db()
    assert lead.sentiment == Sentiment.BLACKLIST


# Quoted history below the lead's reply: only the new text is classified.
_GMAIL_QUOTE = "On Mon, 3 Nov 2026 at 10:00, John Smith <\njohn@acme-roofing.com> wrote:\n"
_COLD_EMAIL = "> Hi Dana, we fix roofs. Are you free for a quick chat?\n"


@pytest.mark.parametrize(
    "body",
    [
        f"Yes, let's talk Tuesday\n\n{_GMAIL_QUOTE}{_COLD_EMAIL}> To unsubscribe click here",
        f"Yes, let's talk Tuesday\n\n{_GMAIL_QUOTE}{_COLD_EMAIL}> Reply STOP to opt out",
        f"Yes, let's talk Tuesday\n\n{_GMAIL_QUOTE}> I am out of the office until Monday\n",
        f"Yes, let's talk Tuesday\n\n{_GMAIL_QUOTE}> Not interested.\n",
        f"Yes, let's talk Tuesday\n\n{_GMAIL_QUOTE}> This is an automated message, do not reply to this\n",
        "Sounds good, call me Tuesday\n\n-----Original Message-----\nFrom: John\nTo unsubscribe click here",
        (
            "Sounds good, call me Tuesday\n\nFrom: John Smith <john@acme-roofing.com>\nSent: Monday, November 3, 2026\n"
            "To: Dana\nSubject: Roofing\n\nWe fix roofs.\nDon't want these emails? Unsubscribe"
        ),
        "Sounds good, call me Tuesday\n-- \nDana | Sent from my phone | unsubscribe from our newsletter",
    ],
)
def test_fast_paths_ignore_quoted_history_below_a_warm_reply(body):
    assert classify_fast(body=body, subject="Re: Roofing") is None


@pytest.mark.parametrize(
    ("body", "tag"),
    [
        (f"Please remove me from your list\n\n{_GMAIL_QUOTE}{_COLD_EMAIL}", Sentiment.BLACKLIST),
        (f"STOP\n\n{_GMAIL_QUOTE}{_COLD_EMAIL}", Sentiment.BLACKLIST),  # the whole new text is the keyword
        ("STOP", Sentiment.BLACKLIST),
        (f"Not interested.\n\n{_GMAIL_QUOTE}{_COLD_EMAIL}", Sentiment.NOT_INTERESTED),
        (f"no thanks\n-- \nDana\n\n{_GMAIL_QUOTE}{_COLD_EMAIL}", Sentiment.NOT_INTERESTED),
        (
            "I am out of the office until Monday 10 Nov with limited access to email.\n\n"
            "-----Original Message-----\nFrom: John\nAre you free for a quick chat?",
            Sentiment.OUT_OF_OFFICE,
        ),
    ],
)
def test_fast_paths_still_read_the_new_text_above_the_quote(body, tag):
    assert classify_fast(body=body) == tag


def test_fast_paths_leave_a_reply_with_no_new_text_to_the_llm():
    # A forward or an empty reply: the quoted footer is our own email's, not the lead's opt-out.
    body = f"{_GMAIL_QUOTE}{_COLD_EMAIL}> To unsubscribe click here"
    assert classify_fast(body=body, subject="Re: Roofing") is None


@pytest.mark.parametrize(
    ("body", "subject"),
    [
        # Subjects: a campaign's own subject comes back as "Re: ..." on every reply.
        ("Sure, send it over", "Re: Unsubscribe from costly roof repairs"),
        ("Tuesday at 3?", "Re: Out of office? Not your roof"),
        ("Yes please", "Re: Not interested in saving money?"),
        # Warm replies that contain a cold phrase.
        ("We're good to go, send the contract", ""),
        ("We are good with that price", ""),
        ("I'm returning on Monday, Tuesday works for a call", ""),
        ("I was out of the office last week, sorry. Yes, let's talk", ""),
        ("Interested! Please remove me from the other list though", ""),
        ("Not interested in solar but call me about the roof", ""),
        ("We're all set for this year, maybe next spring?", ""),
        # Deferred interest: Follow Up for the LLM, not Not Interested.
        ("Not interested right now, follow up in Q3.", ""),
        ("Not looking to switch this year, reach out in January.", ""),
        ("Not a good fit for us at the moment - circle back next year.", ""),
        # Mail server notices that are not failures.
        ("Delivery incomplete: still trying.", "Delivery Status Notification (Delay)"),
        ("Your message was relayed.", "Delivery Status Notification (Relay)"),
    ],
)
def test_fast_paths_leave_warm_replies_with_cold_words_to_the_llm(body, subject):
    assert classify_fast(body=body, subject=subject) is None


def test_fast_paths_on_sms_without_quoting_are_unchanged():
    assert classify_fast(body="Yes > no, call me at 3") is None
    assert classify_fast(body="stop texting me\n> pls") == Sentiment.BLACKLIST


def test_llm_classification_reads_only_the_new_text(fake_openai):
    body = f"Yes, let's talk Tuesday\n\n{_GMAIL_QUOTE}> Hi Dana, we fix roofs. Pricing details inside.\n"

    outcome = classify_with_llm(
        body=body,
        subject="Re: Roofing",
        channel=Channel.EMAIL,
        context=[{"direction": "outbound", "text": "Hi Dana, we fix roofs"}],
        deadline=llm.Deadline(5),
    )

    assert outcome.tag == Sentiment.INTERESTED  # the fake reads "yes"; "pricing" in the quote would win otherwise
    prompt = fake_openai.requests[0]["input"]
    assert "let's talk Tuesday" in prompt and "Re: Roofing" in prompt
    assert "Pricing details" not in prompt and "wrote:" not in prompt


@pytest.mark.parametrize(
    "body",
    [
        "thank you for your email " * 4_200,  # each phrase used to scan to the end for "we will": quadratic
        "> " + "thank you for contacting us, " * 3_500,  # fully quoted: the whole body is read
        "> unsubscribe\n" * 8_000,
    ],
)
def test_fast_paths_are_fast_on_a_large_body(body):
    assert len(body) >= 100_000
    started = time.perf_counter()
    classify_fast(body=body, subject="Re: Roofing")
    assert time.perf_counter() - started < 1.0  # a safety bound against catastrophic backtracking


def test_fast_paths_read_a_reply_written_below_the_quote():
    body = f"{_GMAIL_QUOTE}{_COLD_EMAIL}> To unsubscribe click here\n\nYes please, Tuesday works!"
    assert classify_fast(body=body) is None  # the warm reply, not the quoted footer
    assert classify_fast(body=f"{_GMAIL_QUOTE}{_COLD_EMAIL}\nPlease remove me from your list") == Sentiment.BLACKLIST


@pytest.mark.django_db
def test_llm_failure_on_a_possible_opt_out_leaves_it_unclassified_for_a_retry(workspace, fake_openai):
    fake_openai.enqueue("500", "500", "500", "500")
    lead = lead_create(workspace=workspace)
    message = message_create(
        lead=lead, body="Interested! Please remove me from the other list though", provider_interested=True
    )

    result = message_classify(message=message, deadline=llm.Deadline(5))

    # Neither a final Blacklist nor a warm tag on a guess: the sweeper enqueues it again.
    assert result.tag == "" and result.source == "deferred"
    message.refresh_from_db()
    lead.refresh_from_db()
    assert message.classified_at is None and message.sentiment == ""
    assert not lead.is_blacklisted and lead.sentiment == Sentiment.NEW
    error = IntegrationError.objects.get(workspace=workspace, source="openai", resolved_at__isnull=True)
    assert error.code == "classify_server_error" and "opt-out" in error.message
    assert "remove me" not in error.message

    again = message_classify(message=message, deadline=llm.Deadline(5))  # the retry, the LLM back
    assert again.source == "llm"
    message.refresh_from_db()
    assert message.classified_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("failures", "enqueues"),
    [(["500"] * 4, 5), (["400"], 1)],  # the sweeper's last try; a failure that would repeat
    ids=["no-retry-left", "permanent-error"],
)
def test_a_possible_opt_out_with_no_retry_left_blacklists_as_a_precaution(workspace, fake_openai, failures, enqueues):
    fake_openai.enqueue(*failures)
    lead = lead_create(workspace=workspace)
    message = message_create(
        lead=lead, body="Interested! Please remove me from the other list though", work_enqueue_count=enqueues
    )

    result = message_classify(message=message, deadline=llm.Deadline(5))

    assert result.tag == Sentiment.BLACKLIST and result.source == "fallback_opt_out"
    lead.refresh_from_db()
    assert lead.is_blacklisted
    review = IntegrationError.objects.get(workspace=workspace, code="opt_out_by_fallback")
    assert f"#{message.pk}" in review.message and "remove me" not in review.message

    # A later good classification closes the classify_* errors, not the review.
    message_classify(message=message_create(lead=lead_create(workspace=workspace), body="ok"), deadline=llm.Deadline(5))
    review.refresh_from_db()
    assert review.resolved_at is None


@pytest.mark.django_db
def test_soft_limit_on_a_possible_opt_out_leaves_it_unclassified(workspace, fake_openai):
    from unittest import mock

    from celery.exceptions import SoftTimeLimitExceeded

    from drafts.services.pipeline import message_classify_and_draft

    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="Interested! Please remove me from the other list though")
    with mock.patch("drafts.services.classify.classify_with_llm", side_effect=SoftTimeLimitExceeded()):
        assert message_classify_and_draft(message_id=message.pk) is None

    message.refresh_from_db()
    lead.refresh_from_db()
    assert message.classified_at is None and not lead.is_blacklisted
    assert IntegrationError.objects.get(workspace=workspace, code="classify_timeout").resolved_at is None


@pytest.mark.django_db
def test_failed_classification_keeps_the_usage_of_every_call(workspace, fake_openai):
    fake_openai.enqueue("incomplete", "incomplete")
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="hmm, who is this?")

    result = message_classify(message=message, deadline=llm.Deadline(5))

    assert result.source == "fallback" and [c.status for c in result.calls] == ["incomplete", "incomplete"]
    assert [c.max_output_tokens for c in result.calls] == [512, 1024]
