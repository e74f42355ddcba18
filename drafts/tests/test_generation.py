"""Acceptance: classification and drafting with the real openai SDK against the local fake server."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from drafts.models import Draft, DraftStatus
from drafts.services.generation import draft_token_budget
from drafts.services.pipeline import message_classify_and_draft
from drafts.tasks import classify_and_draft
from drafts.tests.factories import lead_create, message_create
from leads.models import LeadStatus, Sentiment
from messaging.models import Channel
from workspaces.models import IntegrationError

pytestmark = pytest.mark.django_db(transaction=True)


def _draft_requests(fake):
    return [r for r in fake.requests if "format" not in (r.get("text") or {})]


def test_interested_sms_gets_a_ready_draft_with_usage_and_slots(workspace, fake_openai):
    from availability.models import AvailabilitySnapshot

    # Two slots inside the workspace's business hours (weekday afternoon, New York).
    day = timezone.now().astimezone(workspace.tzinfo) + dt.timedelta(days=2)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    start = day.replace(hour=14, minute=0, second=0, microsecond=0).astimezone(dt.UTC)
    AvailabilitySnapshot.objects.create(
        workspace=workspace, slots_utc=[start.isoformat(), (start + dt.timedelta(hours=1)).isoformat()]
    )
    lead = lead_create(workspace=workspace, timezone="America/Chicago")
    message = message_create(lead=lead, body="Yes I'm interested, can we book a meeting?")
    # 320 characters exactly: the longest SMS that is kept as it is.
    reply = ("Great to hear! Would Tuesday 2pm or 3pm Central suit you for a short call? " * 5)[:320]
    fake_openai.enqueue_draft_texts(reply)

    draft = message_classify_and_draft(message_id=message.pk)

    message.refresh_from_db()
    lead.refresh_from_db()
    assert message.sentiment == Sentiment.MEETING_REQUESTED and message.classified_at is not None
    assert lead.sentiment == Sentiment.MEETING_REQUESTED
    assert draft.status == DraftStatus.READY
    assert draft.channel == Channel.SMS
    assert draft.content == reply and len(reply) == 320
    assert draft.attempts == 1 and len(_draft_requests(fake_openai)) == 1 and draft.model
    assert draft.usage["input_tokens"] > 0 and "reasoning_tokens" in draft.usage
    assert [s["timezone"] for s in draft.offered_slots] == ["America/Chicago"] * 2
    # The slots went into the prompt, formatted in the lead's timezone.
    assert draft.offered_slots[0]["label"] in _draft_requests(fake_openai)[0]["instructions"]
    assert draft.latency_ms is not None and draft.prompt_version


def test_incomplete_then_retry_with_larger_budget_is_ready(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(
        lead=lead, body="Interested, tell me more about pricing", channel=Channel.EMAIL, subject="Roofing"
    )
    fake_openai.enqueue("ok", "incomplete", "ok")  # classify, draft (cut), draft retry
    cut = "Cut short: the first attempt ran out of tokens before it could finish"
    final = "Hello Dana,\n\nPricing depends on the roof's size and pitch; a 15-minute call settles it."
    fake_openai.enqueue_draft_texts(cut, final)

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.READY
    budgets = [r["max_output_tokens"] for r in _draft_requests(fake_openai)]
    assert len(budgets) == 2 and budgets[1] >= 2 * budgets[0]
    efforts = [r["reasoning"]["effort"] for r in _draft_requests(fake_openai)]
    assert efforts == ["low", "minimal"]
    assert draft.max_output_tokens == budgets[1]
    # The retry's answer, whole; nothing of the truncated first attempt (workspace has no signature).
    assert draft.content == final and cut[:20] not in draft.content
    assert draft.subject == "Re: Roofing"
    assert [c["status"] for c in draft.usage["calls"]] == ["incomplete", "completed"]


def test_an_sms_reply_over_320_characters_is_unusable_and_the_fallback_writes_the_draft(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="Yes, interested")
    too_long = ("We would love to help with the roof. " * 9)[:321]
    short = "Great! Would Tuesday at 10am work for a quick call?"
    fake_openai.enqueue_draft_texts(too_long, short)

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.READY and draft.content == short
    models = [r["model"] for r in _draft_requests(fake_openai)]
    assert models == ["gpt-5-mini", "gpt-4.1-mini"]  # the over-long answer sent it to the fallback


def test_an_sms_draft_still_over_320_characters_after_the_fallback_fails_as_too_long(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="Yes, interested")
    fake_openai.enqueue_draft_texts("a" * 321, "b" * 400)

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.FAILED and draft.failure_reason == "too_long"
    assert draft.content == ""


def test_an_email_draft_ends_with_the_workspace_signature_once(workspace, fake_openai):
    workspace.signature = "Sam Carter\nAcme Roofing | (415) 555-0100"
    workspace.save()
    lead = lead_create(workspace=workspace)
    first = message_create(lead=lead, body="Interested, what does it cost?", channel=Channel.EMAIL, subject="Roof")
    body = "Hello Dana,\n\nHappy to go through the prices on a short call this week."
    fake_openai.enqueue_draft_texts(body + "\n")

    draft = message_classify_and_draft(message_id=first.pk)

    assert draft.content == f"{body}\n\n{workspace.signature}"
    # A reply that already carries the signature does not get it twice.
    second = message_create(lead=lead, body="Interested, and the warranty?", channel=Channel.EMAIL, subject="Roof")
    signed = f"{body}\n\nBest,\n{workspace.signature}"
    fake_openai.enqueue_draft_texts(signed)

    assert message_classify_and_draft(message_id=second.pk).content == signed


def test_repeated_incomplete_fails_with_reason_and_no_content(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="I'm interested")
    fake_openai.enqueue("ok", "incomplete", "incomplete", "incomplete")

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.FAILED
    assert draft.failure_reason == "max_output_tokens"
    assert draft.incomplete_reason == "max_output_tokens"
    assert draft.content == ""
    requests = _draft_requests(fake_openai)
    assert len(requests) == 3
    # the third call is the fallback model with the cap as its budget
    assert requests[2]["model"] == "gpt-4.1-mini" and "reasoning" not in requests[2]
    error = IntegrationError.objects.get(workspace=workspace, source="openai", resolved_at__isnull=True)
    assert error.code == "draft_max_output_tokens"
    assert "I'm interested" not in error.message  # no message bodies in error records


def test_a_failure_after_incomplete_answers_keeps_the_incomplete_reason(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="I'm interested")
    fake_openai.enqueue("ok", "incomplete", "incomplete", "400")  # the fallback call is refused

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.FAILED and draft.failure_reason == "bad_request"
    assert draft.incomplete_reason == "max_output_tokens" and draft.content == ""
    assert [c["status"] for c in draft.usage["calls"]] == ["incomplete", "incomplete", ""]


def test_empty_completed_output_counts_as_failed(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested")
    fake_openai.enqueue("ok", "empty", "empty")

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.FAILED and draft.failure_reason == "empty_output"
    assert draft.content == ""


def test_server_error_then_ok_is_ready_and_resolves_the_open_error(workspace, fake_openai):
    IntegrationError.objects.create(
        workspace=workspace,
        source="openai",
        code="draft_server_error",
        first_seen=timezone.now(),
        last_seen=timezone.now(),
    )
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="sounds good, interested")
    fake_openai.enqueue("ok", "500", "ok")

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.READY
    assert draft.attempts == 2
    assert [r.status_code for r in fake_openai.records] == [200, 500, 200]
    assert not IntegrationError.objects.filter(workspace=workspace, resolved_at__isnull=True).exists()


def test_hanging_server_times_out_within_budget_and_task_beats_soft_limit(workspace, fake_openai, fast_budgets):
    # Run eagerly, where Celery arms no time limit: the bound is our deadline alone. The same
    # case under a real worker's limits: test_e2e_worker.
    fake_openai.enqueue("ok")  # classification answers; then every draft request hangs
    fake_openai.hang = True
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested")

    started = time.monotonic()
    classify_and_draft.apply(args=[message.pk])
    elapsed = time.monotonic() - started

    draft = Draft.objects.get(message=message)
    assert draft.status == DraftStatus.FAILED and draft.failure_reason == "timeout"
    assert draft.content == ""
    assert elapsed < fast_budgets.DRAFT_TASK_SOFT_TIME_LIMIT_S
    assert draft.attempts >= 2  # timeouts are retried while the budget allows


def test_opt_out_blacklists_lead_and_no_draft_ever(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    stop = message_create(lead=lead, body="STOP")

    assert message_classify_and_draft(message_id=stop.pk) is None

    stop.refresh_from_db()
    lead.refresh_from_db()
    assert stop.sentiment == Sentiment.BLACKLIST
    assert lead.status == LeadStatus.BLACKLISTED and lead.sentiment == Sentiment.BLACKLIST
    assert fake_openai.requests == []  # the fast path needs no LLM
    later = message_create(lead=lead, body="Actually yes, interested! Can we meet?", channel=Channel.EMAIL)
    assert message_classify_and_draft(message_id=later.pk) is None
    assert not Draft.objects.filter(lead=lead).exists()
    lead.refresh_from_db()
    assert lead.status == LeadStatus.BLACKLISTED


def test_rerunning_the_task_creates_no_second_draft(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested")

    first = message_classify_and_draft(message_id=message.pk)
    calls = len(fake_openai.requests)
    second = message_classify_and_draft(message_id=message.pk)
    classify_and_draft.apply(args=[message.pk])

    assert Draft.objects.filter(message=message).count() == 1
    assert first.pk == second.pk and second.status == DraftStatus.READY
    assert len(fake_openai.requests) == calls  # nothing re-asked


def test_redelivery_after_crash_finishes_the_draft_stuck_in_generating(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested")
    # What a worker killed mid-generation leaves behind: classified message, draft in generating.
    message.sentiment, message.classified_at = Sentiment.INTERESTED, timezone.now()
    message.save()
    stuck = Draft.objects.create(
        workspace=workspace, lead=lead, message=message, channel=message.channel, status=DraftStatus.GENERATING
    )

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.pk == stuck.pk and draft.status == DraftStatus.READY
    assert Draft.objects.filter(message=message).count() == 1
    assert all("format" not in (r.get("text") or {}) for r in fake_openai.requests)  # not re-classified


def test_an_older_message_gets_no_draft_when_a_newer_inbound_exists(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    old = message_create(lead=lead, body="interested", sent_at=timezone.now() - dt.timedelta(minutes=5))
    message_create(lead=lead, body="also, what does it cost?")

    assert message_classify_and_draft(message_id=old.pk) is None

    old.refresh_from_db()
    assert old.sentiment == Sentiment.INTERESTED  # classified all the same
    assert not Draft.objects.filter(message=old).exists()
    assert _draft_requests(fake_openai) == []  # no tokens spent on a stale reply


@pytest.mark.parametrize(
    "body",
    ["Not interested, thanks", "I am out of the office until Monday", "This is an automated response"],
)
def test_cold_tags_get_no_draft(workspace, fake_openai, body):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body=body, channel=Channel.EMAIL)

    assert message_classify_and_draft(message_id=message.pk) is None
    assert not Draft.objects.filter(message=message).exists()
    lead.refresh_from_db()
    assert lead.status == LeadStatus.OPEN


def test_soft_time_limit_during_generation_fails_with_timeout(workspace, fake_openai, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    from drafts import llm

    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested")
    real = llm.responses_create

    def soft_limit_on_draft(**kwargs):
        if kwargs.get("text_format"):
            return real(**kwargs)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(llm, "responses_create", soft_limit_on_draft)
    classify_and_draft.apply(args=[message.pk])

    draft = Draft.objects.get(message=message)
    assert draft.status == DraftStatus.FAILED and draft.failure_reason == "timeout" and draft.content == ""


def test_token_budget_adapts_to_channel_and_input_and_respects_cap(settings):
    settings.OPENAI_DRAFT_TOKEN_BUDGET_MULTIPLIER = 3
    settings.OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP = 8000
    sms = draft_token_budget(channel=Channel.SMS, input_chars=400)
    email = draft_token_budget(channel=Channel.EMAIL, input_chars=400)
    long_email = draft_token_budget(channel=Channel.EMAIL, input_chars=40_000)
    assert sms < email < long_email
    # Three times the plain per-channel budgets (SMS 200, email 450 tokens) for an empty input.
    assert draft_token_budget(channel=Channel.SMS, input_chars=0) == 600
    assert draft_token_budget(channel=Channel.EMAIL, input_chars=0) == 1350
    settings.OPENAI_DRAFT_TOKEN_BUDGET_MULTIPLIER = 1
    assert draft_token_budget(channel=Channel.SMS, input_chars=0) == 200
    settings.OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP = 1000
    assert draft_token_budget(channel=Channel.EMAIL, input_chars=400_000) == 1000


def test_per_draft_path_is_nine_statements_and_records_timing(workspace, fake_openai):
    """Regression guard for the hot path (LLM classification + one draft call, no cached slots):
    lock, read (message+lead+workspace+live draft+open errors), conversation, lead update,
    message update, draft insert, availability snapshot, final write, unlock."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="Interested, can we book a meeting?")
    with CaptureQueriesContext(connection) as ctx:
        classify_and_draft.apply(args=[message.pk])

    assert len(ctx.captured_queries) <= 9, [q["sql"][:80] for q in ctx.captured_queries]
    draft = Draft.objects.get(message=message)
    assert draft.status == DraftStatus.READY and draft.generation_started_at is not None
    assert isinstance(draft.latency_ms, int)
    timing = draft.usage["timing"]
    assert timing["total_ms"] >= timing["llm_ms"] + timing["backoff_ms"] > 0
    assert timing["llm_ms"] >= timing["server_ms"] > 0 and timing["dispatch_ms"] >= 0


def test_newer_inbound_during_drafting_supersedes_at_the_final_write(workspace, fake_openai, monkeypatch):
    from drafts import llm

    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested", sent_at=timezone.now() - dt.timedelta(minutes=1))
    real = llm.responses_create

    def newer_arrives_while_drafting(**kwargs):
        call = real(**kwargs)
        if not kwargs.get("text_format"):
            message_create(lead=lead, body="and what does it cost?")
        return call

    monkeypatch.setattr(llm, "responses_create", newer_arrives_while_drafting)
    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.SUPERSEDED and draft.failure_reason == "stale"
    draft.refresh_from_db()
    assert draft.status == DraftStatus.SUPERSEDED and draft.content  # the reply is kept, not offered

    # A re-delivered or repeated task adds nothing: the newer message is the one to answer.
    monkeypatch.setattr(llm, "responses_create", real)
    requests = len(fake_openai.requests)
    assert message_classify_and_draft(message_id=message.pk) is None
    classify_and_draft.apply(args=[message.pk])
    assert Draft.objects.filter(message=message).count() == 1
    assert len(fake_openai.requests) == requests


def test_a_newer_auto_reply_does_not_make_the_warm_message_stale(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    warm = message_create(
        lead=lead, body="Interested, call me", channel=Channel.EMAIL, sent_at=timezone.now() - dt.timedelta(minutes=2)
    )
    auto = message_create(lead=lead, body="I am out of the office until Monday.", channel=Channel.EMAIL)
    assert message_classify_and_draft(message_id=auto.pk) is None  # Out of Office: no draft

    draft = message_classify_and_draft(message_id=warm.pk)

    assert draft.status == DraftStatus.READY
    lead.refresh_from_db()
    assert lead.sentiment == Sentiment.CALL_REQUESTED  # the warm tag, not the auto-reply's


def test_a_later_auto_reply_does_not_replace_the_warm_leads_tag(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    warm = message_create(
        lead=lead, body="Interested, call me", channel=Channel.EMAIL, sent_at=timezone.now() - dt.timedelta(minutes=2)
    )
    assert message_classify_and_draft(message_id=warm.pk).status == DraftStatus.READY
    auto = message_create(lead=lead, body="I am out of the office until Monday.", channel=Channel.EMAIL)
    assert message_classify_and_draft(message_id=auto.pk) is None

    lead.refresh_from_db()
    auto.refresh_from_db()
    assert auto.sentiment == Sentiment.OUT_OF_OFFICE and lead.sentiment == Sentiment.CALL_REQUESTED
    assert Draft.objects.get(message=warm).status == DraftStatus.READY

    cold = lead_create(workspace=workspace)  # a lead no person's message tagged yet takes it
    message_classify_and_draft(message_id=message_create(lead=cold, body="Automatic reply: away").pk)
    cold.refresh_from_db()
    assert cold.sentiment == Sentiment.AUTOMATED_REPLY


def test_a_warm_tag_held_back_by_an_unclassified_auto_reply_reaches_the_lead(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    warm = message_create(
        lead=lead, body="Interested, call me", channel=Channel.EMAIL, sent_at=timezone.now() - dt.timedelta(minutes=2)
    )
    auto = message_create(lead=lead, body="This is an automated response.", channel=Channel.EMAIL)

    assert message_classify_and_draft(message_id=warm.pk) is None  # the auto-reply is newer, not classified
    lead.refresh_from_db()
    assert lead.sentiment == Sentiment.NEW
    message_classify_and_draft(message_id=auto.pk)

    lead.refresh_from_db()
    assert lead.sentiment == Sentiment.CALL_REQUESTED  # what the person said, not the auto-responder


def test_a_draft_made_stale_by_what_turns_out_an_auto_reply_is_ready_again(workspace, fake_openai, monkeypatch):
    from drafts import llm

    lead = lead_create(workspace=workspace)
    warm = message_create(lead=lead, body="interested", sent_at=timezone.now() - dt.timedelta(minutes=1))
    real, arrived = llm.responses_create, []

    def auto_reply_arrives_while_drafting(**kwargs):
        call = real(**kwargs)
        if not kwargs.get("text_format") and not arrived:
            arrived.append(message_create(lead=lead, body="This is an automated response.", channel=Channel.EMAIL))
        return call

    monkeypatch.setattr(llm, "responses_create", auto_reply_arrives_while_drafting)
    draft = message_classify_and_draft(message_id=warm.pk)
    assert draft.status == DraftStatus.SUPERSEDED  # the newer message was not classified yet

    assert message_classify_and_draft(message_id=arrived[0].pk) is None  # Automated Reply

    draft.refresh_from_db()
    assert draft.status == DraftStatus.READY and draft.content and draft.failure_reason == ""


def test_late_classification_of_an_older_message_leaves_the_leads_tag(workspace, fake_openai):
    lead = lead_create(workspace=workspace, sentiment=Sentiment.CALL_REQUESTED)
    old = message_create(lead=lead, body="interested", sent_at=timezone.now() - dt.timedelta(minutes=5))
    message_create(lead=lead, body="call me tomorrow")

    assert message_classify_and_draft(message_id=old.pk) is None

    old.refresh_from_db()
    lead.refresh_from_db()
    assert old.sentiment == Sentiment.INTERESTED and old.classified_at is not None
    assert lead.sentiment == Sentiment.CALL_REQUESTED  # the newer message's task sets it


def test_opt_out_landing_during_classification_wins(workspace, fake_openai, monkeypatch):
    from drafts import classification
    from drafts.services import classify
    from leads.models import Lead

    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested")
    real = classification.classify_with_llm

    def opt_out_meanwhile(**kwargs):
        outcome = real(**kwargs)
        Lead.objects.filter(pk=lead.pk).update(status=LeadStatus.BLACKLISTED, sentiment=Sentiment.BLACKLIST)
        return outcome

    monkeypatch.setattr(classify, "classify_with_llm", opt_out_meanwhile)
    assert message_classify_and_draft(message_id=message.pk) is None

    lead.refresh_from_db()
    message.refresh_from_db()
    assert lead.status == LeadStatus.BLACKLISTED and lead.sentiment == Sentiment.BLACKLIST
    assert message.sentiment == Sentiment.INTERESTED
    assert not Draft.objects.filter(message=message).exists()


def test_earlier_inbound_emails_enter_the_transcript_without_their_quoted_history(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    earlier = "Maybe next month.\n\nOn Mon, 2 Nov 2026 at 10:00, Sam <sam@acme.io> wrote:\n> QUOTED-PITCH-TEXT"
    message_create(lead=lead, body=earlier, channel=Channel.EMAIL, sent_at=timezone.now() - dt.timedelta(days=1))
    message = message_create(lead=lead, body="Interested now, send pricing", channel=Channel.EMAIL)

    assert message_classify_and_draft(message_id=message.pk).status == DraftStatus.READY

    sent = " ".join(str(r.get("input")) for r in fake_openai.requests)
    assert "Maybe next month." in sent and "QUOTED-PITCH-TEXT" not in sent


def test_soft_time_limit_during_classification_tags_by_fallback_and_tells_the_operator(
    workspace, fake_openai, monkeypatch
):
    from celery.exceptions import SoftTimeLimitExceeded

    from drafts.services import classify

    def soft_limit(**kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(classify, "classify_with_llm", soft_limit)
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="hmm, who is this?")

    classify_and_draft.apply(args=[message.pk])

    message.refresh_from_db()
    assert message.sentiment == Sentiment.NEUTRAL and message.classified_at is not None
    error = IntegrationError.objects.get(workspace=workspace, source="openai", resolved_at__isnull=True)
    assert error.code == "classify_timeout" and "who is this" not in error.message
    assert not Draft.objects.filter(message=message).exists()


def test_provider_interest_landing_while_classifying_makes_the_neutral_reply_interested(
    workspace, fake_openai, monkeypatch
):
    from drafts import classification
    from drafts.services import classify
    from messaging.models import Message

    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="hmm, who is this?", channel=Channel.EMAIL)
    real = classification.classify_with_llm

    def interest_meanwhile(**kwargs):
        outcome = real(**kwargs)  # the fake answers Neutral for this text
        Message.objects.filter(pk=message.pk).update(provider_interested=True)  # LEAD_INTERESTED commits
        return outcome

    monkeypatch.setattr(classify, "classify_with_llm", interest_meanwhile)
    draft = message_classify_and_draft(message_id=message.pk)

    message.refresh_from_db()
    lead.refresh_from_db()
    assert message.sentiment == Sentiment.INTERESTED and lead.sentiment == Sentiment.INTERESTED
    assert draft is not None and draft.status == DraftStatus.READY


def test_provider_interest_after_a_neutral_classification_gets_the_reply_its_draft(workspace, fake_openai):
    from django.db import transaction

    from messaging.models import Message
    from messaging.services import message_provider_interest_note

    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="hmm, who is this?", channel=Channel.EMAIL)
    assert message_classify_and_draft(message_id=message.pk) is None  # Neutral: no draft

    with transaction.atomic():
        message_provider_interest_note(message=Message.objects.get(pk=message.pk), lead=lead)
    draft = message_classify_and_draft(message_id=message.pk)  # the re-enqueued work

    assert draft.status == DraftStatus.READY
    assert len([r for r in fake_openai.requests if "format" in (r.get("text") or {})]) == 1  # not re-classified
