"""Webhook ingestion: WebhookEvent log, idempotent message insert, the lead's tag from its messages,
handing inbound messages to their work (registered by the app that does it)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.dispatch import Signal
from django.utils import timezone
from rest_framework import serializers as drf_serializers

from leads.models import MACHINE_REPLACEABLE_SENTIMENTS, MACHINE_REPLY_SENTIMENTS, Lead, Sentiment
from leads.services import (
    advisory_xact_lock,
    lead_blacklist,
    lead_discard_new,
    lead_rollups_touch,
    lead_sentiment_set,
    lead_upsert,
)
from messaging.models import Direction, Message, WebhookEvent
from messaging.selectors import (
    message_body_duplicate_get,
    message_body_hash,
    newer_inbound,
    webhook_event_original,
)
from messaging.serializers import (
    Delivery,
    DeliveryAction,
    ParsedMessage,
    emailbison_delivery_parse,
    ghl_delivery_parse,
    ghl_location_problem,
    ghl_payload_shape,
    validation_error_text,
)
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)


class IngestStatus:
    CREATED = "created"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


@dataclass(frozen=True)
class IngestResult:
    status: str
    message_id: int | None
    lead_id: int | None
    event_id: int | None = None

    def as_response(self) -> dict[str, Any]:
        return {"status": self.status, "message_id": self.message_id, "lead_id": self.lead_id}


# --- Messages ----------------------------------------------------------------------------


@transaction.atomic(savepoint=False)
def message_ingest(
    *,
    workspace_id: int,
    lead: Lead,
    parsed: ParsedMessage,
    mark_work_enqueued: bool = False,
    optimistic: bool = False,
) -> tuple[Message, bool]:
    """Insert the message unless it is already known; returns (message, created).

    With a provider id (GHL message id, EmailBison reply id) the per-workspace
    unique constraint decides: insert first in an inner ``atomic()``, and on
    ``IntegrityError`` the concurrent winner's row is re-read. ``optimistic``
    skips that savepoint (two round trips on the hot path): the
    ``IntegrityError`` then escapes and the caller must rerun its whole
    transaction without it (``webhook_delivery_ingest`` does). Without one,
    a message is a duplicate of the lead's same-direction message with the
    same body hash sent within 60 s; a transaction-scoped advisory lock on
    (lead, direction, hash) makes check-then-insert race-free.
    """
    body_hash = message_body_hash(parsed.body)
    message = Message(
        workspace_id=workspace_id,
        lead=lead,
        channel=parsed.channel,
        direction=parsed.direction,
        body=parsed.body,
        subject=parsed.subject,
        body_hash=body_hash,
        sent_at=parsed.sent_at,
        ghl_message_id=parsed.ghl_message_id,
        ghl_conversation_id=parsed.ghl_conversation_id,
        emailbison_reply_id=parsed.emailbison_reply_id,
        provider_interested=parsed.provider_interested,
        origin=parsed.origin,
    )
    if mark_work_enqueued:
        # Written with the row (no extra UPDATE per webhook); cleared after
        # commit if the broker refuses the task. See message_work_enqueue.
        message.work_enqueued_at = timezone.now()
        message.work_enqueue_count = 1
    provider_key = {}
    if parsed.ghl_message_id:
        provider_key = {"ghl_message_id": parsed.ghl_message_id}
    elif parsed.emailbison_reply_id:
        provider_key = {"emailbison_reply_id": parsed.emailbison_reply_id}

    if provider_key and optimistic:
        message.save(force_insert=True)
    elif provider_key:
        try:
            with transaction.atomic():
                message.save(force_insert=True)
        except IntegrityError:
            existing = Message.objects.get(workspace_id=workspace_id, **provider_key)
            if parsed.provider_interested and existing.provider_interested is not True:
                existing = message_provider_interest_note(message=existing, lead=lead)
            return existing, False
    else:
        advisory_xact_lock(f"message:{lead.pk}:{parsed.direction}:{body_hash}")
        existing = message_body_duplicate_get(
            workspace_id=workspace_id,
            lead_id=lead.pk,
            direction=parsed.direction,
            body_hash=body_hash,
            sent_at=parsed.sent_at,
        )
        if existing is not None:
            return existing, False
        message.save(force_insert=True)
    lead_rollups_touch(
        lead_ids=[lead.pk], workspace_id=lead.workspace_id, direction=parsed.direction, at=parsed.sent_at
    )
    return message, True


def message_provider_interest_note(*, message: Message, lead: Lead) -> Message:
    """The provider flagged a known reply as interested (EmailBison's ``LEAD_INTERESTED``,
    which may come minutes after the reply). Inside the caller's transaction.

    An inbound message of a lead not blacklisted that the LLM (or its fallback) found
    ``Neutral`` becomes ``Interested``, for the lead too, and its work is enqueued again
    (after commit) so it gets its draft; the sweeper covers a lost enqueue. A message not
    classified yet only gets the flag: its task reads it (also when it is classifying right
    now: ``Neutral`` is stored through the flag, see ``drafts.classify._message_store_neutral``).
    Any other tag stays: the text said something specific.
    """
    message = Message.objects.select_for_update().get(pk=message.pk, workspace_id=message.workspace_id)
    if lead.pk != message.lead_id:  # the payload's lead is not the message's (merged, changed email)
        lead = Lead.objects.get(pk=message.lead_id, workspace_id=message.workspace_id)
    changes: dict[str, Any] = {"provider_interested": True}
    upgrade = (
        message.direction == Direction.INBOUND
        and message.classified_at is not None
        and message.sentiment == Sentiment.NEUTRAL
        and not lead.is_blacklisted
    )
    if upgrade:
        # A new job: the sweeper's retry count starts again.
        changes.update(sentiment=Sentiment.INTERESTED, work_enqueued_at=None, work_enqueue_count=0)
    Message.objects.filter(pk=message.pk, workspace_id=message.workspace_id).update(**changes)
    for key, value in changes.items():
        setattr(message, key, value)
    if upgrade:
        lead_tag_from_message(message=message, lead=lead, tag=Sentiment.INTERESTED)
        transaction.on_commit(
            partial(message_work_enqueue, message_id=message.pk, workspace_id=message.workspace_id, force=True),
            robust=True,
        )
    return message


def lead_tag_from_message(*, message: Message, lead: Lead, tag: str) -> bool:
    """The lead takes ``message``'s tag unless a newer inbound message exists (its own task
    sets the lead's tag); ``Blacklist`` always applies and is sticky. A machine reply
    (out-of-office, automated) replaces only a tag no person's message gave (New, Neutral,
    another machine reply): a warm lead stays warm while their auto-responder answers."""
    if tag in MACHINE_REPLY_SENTIMENTS:
        person = _latest_person_tagged_before(message)
        if person is not None:
            # The lead's tag is what the person last said (that message's own rule applies): a
            # warm message classified while this reply was not yet classified left it untouched.
            return lead_tag_from_message(message=person, lead=lead, tag=person.sentiment)
    return lead_sentiment_set(
        lead=lead,
        sentiment=tag,
        only_replacing=MACHINE_REPLACEABLE_SENTIMENTS if tag in MACHINE_REPLY_SENTIMENTS else (),
        unless=newer_inbound(message),
    )


def _latest_person_tagged_before(message: Message) -> Message | None:
    """The lead's latest inbound message before ``message`` with a tag a person's words gave it
    (not New/Neutral, not a machine reply), or None."""
    return (
        Message.objects.filter(
            workspace_id=message.workspace_id,
            lead_id=message.lead_id,
            direction=Direction.INBOUND,
            classified_at__isnull=False,
        )
        .filter(Q(sent_at__lt=message.sent_at) | Q(sent_at=message.sent_at, id__lt=message.pk))
        .exclude(sentiment__in=[*MACHINE_REPLACEABLE_SENTIMENTS, ""])
        .order_by("-sent_at", "-id")
        .only("id", "workspace_id", "lead_id", "sent_at", "sentiment")
        .first()
    )


# --- The work an inbound message starts ----------------------------------------------------
#
# messaging stores messages; it does not know what answers them. The app that does (drafts)
# registers its Celery task here from its AppConfig.ready, and ``message_work_enqueue`` hands
# each new inbound message to it (the webhooks, the GHL sync, the sweeper and a regenerate all
# enqueue through that one function and its broker bookkeeping). See docs/architecture.md.

_inbound_work_task: Any = None


def inbound_work_register(task: Any) -> None:
    """Make ``task`` (a Celery task taking one message id) the work of every inbound message."""
    global _inbound_work_task
    _inbound_work_task = task


def inbound_work_task() -> Any:
    if _inbound_work_task is None:
        raise ImproperlyConfigured("no app registered the work of inbound messages (drafts does, in its ready())")
    return _inbound_work_task


# A lead just opted out (unsubscribe, bounce): sent with ``lead_id`` and ``workspace_id`` inside
# the webhook's transaction; the drafts app receives it and skips the drafts waiting to be sent.
lead_opted_out = Signal()


# After a broker failure this process stops trying for a few seconds: webhooks
# keep answering in milliseconds and the sweeper enqueues what was skipped.
BROKER_RETRY_AFTER_S = 5.0
# Broker errors are written to IntegrationError at most this often per workspace
# and process, so an outage is not also a database write storm.
BROKER_ERROR_RECORD_EVERY_S = 60.0


class _BrokerHealth:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.recorded_at: dict[int, float] = {}
        self.resolve_checked_at: dict[int, float] = {}

    def reset(self) -> None:
        with self.lock:
            self.down_until = 0.0
            self.recorded_at.clear()
            self.resolve_checked_at.clear()


broker_health = _BrokerHealth()


def _broker_failed(*, workspace_id: int, exc: BaseException) -> None:
    now = time.monotonic()
    with broker_health.lock:
        broker_health.down_until = now + BROKER_RETRY_AFTER_S
        last = broker_health.recorded_at.get(workspace_id)
        due = last is None or now - last >= BROKER_ERROR_RECORD_EVERY_S
        if due:
            broker_health.recorded_at[workspace_id] = now
            broker_health.resolve_checked_at.pop(workspace_id, None)
    logger.warning("classify_and_draft not enqueued (broker): %s; the sweeper will retry", type(exc).__name__)
    if due:
        try:
            integration_error_record(
                workspace=workspace_id,
                source=IntegrationError.Source.BROKER,
                code="enqueue_failed",
                message=f"Could not enqueue classify_and_draft: {type(exc).__name__}: {exc}"[:500],
            )
        except SoftTimeLimitExceeded:
            raise
        except Exception:
            logger.exception("could not record the broker error")


def _broker_succeeded(*, workspace_id: int) -> None:
    now = time.monotonic()
    with broker_health.lock:
        had_error = workspace_id in broker_health.recorded_at
        last_check = broker_health.resolve_checked_at.get(workspace_id)
        due = had_error or last_check is None or now - last_check >= BROKER_ERROR_RECORD_EVERY_S
        if due:
            broker_health.recorded_at.pop(workspace_id, None)
            broker_health.resolve_checked_at[workspace_id] = now
    if due:
        try:
            integration_error_resolve(workspace=workspace_id, source=IntegrationError.Source.BROKER)
        except SoftTimeLimitExceeded:
            raise
        except Exception:
            logger.exception("could not resolve the broker error")


def message_work_enqueue(*, message_id: int, workspace_id: int, force: bool = False, marked: bool = False) -> bool:
    """Enqueue ``classify_and_draft`` for an inbound message; never raises.

    Returns whether the broker accepted it. ``work_enqueued_at`` then holds
    the time of the hand-over: set here, or already written with the row by
    the webhook (``marked``), in which case a refusal clears it again so the
    sweeper picks the message up at its next run. (Should the process die
    between commit and enqueue, the mark ages past ``DRAFT_SWEEP_AFTER_S``
    and the sweeper re-enqueues it then.)
    """
    task = inbound_work_task()
    accepted = False
    if force or time.monotonic() >= broker_health.down_until:
        try:
            # One connection attempt, no kombu reconnect loop (which waits seconds on a
            # dead broker); the pooled producer connection is reused across requests.
            with task.app.producer_pool.acquire(block=True, timeout=1) as producer:
                producer.connection.ensure_connection(max_retries=0, timeout=1)
                task.apply_async(args=[message_id], retry=False, producer=producer)
            accepted = True
        except SoftTimeLimitExceeded:
            # The sweeper task ran out of time: not a broker outage, let celery see it.
            raise
        except Exception as exc:  # noqa: BLE001 - any broker failure: leave it to the sweeper
            _broker_failed(workspace_id=workspace_id, exc=exc)
    messages = Message.objects.filter(pk=message_id, workspace_id=workspace_id)
    if accepted and not marked:
        messages.update(work_enqueued_at=timezone.now(), work_enqueue_count=F("work_enqueue_count") + 1)
    elif not accepted and marked:
        messages.update(work_enqueued_at=None, work_enqueue_count=F("work_enqueue_count") - 1)
    if accepted:
        _broker_succeeded(workspace_id=workspace_id)
    return accepted


# --- Deliveries ----------------------------------------------------------------------------


def _delivery_apply(
    *, workspace_id: int, delivery: Delivery, optimistic: bool = False
) -> tuple[str, Message | None, Lead | None]:
    if delivery.action == DeliveryAction.IGNORE or delivery.identity is None:
        return IngestStatus.IGNORED, None, None
    lead, lead_created = lead_upsert(workspace_id=workspace_id, identity=delivery.identity)
    if delivery.action == DeliveryAction.BLACKLIST:
        already = lead.is_blacklisted
        lead = lead_blacklist(lead=lead, reason=delivery.event_type)
        if not already:
            lead_opted_out.send(sender=Lead, lead_id=lead.pk, workspace_id=workspace_id)
        return (IngestStatus.DUPLICATE if already else IngestStatus.CREATED), None, lead
    assert delivery.message is not None
    inbound = delivery.message.direction == Direction.INBOUND
    message, created = message_ingest(
        workspace_id=workspace_id,
        lead=lead,
        parsed=delivery.message,
        mark_work_enqueued=inbound,
        optimistic=optimistic,
    )
    if created and inbound:
        transaction.on_commit(
            partial(message_work_enqueue, message_id=message.pk, workspace_id=workspace_id, marked=True), robust=True
        )
    if not created and lead_created and message.lead_id != lead.pk:
        # The message is known, and another lead's (a provider id reused for another contact):
        # the lead just made for this delivery would stay without a message. It goes; the
        # event names the message's own lead.
        lead_discard_new(lead=lead)
        lead = message.lead
    return (IngestStatus.CREATED if created else IngestStatus.DUPLICATE), message, lead


_EVENT_STATUS = {
    IngestStatus.CREATED: WebhookEvent.Status.PROCESSED,
    IngestStatus.DUPLICATE: WebhookEvent.Status.DUPLICATE,
    IngestStatus.IGNORED: WebhookEvent.Status.IGNORED,
}


EVENT_KEY_CONSTRAINT = "webhookevent_unique_idempotency_key"


class _DuplicateDelivery(Exception):
    pass


def _is_constraint(exc: IntegrityError, name: str) -> bool:
    """Whether ``exc`` violated the unique constraint ``name``.

    PostgreSQL names the constraint (``diag.constraint_name``); SQLite names
    the columns ("UNIQUE constraint failed: table.col, table.col").
    """
    diag = getattr(exc.__cause__, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint:
        return constraint == name
    text = str(exc)
    return name in text or _constraint_columns_text(name) in text


def _constraint_columns_text(name: str) -> str:
    for model in (WebhookEvent, Message):
        for constraint in model._meta.constraints:
            if constraint.name == name:
                table = model._meta.db_table
                columns = (model._meta.get_field(field).column for field in constraint.fields)
                return ", ".join(f"{table}.{column}" for column in columns)
    return name


def webhook_delivery_ingest(
    *, workspace_id: int, provider: str, delivery: Delivery, body: Any, headers: dict[str, str]
) -> IngestResult:
    """Apply the delivery and store its WebhookEvent, all in one transaction.

    The event row is written last, with its outcome, so the common path costs
    one INSERT. Its idempotency key is unique per workspace and provider: a
    copy of a delivery already stored (a replayed ``webhookId``, a retried
    EmailBison event) hits that constraint, the whole transaction rolls back
    (nothing it did survives, no task is enqueued), and the copy is logged as
    its own ``duplicate`` event answering the original's ids. Concurrent
    copies wait on the unique indexes until the first commits, then take the
    same path.
    """
    optimistic = True
    while True:
        try:
            with transaction.atomic():
                status, message, lead = _delivery_apply(
                    workspace_id=workspace_id, delivery=delivery, optimistic=optimistic
                )
                event = WebhookEvent(
                    workspace_id=workspace_id,
                    provider=provider,
                    event_type=delivery.event_type[:64],
                    idempotency_key=delivery.idempotency_key[:255],
                    body=body,
                    headers=headers,
                    status=_EVENT_STATUS[status],
                    error=delivery.note,
                    message=message,
                    lead=lead,
                    processed_at=timezone.now(),
                )
                try:
                    event.save(force_insert=True)
                except IntegrityError as exc:
                    if event.idempotency_key and _is_constraint(exc, EVENT_KEY_CONSTRAINT):
                        raise _DuplicateDelivery from exc
                    raise
            break
        except _DuplicateDelivery:
            return _webhook_duplicate_record(
                workspace_id=workspace_id, provider=provider, delivery=delivery, body=body, headers=headers
            )
        except IntegrityError:
            # Most likely a concurrent copy of this message committed first (on
            # SQLite the error names columns, not the constraint): rerun once,
            # this time with the savepoint that reads the winner's row.
            if optimistic:
                optimistic = False
                continue
            raise
    return IngestResult(status, message.pk if message else None, lead.pk if lead else None, event.pk)


def _webhook_duplicate_record(
    *, workspace_id: int, provider: str, delivery: Delivery, body: Any, headers: dict[str, str]
) -> IngestResult:
    original = webhook_event_original(
        workspace_id=workspace_id, provider=provider, idempotency_key=delivery.idempotency_key[:255]
    )
    event = WebhookEvent.objects.create(
        workspace_id=workspace_id,
        provider=provider,
        event_type=delivery.event_type[:64],
        body=body,
        headers=headers,
        status=WebhookEvent.Status.DUPLICATE,
        error=f"duplicate of webhook event #{original.pk}" if original else "duplicate delivery",
        message_id=original.message_id if original else None,
        lead_id=original.lead_id if original else None,
        processed_at=timezone.now(),
    )
    return IngestResult(IngestStatus.DUPLICATE, event.message_id, event.lead_id, event.pk)


def webhook_event_log(
    *,
    workspace_id: int,
    provider: str,
    event_type: str,
    body: Any,
    headers: dict[str, str],
    status: str,
    error: str,
    reprocessable: bool = True,
) -> WebhookEvent | None:
    """Log a delivery that wrote nothing else; never raises (the answer is already decided).

    ``rejected``: authenticated but refused (malformed JSON, validation,
    signature), with the reason. ``failed``: processing crashed (the answer
    is 500, the provider retries, admin can reprocess); ``error`` is the
    exception type only and ``processed_at`` stays empty. Signature refusals
    are logged with ``reprocessable=False``: their body was never verified.
    """
    try:
        return WebhookEvent.objects.create(
            workspace_id=workspace_id,
            provider=provider,
            event_type=(event_type or "")[:64],
            body=body,
            headers=headers,
            status=status,
            error=error[:2000],
            processed_at=None if status == WebhookEvent.Status.FAILED else timezone.now(),
            reprocessable=reprocessable,
        )
    except Exception:
        logger.exception("could not log the %s webhook delivery", status)
        return None


DELIVERY_PARSERS = {
    WebhookEvent.Provider.GHL: ghl_delivery_parse,
    WebhookEvent.Provider.EMAILBISON: emailbison_delivery_parse,
}


def _webhook_event_update(event: WebhookEvent, **changes: Any) -> None:
    """Rewrite some fields of ``event`` (an UPDATE scoped by workspace, unlike ``save()``)."""
    for field, value in changes.items():
        setattr(event, field, value)
    WebhookEvent.objects.filter(pk=event.pk, workspace_id=event.workspace_id).update(**changes)


class WebhookEventNotReprocessable(Exception):
    """The stored delivery failed its signature checks: it is never applied."""


@transaction.atomic
def webhook_event_reprocess(*, event_id: int, workspace_id: int) -> IngestResult:
    """Apply a stored delivery again (admin action). Idempotent: known messages answer duplicate.

    Only deliveries that passed authentication are stored, but not all passed
    their signature checks: those refused for their signature, timestamp or
    ``webhookId`` are stored with ``reprocessable=False`` and raise
    ``WebhookEventNotReprocessable`` here (nothing is changed). Signatures are
    not checked again (their timestamps are stale by now). The event keeps its
    row; its status, links and error are rewritten.
    """
    event = WebhookEvent.objects.select_for_update().get(pk=event_id, workspace_id=workspace_id)
    if not event.reprocessable:
        raise WebhookEventNotReprocessable(f"webhook event #{event.pk} failed its signature checks")
    try:
        delivery = DELIVERY_PARSERS[event.provider](event.body)
        if event.provider == WebhookEvent.Provider.GHL:
            # The tenant check of the view, again: the workspace's location may have changed.
            location = Workspace.objects.filter(pk=workspace_id).values_list("ghl_location_id", flat=True).first()
            problem = ghl_location_problem(
                shape=ghl_payload_shape(event.body),
                location_id=delivery.location_id,
                workspace_location_id=location,
                payload=event.body,
            )
            if problem:
                raise drf_serializers.ValidationError(problem)
    except drf_serializers.ValidationError as exc:
        _webhook_event_update(
            event,
            status=WebhookEvent.Status.REJECTED,
            error=validation_error_text(exc.detail)[:2000],
            processed_at=timezone.now(),
        )
        return IngestResult(IngestStatus.IGNORED, None, None, event.pk)
    status, message, lead = _delivery_apply(workspace_id=workspace_id, delivery=delivery)
    _webhook_event_update(
        event,
        status=_EVENT_STATUS[status],
        message=message,
        lead=lead,
        error=delivery.note,
        processed_at=timezone.now(),
    )
    return IngestResult(status, message.pk if message else None, lead.pk if lead else None, event.pk)
