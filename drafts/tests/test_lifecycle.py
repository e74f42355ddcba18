"""Every draft ends: unexpected errors, lost tasks (the sweeper), operator actions as
conditional updates, and error codes resolved by prefix."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.utils import timezone

from core.sentry import ReportedError
from drafts.models import Draft, DraftStatus
from drafts.selectors import drafts_stale_open, messages_awaiting_work
from drafts.sending import draft_approve_and_send
from drafts.services.actions import draft_edit, draft_regenerate, draft_reject
from drafts.services.pipeline import message_classify_and_draft
from drafts.services.sweeper import DRAFT_ABANDON_AFTER, draft_sweep_stale, message_sweep_unprocessed
from drafts.tasks import classify_and_draft
from drafts.tests.factories import lead_create, message_create
from leads.models import Lead, LeadStatus, Sentiment
from messaging.models import Channel, Message
from messaging.selectors import SWEEP_MAX_ENQUEUES
from workspaces.models import IntegrationError

pytestmark = pytest.mark.django_db(transaction=True)


def _classified(lead, body="interested", sentiment=Sentiment.INTERESTED, **fields) -> Message:
    message = message_create(lead=lead, body=body, **fields)
    Message.objects.filter(pk=message.pk).update(sentiment=sentiment, classified_at=timezone.now())
    message.refresh_from_db()
    return message


def _draft(message, status, **fields) -> Draft:
    return Draft.objects.create(
        workspace=message.workspace,
        lead=message.lead,
        message=message,
        channel=message.channel,
        status=status,
        **fields,
    )


# --- Unexpected errors never leave a draft open --------------------------------------------


def test_unexpected_error_in_generation_fails_the_draft_and_is_recorded(workspace, fake_openai, caplog):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested, secret-body-words")
    with mock.patch("drafts.services.generation.slots_to_offer", side_effect=RuntimeError("boom secret-body-words")):
        draft = message_classify_and_draft(message_id=message.pk)

    assert draft.status == DraftStatus.FAILED and draft.failure_reason == "unexpected"
    assert draft.content == "" and draft.error == "unexpected error: RuntimeError"
    error = IntegrationError.objects.get(workspace=workspace, source="openai", resolved_at__isnull=True)
    assert error.code == "draft_unexpected"
    assert "secret-body-words" not in caplog.text  # the exception's text is not logged

    # The next good draft resolves every open draft_* error (by prefix, whatever the code).
    other = message_create(lead=lead_create(workspace=workspace), body="interested")
    assert message_classify_and_draft(message_id=other.pk).status == DraftStatus.READY
    error.refresh_from_db()
    assert error.resolved_at is not None


def test_unexpected_error_around_generation_fails_the_open_draft_and_reraises(workspace, fake_openai):
    lead = lead_create(workspace=workspace)
    message = _classified(lead)
    draft = _draft(message, DraftStatus.PENDING)
    with (
        mock.patch("drafts.services.pipeline.draft_generate", side_effect=KeyError("lead wrote: secret-body-words")),
        mock.patch("drafts.services.pipeline.sentry_sdk.capture_exception") as captured,
    ):
        result = classify_and_draft.apply(args=[message.pk])

    # Sentry gets the original (the scrubber drops its text); the task fails with a text-free error.
    assert isinstance(captured.call_args.args[0], KeyError)
    assert isinstance(result.result, ReportedError) and "KeyError" in str(result.result)
    assert "secret-body-words" not in str(result.result) and "secret-body-words" not in result.traceback
    draft.refresh_from_db()
    assert draft.status == DraftStatus.FAILED and draft.failure_reason == "unexpected"


def test_soft_limit_in_classification_keeps_the_providers_interest_and_fails_nothing_open(workspace, fake_openai):
    from celery.exceptions import SoftTimeLimitExceeded

    message = message_create(lead=lead_create(workspace=workspace), body="hmm", provider_interested=True)
    with mock.patch("drafts.services.classify.classify_with_llm", side_effect=SoftTimeLimitExceeded()):
        assert message_classify_and_draft(message_id=message.pk) is None
    message.refresh_from_db()
    assert message.sentiment == Sentiment.INTERESTED and message.classified_at is not None


@pytest.mark.django_db(transaction=False)
def test_an_eager_run_inside_a_transaction_keeps_the_callers_connection(workspace, fake_openai):
    from django.db import connection

    message = message_create(lead=lead_create(workspace=workspace), body="STOP")
    classify_and_draft.apply(args=[message.pk])  # task_prerun/postrun ran in this process
    assert connection.connection is not None and connection.in_atomic_block
    assert Message.objects.get(pk=message.pk).sentiment == Sentiment.BLACKLIST


def test_a_reason_longer_than_the_column_still_ends_the_draft(workspace, fake_openai):
    message = _classified(lead_create(workspace=workspace))
    weird = mock.Mock(
        status="x" * 32,
        text="",
        incomplete_reason="",
        http_attempts=1,
        latency_ms=1.0,
        model="m",
        max_output_tokens=10,
        input_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
        server_ms=0.0,
        backoff_ms=0.0,
    )
    weird.as_dict.return_value = {}
    with mock.patch("drafts.services.generation.llm.responses_create", return_value=weird):
        draft = message_classify_and_draft(message_id=message.pk)
    assert draft.status == DraftStatus.FAILED and len(draft.failure_reason) <= 32


# --- Classification ------------------------------------------------------------------------


def test_blacklisted_lead_is_not_sent_to_the_llm(workspace, fake_openai):
    lead = lead_create(workspace=workspace, status=LeadStatus.BLACKLISTED, sentiment=Sentiment.BLACKLIST)
    message = message_create(lead=lead, body="Hmm, tell me more", provider_interested=True)

    assert message_classify_and_draft(message_id=message.pk) is None

    message.refresh_from_db()
    assert message.sentiment == Sentiment.NEUTRAL and message.classified_at is not None
    assert fake_openai.requests == []
    assert not Draft.objects.filter(message=message).exists()


def test_classification_error_codes_resolve_by_prefix(workspace, fake_openai):
    now = timezone.now()
    for code in ("classify_invalid_output", "classify_some_future_code", "draft_timeout"):
        IntegrationError.objects.create(workspace=workspace, source="openai", code=code, first_seen=now, last_seen=now)
    message = message_create(lead=lead_create(workspace=workspace), body="Could you send pricing details?")
    fake_openai.enqueue("ok", "400")  # classification answers; the draft fails

    message_classify_and_draft(message_id=message.pk)

    open_codes = set(IntegrationError.objects.filter(resolved_at__isnull=True).values_list("code", flat=True))
    assert open_codes == {"draft_timeout", "draft_bad_request"}


# --- Operator actions are conditional ---------------------------------------------------------


def test_approve_applies_only_to_a_draft_still_ready(workspace, admin_user):
    message = _classified(lead_create(workspace=workspace))
    draft = _draft(message, DraftStatus.READY, content="hello")
    stale_copy = Draft.objects.get(pk=draft.pk)
    Draft.objects.filter(pk=draft.pk).update(status=DraftStatus.SUPERSEDED)  # a worker moved it meanwhile

    with pytest.raises(ValueError, match="superseded: cannot approve"):
        draft_approve_and_send(draft=stale_copy, user=admin_user)
    assert Draft.objects.get(pk=draft.pk).status == DraftStatus.SUPERSEDED


def test_reject_refuses_an_open_draft(workspace):
    draft = _draft(_classified(lead_create(workspace=workspace)), DraftStatus.GENERATING)
    with pytest.raises(ValueError, match="generating: cannot reject"):
        draft_reject(draft=draft)


def test_a_lead_opting_out_while_the_reply_is_written_gets_no_ready_draft(workspace, fake_openai):
    from leads.services import lead_blacklist

    lead = lead_create(workspace=workspace)
    message = _classified(lead)

    def opt_out_meanwhile(**kwargs):
        lead_blacklist(lead=Lead.objects.get(pk=lead.pk), reason="unsubscribed")
        return []

    with mock.patch("drafts.services.generation.slots_to_offer", side_effect=opt_out_meanwhile):
        draft = message_classify_and_draft(message_id=message.pk)
    assert draft.status == DraftStatus.SKIPPED and draft.failure_reason == "blacklisted"


def test_opting_out_skips_the_leads_drafts_awaiting_review_and_approval_is_refused(
    workspace, admin_user, client, fake_openai
):
    lead = lead_create(workspace=workspace)
    ready = _draft(_classified(lead), DraftStatus.READY, content="hello")
    approved = _draft(_classified(lead), DraftStatus.APPROVED, content="hello")
    stale_copy = Draft.objects.get(pk=ready.pk)

    stop = message_create(lead=lead, body="STOP")
    message_classify_and_draft(message_id=stop.pk)

    for draft in (ready, approved):
        draft.refresh_from_db()
        assert draft.status == DraftStatus.SKIPPED and draft.failure_reason == "blacklisted"
    # A draft that somehow is ready for a blacklisted lead cannot be approved or edited.
    Draft.objects.filter(pk=ready.pk).update(status=DraftStatus.READY)
    with pytest.raises(ValueError, match="blacklisted"):
        draft_approve_and_send(draft=stale_copy, user=admin_user)
    with pytest.raises(ValueError, match="blacklisted"):
        draft_edit(draft=stale_copy, content="x", subject="")


def test_an_unsubscribe_webhook_skips_the_leads_ready_drafts(workspace, client):
    from messaging.tests.factories import emailbison, post

    lead = lead_create(workspace=workspace, email="optout@example.com")
    ready = _draft(_classified(lead), DraftStatus.READY, content="hello")
    payload = emailbison("LEAD_UNSUBSCRIBED", lead={"id": 4242, "email": "optout@example.com"})

    assert post(client, "emailbison", payload).json()["lead_id"] == lead.pk

    ready.refresh_from_db()
    assert ready.status == DraftStatus.SKIPPED and ready.failure_reason == "blacklisted"


def test_editing_an_approved_draft_takes_the_approval_back(workspace, admin_user):
    draft = _draft(_classified(lead_create(workspace=workspace)), DraftStatus.READY, content="hello")
    draft = draft_approve_and_send(draft=draft, user=admin_user)
    assert draft.status == DraftStatus.APPROVED

    draft = draft_edit(draft=draft, content="hello there", subject="")

    assert draft.status == DraftStatus.READY and draft.approved_by is None and draft.content == "hello there"
    with pytest.raises(ValueError, match="content"):
        draft_edit(draft=draft, content="   ", subject="")
    with pytest.raises(ValueError, match="subject"):
        draft_edit(draft=draft, content="x", subject="Re: hi")  # an SMS draft


# --- Regenerate and the sweeper ---------------------------------------------------------------


def test_regenerate_with_the_broker_down_keeps_a_pending_draft_the_sweeper_enqueues(workspace, settings):
    message = _classified(lead_create(workspace=workspace), work_enqueue_count=4)
    old = _draft(message, DraftStatus.FAILED, failure_reason="timeout")

    with mock.patch("drafts.services.actions.message_work_enqueue", return_value=False) as enqueue:
        new = draft_regenerate(draft=old)
    # on_commit ran at once (autocommit test): the enqueue was tried and refused.
    enqueue.assert_called_once_with(message_id=message.pk, workspace_id=workspace.pk, force=True)
    old.refresh_from_db()
    assert old.status == DraftStatus.SUPERSEDED and old.failure_reason == "regenerated"
    assert new.pk != old.pk and new.status == DraftStatus.PENDING
    message.refresh_from_db()
    assert message.work_enqueue_count == 0  # a fresh job: the sweeper's retries start again

    later = timezone.now() + dt.timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S + 1)
    assert [row[:3] for row in drafts_stale_open(workspace_id=workspace.pk, now=later)] == [(new.pk, message.pk, 0)]
    with mock.patch("drafts.services.sweeper.message_work_enqueue", return_value=True) as enqueue:
        assert message_sweep_unprocessed(now=later) == 1
    enqueue.assert_called_once_with(message_id=message.pk, workspace_id=workspace.pk, force=True)


def test_regenerated_draft_is_written_by_the_task(workspace, fake_openai):
    message = _classified(lead_create(workspace=workspace))
    old = _draft(message, DraftStatus.READY, content="first")
    with mock.patch("drafts.services.actions.message_work_enqueue", return_value=True):
        new = draft_regenerate(draft=old)

    draft = message_classify_and_draft(message_id=message.pk)

    assert draft.pk == new.pk and draft.status == DraftStatus.READY and draft.content
    assert Draft.objects.filter(message=message).exclude(status=DraftStatus.SUPERSEDED).count() == 1


@pytest.mark.parametrize(
    ("lead_fields", "sentiment", "match"),
    [
        ({"status": LeadStatus.BLACKLISTED}, Sentiment.INTERESTED, "blacklisted"),
        ({}, Sentiment.NOT_INTERESTED, "Not Interested message gets no draft"),
    ],
)
def test_regenerate_refuses_what_would_get_no_draft(workspace, lead_fields, sentiment, match):
    message = _classified(lead_create(workspace=workspace, **lead_fields), sentiment=sentiment)
    draft = _draft(message, DraftStatus.SKIPPED)
    with pytest.raises(ValueError, match=match):
        draft_regenerate(draft=draft)
    assert Draft.objects.get(pk=draft.pk).status == DraftStatus.SKIPPED


def test_sweeper_re_enqueues_a_draft_stuck_generating_then_abandons_it(workspace, settings):
    message = _classified(lead_create(workspace=workspace))
    long_ago = timezone.now() - dt.timedelta(seconds=settings.DRAFT_TASK_TIME_LIMIT_S + 60)
    stuck = _draft(message, DraftStatus.GENERATING, generation_started_at=long_ago)
    fresh = _draft(
        _classified(lead_create(workspace=workspace)), DraftStatus.GENERATING, generation_started_at=timezone.now()
    )

    with mock.patch("drafts.services.sweeper.message_work_enqueue", return_value=True) as enqueue:
        assert draft_sweep_stale(workspace_id=workspace.pk) == (1, 0, True)
    enqueue.assert_called_once_with(message_id=message.pk, workspace_id=workspace.pk, force=True)

    # Recently enqueued: left to the queued task.
    Message.objects.filter(pk=message.pk).update(work_enqueued_at=timezone.now(), work_enqueue_count=1)
    assert drafts_stale_open(workspace_id=workspace.pk) == []

    # Enqueued the maximum number of times: not enqueued again; failed for good only once the
    # draft has not changed for DRAFT_ABANDON_AFTER (its last task may still wait in a long queue).
    Message.objects.filter(pk=message.pk).update(work_enqueued_at=long_ago, work_enqueue_count=SWEEP_MAX_ENQUEUES)
    with mock.patch("drafts.services.sweeper.message_work_enqueue") as enqueue:
        assert draft_sweep_stale(workspace_id=workspace.pk) == (0, 0, True)
        enqueue.assert_not_called()
        # An hour on, the other (then fresh) generating draft is stale too: enqueued, not failed.
        assert draft_sweep_stale(workspace_id=workspace.pk, now=timezone.now() + DRAFT_ABANDON_AFTER) == (1, 1, True)
    enqueue.assert_called_once_with(message_id=fresh.message_id, workspace_id=workspace.pk, force=True)
    stuck.refresh_from_db()
    assert stuck.status == DraftStatus.FAILED and stuck.failure_reason == "abandoned" and stuck.content == ""
    assert IntegrationError.objects.get(workspace=workspace, resolved_at__isnull=True).code == "draft_abandoned"
    fresh.refresh_from_db()
    assert fresh.status == DraftStatus.GENERATING


def test_sweeper_skips_other_workspaces_drafts(workspace, other_workspace, settings):
    message = _classified(lead_create(workspace=other_workspace))
    _draft(message, DraftStatus.PENDING)
    later = timezone.now() + dt.timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S + 1)
    assert drafts_stale_open(workspace_id=workspace.pk, now=later) == []
    assert len(drafts_stale_open(workspace_id=other_workspace.pk, now=later)) == 1


def test_sweeper_picks_a_classified_warm_message_whose_draft_was_never_inserted(workspace, settings):
    later = timezone.now() + dt.timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S + 1)
    warm = _classified(lead_create(workspace=workspace), channel=Channel.SMS)
    cold = _classified(lead_create(workspace=workspace), sentiment=Sentiment.NOT_INTERESTED)
    gone = _classified(lead_create(workspace=workspace, status=LeadStatus.BLACKLISTED))
    done = _classified(lead_create(workspace=workspace))
    _draft(done, DraftStatus.READY)
    Message.objects.update(work_enqueued_at=timezone.now(), work_enqueue_count=1)

    found = messages_awaiting_work(workspace_id=workspace.pk, now=later, grace_s=15)

    assert found == [warm.pk]
    assert {cold.pk, gone.pk, done.pk}.isdisjoint(found)


def test_sweeper_leaves_a_warm_message_a_newer_inbound_answers_until_that_is_a_machine_reply(workspace, settings):
    later = timezone.now() + dt.timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S + 1)
    lead = lead_create(workspace=workspace)
    warm = _classified(lead, channel=Channel.SMS)
    Message.objects.filter(pk=warm.pk).update(sent_at=timezone.now() - dt.timedelta(minutes=1))
    newer = message_create(lead=lead, body="and the price?")
    Message.objects.update(work_enqueued_at=timezone.now(), work_enqueue_count=1)

    found = messages_awaiting_work(workspace_id=workspace.pk, now=later, grace_s=15)
    assert warm.pk not in found and newer.pk in found  # the newer one is unclassified: its own work

    Message.objects.filter(pk=newer.pk).update(sentiment=Sentiment.OUT_OF_OFFICE, classified_at=timezone.now())
    assert messages_awaiting_work(workspace_id=workspace.pk, now=later, grace_s=15) == [warm.pk]


def test_a_failed_release_leaves_a_claim_that_expires_so_another_run_takes_the_work_over(
    workspace, fake_openai, settings
):
    from celery.exceptions import SoftTimeLimitExceeded
    from django.db import connection

    from drafts.claims import claim_ttl_s
    from drafts.models import MessageWorkClaim

    message = message_create(lead=lead_create(workspace=workspace), body="Can we meet on Tuesday?")

    def soft_limit_in_release(execute, sql, params, many, context):
        if sql.startswith("DELETE FROM") and "messageworkclaim" in sql:
            raise SoftTimeLimitExceeded()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(soft_limit_in_release), pytest.raises(SoftTimeLimitExceeded):
        message_classify_and_draft(message_id=message.pk)
    claim = MessageWorkClaim.objects.get(message_id=message.pk)
    Draft.objects.filter(message=message).update(status=DraftStatus.GENERATING)  # as if cut short

    # While the claim lasts another delivery leaves the message alone...
    assert message_classify_and_draft(message_id=message.pk) is None
    assert Draft.objects.get(message=message).status == DraftStatus.GENERATING
    # ...once it has expired (its worker is gone) the next run finishes the work and gives it back.
    assert claim.expires_at - timezone.now() <= dt.timedelta(seconds=claim_ttl_s())
    MessageWorkClaim.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    draft = message_classify_and_draft(message_id=message.pk)
    assert draft.status == DraftStatus.READY
    assert not MessageWorkClaim.objects.filter(message_id=message.pk).exists()


def test_message_ids_beyond_32_bits_are_locked_and_drafted(workspace, fake_openai):
    """The lock key is one bigint: ids past 2**31 (a long-lived inbox) work as any other."""
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="interested")
    Message.objects.filter(pk=message.pk).update(id=3_000_000_007)

    draft = message_classify_and_draft(message_id=3_000_000_007)

    assert draft.status == DraftStatus.READY and draft.message_id == 3_000_000_007


def test_soft_limit_while_storing_an_llm_tag_keeps_the_llm_tag(workspace, fake_openai):
    from celery.exceptions import SoftTimeLimitExceeded

    from drafts.services import classify

    message = message_create(lead=lead_create(workspace=workspace), body="Can we meet on Tuesday?")
    real, calls = classify.lead_tag_from_message, []

    def interrupted_once(**kwargs):
        calls.append(kwargs["tag"])
        if len(calls) == 1:
            raise SoftTimeLimitExceeded()
        return real(**kwargs)

    with mock.patch("drafts.services.classify.lead_tag_from_message", side_effect=interrupted_once):
        assert message_classify_and_draft(message_id=message.pk) is None

    message.refresh_from_db()
    assert calls == [Sentiment.MEETING_REQUESTED] * 2  # the LLM's answer, stored again, not a fallback
    assert message.sentiment == Sentiment.MEETING_REQUESTED
    assert not IntegrationError.objects.filter(workspace=workspace, resolved_at__isnull=True).exists()


@pytest.mark.parametrize("blocker", ["newer_person_message", "live_draft", "blacklisted", "older_than_the_reply"])
def test_a_stale_draft_is_revived_only_when_the_machine_reply_alone_made_it_stale(workspace, blocker):
    from drafts.services.lifecycle import drafts_revive_stale

    lead = lead_create(workspace=workspace)
    warm = _classified(lead, sent_at=timezone.now() - dt.timedelta(minutes=3))
    stale = _draft(warm, DraftStatus.SUPERSEDED, failure_reason="stale", content="Hi!", finished_at=timezone.now())
    auto = _classified(lead, body="auto", sentiment=Sentiment.AUTOMATED_REPLY)
    if blocker == "newer_person_message":
        _classified(lead, body="and the price?", sent_at=timezone.now() - dt.timedelta(minutes=1))
    elif blocker == "live_draft":
        _draft(warm, DraftStatus.PENDING)
    elif blocker == "blacklisted":
        Lead.objects.filter(pk=lead.pk).update(status=LeadStatus.BLACKLISTED, sentiment=Sentiment.BLACKLIST)
    else:
        Draft.objects.filter(pk=stale.pk).update(finished_at=auto.created_at - dt.timedelta(days=7))

    assert drafts_revive_stale(message=auto) == 0
    stale.refresh_from_db()
    assert stale.status == DraftStatus.SUPERSEDED

    if blocker == "older_than_the_reply":  # the control: the same draft, finished after the reply arrived
        Draft.objects.filter(pk=stale.pk).update(finished_at=timezone.now())
        assert drafts_revive_stale(message=auto) == 1
