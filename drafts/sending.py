"""Approve and send: a draft reaches its lead exactly once, or is never sent.

``draft_send`` runs in a Celery task (``drafts.tasks.draft_send``) in three steps:

1. **Claim** (one transaction, the draft row locked): the draft must be ``approved`` (or a
   ``scheduled`` one whose time came). Compliance is checked now, when the message leaves, not
   only at approval: a blacklisted lead gets nothing (``skipped``); an SMS lead with DND gets
   nothing (``skipped``, reason ``dnd``); an SMS outside the lead's send window is
   ``scheduled`` for the window's opening. Then the outbound ``Message`` is written with
   ``delivery=sending`` and ``draft_source=draft``. A partial unique constraint allows one
   such row per draft (``message_one_send_per_draft``): whoever comes second (a double click,
   a second operator, a redelivered task) finds it and sends nothing.
2. **The provider call**, outside any transaction, under the task's deadline.
3. **Finish**: accepted → the row becomes ``sent`` with the provider's id, the draft ``sent``
   and linked (``sent_message``). Refused for certain (4xx, a connect failure, no sendable
   sender) → the row ``failed``, the draft ``failed`` with the reason, an IntegrationError.
   Anything else (a read timeout, a 5xx, a dropped connection) → ``unconfirmed``: the provider
   may have sent it, so it is never sent again; the operator is told to look.

A worker that dies between the provider's acceptance and step 3 leaves the row ``sending``.
The redelivered task (or the beat sweep ``drafts_send_due``) leaves it alone while a live
worker could still be in the call (``SEND_LEASE``), then marks it ``unconfirmed`` and fails
the draft with ``send_unconfirmed``: at most once, never twice. A lead texted twice by an AI
is worse than one reply an operator confirms by hand; see docs/sending.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from core.http import (
    Deadline,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderRateLimited,
    ProviderTimeout,
)
from drafts.models import Draft, DraftStatus
from drafts.sendwindow import lead_time_zones, send_window_next_open
from emailbison.services import (
    EmailBisonNotConfigured,
    NoSendableSender,
    email_reply_send,
)
from ghl.client import GhlClient
from leads.models import Lead
from leads.services import lead_rollups_touch, lead_sms_dnd_set
from messaging.models import SEND_CLAIMED_DELIVERIES, Channel, Delivery, Direction, Message, Origin
from messaging.selectors import message_emailbison_sender_id, message_has_newer_inbound
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

SENDABLE_STATUSES = (DraftStatus.APPROVED, DraftStatus.SCHEDULED)
SEND_ERROR_PREFIX = "send_"
UNCONFIRMED_CODE = "send_unconfirmed"
_DND = re.compile(r"\bdnd\b|do not disturb", re.IGNORECASE)


def send_lease() -> dt.timedelta:
    """How long a ``sending`` row may belong to a live worker: the send task's hard limit (no
    worker runs it longer) plus a margin for clocks and queueing."""
    return dt.timedelta(seconds=settings.DRAFT_SEND_TASK_TIME_LIMIT_S + settings.DRAFT_SEND_LEASE_MARGIN_S)


class Route:
    GHL_SMS = "ghl_sms"
    GHL_EMAIL = "ghl_email"
    EMAILBISON_REPLY = "emailbison_reply"


class Outcome:
    SENT = "sent"
    SCHEDULED = "scheduled"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"
    IN_FLIGHT = "in_flight"
    NOT_SENDABLE = "not_sendable"  # not approved (rejected, edited back to ready, already sent...)
    STALE = "stale"  # the lead wrote again after the approval: superseded, not sent
    RATE_LIMITED = "rate_limited"  # refused for now: stays approved, sent again by the sweep


@dataclass(frozen=True)
class SendClaim:
    """What the provider call needs, read inside the claim's transaction."""

    draft_id: int
    workspace_id: int
    outbound_id: int
    route: str
    lead_id: int
    content: str
    subject: str
    ghl_contact_id: str
    ghl_reply_message_id: str
    emailbison_reply_id: str
    thread_sender_id: str
    to_email: str
    to_name: str
    # Read with the draft (its credentials decrypted once): the provider call needs no query.
    workspace: Workspace = field(repr=False, compare=False)


@dataclass(frozen=True)
class Receipt:
    ghl_message_id: str = ""
    emailbison_reply_id: str = ""


class SendRefused(Exception):
    """The provider certainly did not send it (``reason`` is a short code)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


# --- Approve and send ----------------------------------------------------------------------


@dataclass(frozen=True)
class ApproveAndSend:
    queued: list[int]  # drafts handed to the send task (approved now, or already approved/scheduled)
    refused: list[str]  # why the others were not, one sentence each


def drafts_approve_and_send(*, workspace_id: int, draft_ids: list[int], user) -> ApproveAndSend:
    """Approve the ready drafts among ``draft_ids`` (approved and scheduled ones stay as they
    are) and hand them all to the send task after commit; the rest are refused with the reason.

    The drafts are locked and approved in a few statements whatever their number, so a click
    on a hundred drafts starts the first sends at once.
    """
    now = timezone.now()
    queued, to_approve, refused = [], [], []
    with transaction.atomic():
        drafts = (
            Draft.objects.select_for_update(of=("self",))
            .select_related("lead")
            .filter(workspace_id=workspace_id, pk__in=draft_ids)
            .order_by("id")
        )
        for draft in drafts:
            if draft.status in SENDABLE_STATUSES:
                queued.append(draft.pk)
            elif draft.status != DraftStatus.READY:
                refused.append(f"draft #{draft.pk} is {draft.status}: cannot approve it")
            elif draft.lead.is_blacklisted:
                refused.append(f"draft #{draft.pk}: the lead is blacklisted, cannot approve it")
            else:
                to_approve.append(draft.pk)
        Draft.objects.filter(workspace_id=workspace_id, pk__in=to_approve).update(
            status=DraftStatus.APPROVED, approved_by=user, approved_at=now, updated_at=now
        )
        queued = sorted(queued + to_approve)
        transaction.on_commit(functools.partial(_send_enqueue_all, draft_ids=queued, workspace_id=workspace_id))
    return ApproveAndSend(queued=queued, refused=refused)


def draft_approve_and_send(*, draft: Draft, user) -> Draft:
    """One draft's approve-and-send; a refusal raises ``ValueError`` saying why."""
    result = drafts_approve_and_send(workspace_id=draft.workspace_id, draft_ids=[draft.pk], user=user)
    if result.refused:
        raise ValueError(result.refused[0])
    draft.refresh_from_db()
    return draft


def _send_enqueue_all(*, draft_ids: list[int], workspace_id: int) -> None:
    for draft_id in draft_ids:
        if not draft_send_enqueue(draft_id=draft_id, workspace_id=workspace_id):
            return  # the broker is down: the beat sweep sends the approved drafts later


def draft_send_enqueue(*, draft_id: int, workspace_id: int) -> bool:
    """Hand the send to the broker; never raises (the beat sweep ``drafts_send_due`` retries)."""
    from drafts.tasks import draft_send as draft_send_task

    try:
        draft_send_task.apply_async(args=[draft_id, workspace_id], retry=False)
        return True
    except Exception as exc:  # noqa: BLE001 - broker down: the sweep sends it later
        logger.warning("draft_send not enqueued (%s); the send sweep will retry", type(exc).__name__)
        return False


# --- The send ------------------------------------------------------------------------------


def draft_send(*, draft_id: int, workspace_id: int, deadline: Deadline | float | None = None) -> str:
    """Send one approved draft (see the module docstring); returns an ``Outcome``."""
    claim = _claim(draft_id=draft_id, workspace_id=workspace_id)
    if isinstance(claim, str):
        return claim
    try:
        receipt = _provider_send(claim, deadline=Deadline.coerce(deadline or settings.DRAFT_SEND_TIMEOUT_S))
    except SoftTimeLimitExceeded:
        # Out of time inside the call: it may have gone out. Settle now, then let Celery see it.
        _finish_failed(claim, delivery=Delivery.UNCONFIRMED, reason="send_unconfirmed", detail="the send timed out")
        raise
    except SendRefused as exc:
        _finish_failed(claim, delivery=Delivery.FAILED, reason=exc.reason, detail=exc.detail)
        return Outcome.FAILED
    except ProviderRateLimited as exc:
        # The provider refused it for now, certainly unsent: the row gives way, the draft stays
        # approved, and the beat sweep sends it again after DRAFT_SWEEP_AFTER_S.
        _finish_rate_limited(claim, detail=str(exc))
        return Outcome.RATE_LIMITED
    except ProviderError as exc:
        if _certainly_not_sent(exc):
            _finish_failed(claim, delivery=Delivery.FAILED, reason=f"provider_{exc.code}"[:32], detail=str(exc))
            return Outcome.FAILED
        _finish_failed(claim, delivery=Delivery.UNCONFIRMED, reason="send_unconfirmed", detail=str(exc))
        return Outcome.UNCONFIRMED
    _finish_sent(claim, receipt)
    return Outcome.SENT


def _certainly_not_sent(exc: ProviderError) -> bool:
    if isinstance(exc, ProviderTimeout):
        return exc.connect
    if isinstance(exc, ProviderConnectionError):
        return False  # refused before, or dropped after the request was written: we cannot tell
    if exc.status is not None:
        return 400 <= exc.status < 500
    return False


# What the claim and the provider call read, and nothing more: the claim runs once a send, and
# four whole rows (the workspace's settings, the lead's CRM fields...) cost more to build than
# to fetch. A field missing here costs a query of its own (test_a_send_takes_a_fixed_few_statements).
CLAIM_FIELDS = (
    *("id", "workspace_id", "lead_id", "message_id", "status", "channel", "content", "subject"),
    *(f"lead__{name}" for name in ("id", "workspace_id", "status", "sentiment", "sms_dnd", "timezone")),
    *(f"lead__{name}" for name in ("phone_e164", "email", "first_name", "last_name", "ghl_contact_id")),
    *(f"message__{name}" for name in ("id", "workspace_id", "lead_id", "direction", "sent_at", "created_at")),
    *(f"message__{name}" for name in ("ghl_message_id", "emailbison_reply_id")),
    *(f"workspace__{name}" for name in ("id", "slug", "timezone", "sms_send_start", "sms_send_end")),
    *(f"workspace__{name}" for name in ("ghl_token", "ghl_location_id", "emailbison_base_url", "emailbison_token")),
)


def _claim(*, draft_id: int, workspace_id: int) -> SendClaim | str:
    now = timezone.now()
    with transaction.atomic():
        draft = (
            Draft.objects.select_for_update(of=("self",))
            .select_related("lead", "message", "workspace")
            .only(*CLAIM_FIELDS)
            .get(pk=draft_id, workspace_id=workspace_id)
        )
        # A statement of its own, after the lock: one that waited for the lock sees the row the
        # holder wrote (a subquery of the locking SELECT would read the snapshot from before).
        earlier = _earlier_send(draft)
        if earlier is not None:
            # Whatever the draft's status now (an opt-out may have skipped it mid-send).
            return _earlier_send_settle(draft, earlier, now=now)
        if draft.status not in SENDABLE_STATUSES:
            return Outcome.NOT_SENDABLE
        if message_has_newer_inbound(draft.message):
            # The lead wrote again since this reply was approved ("found someone", "Thursday
            # instead?"): it answers an old message now. The newer message gets its own draft.
            _draft_update(
                draft,
                status=DraftStatus.SUPERSEDED,
                failure_reason="stale",
                send_after=None,
                error="the lead wrote again after the reply was approved: not sent",
            )
            return Outcome.STALE
        lead, workspace = draft.lead, draft.workspace
        if lead.is_blacklisted:
            _draft_update(
                draft,
                status=DraftStatus.SKIPPED,
                failure_reason="blacklisted",
                error="the lead opted out before the reply was sent",
            )
            return Outcome.SKIPPED
        if draft.channel == Channel.SMS:
            if lead.sms_dnd:
                _draft_update(
                    draft,
                    status=DraftStatus.SKIPPED,
                    failure_reason="dnd",
                    error="the contact has Do Not Disturb on for SMS",
                )
                return Outcome.SKIPPED
            opens = send_window_next_open(
                now,
                zones=lead_time_zones(lead=lead, workspace=workspace),
                start=workspace.sms_send_start,
                end=workspace.sms_send_end,
            )
            if opens is None:
                _draft_update(
                    draft,
                    status=DraftStatus.FAILED,
                    failure_reason="no_send_window",
                    error="the workspace's SMS send window is empty",
                )
                return Outcome.FAILED
            if opens > now:
                _draft_update(draft, status=DraftStatus.SCHEDULED, send_after=opens)
                return Outcome.SCHEDULED
        route, problem = _route(draft, lead=lead, workspace=workspace)
        if problem:
            _draft_update(
                draft,
                status=DraftStatus.FAILED,
                failure_reason=problem,
                error=f"no way to send this {draft.channel} reply: {problem}",
            )
            integration_error_record(
                workspace=workspace_id,
                source=IntegrationError.Source.DRAFTS,
                code=f"{SEND_ERROR_PREFIX}{problem}"[:64],
                message=f"draft #{draft.pk} cannot be sent: {problem}",
                context={"draft_id": draft.pk},
            )
            return Outcome.FAILED
        outbound = Message.objects.create(
            workspace_id=workspace_id,
            lead=lead,
            channel=draft.channel,
            direction=Direction.OUTBOUND,
            body=draft.content,
            subject=draft.subject,
            sent_at=now,
            origin=Origin.SENT,
            delivery=Delivery.SENDING,
            draft_source=draft,
        )
        answered = draft.message
        return SendClaim(
            draft_id=draft.pk,
            workspace_id=workspace_id,
            outbound_id=outbound.pk,
            route=route,
            lead_id=lead.pk,
            content=draft.content,
            subject=draft.subject,
            ghl_contact_id=lead.ghl_contact_id,
            ghl_reply_message_id=answered.ghl_message_id,
            emailbison_reply_id=answered.emailbison_reply_id,
            thread_sender_id=message_emailbison_sender_id(answered) if route == Route.EMAILBISON_REPLY else "",
            to_email=lead.email,
            to_name=f"{lead.first_name} {lead.last_name}".strip(),
            workspace=workspace,
        )


def _earlier_send(draft: Draft) -> Message | None:
    return (
        Message.objects.filter(
            workspace_id=draft.workspace_id,
            draft_source=draft,
            delivery__in=SEND_CLAIMED_DELIVERIES,
        )
        .only("id", "workspace_id", "delivery", "created_at", "sent_at")
        .order_by("id")
        .first()
    )


def _earlier_send_settle(draft: Draft, earlier: Message, *, now: dt.datetime) -> str:
    """Someone already sent (or is sending) this draft: never send it again."""
    if earlier.delivery == Delivery.SENT:
        if draft.status != DraftStatus.SENT:
            _draft_update(draft, status=DraftStatus.SENT, sent_message=earlier, sent_at=earlier.sent_at)
        return Outcome.NOT_SENDABLE
    if earlier.delivery == Delivery.UNCONFIRMED:
        return Outcome.NOT_SENDABLE  # settled already: the operator checks the provider
    if earlier.delivery == Delivery.SENDING and earlier.created_at > now - send_lease():
        return Outcome.IN_FLIGHT  # a live worker may be in the provider call right now
    Message.objects.filter(pk=earlier.pk, workspace_id=earlier.workspace_id).update(delivery=Delivery.UNCONFIRMED)
    detail = "the worker stopped during the provider call: it may have gone out"
    _draft_update(draft, status=DraftStatus.FAILED, failure_reason="send_unconfirmed", error=detail)
    _send_error_record(
        draft.workspace_id,
        draft_id=draft.pk,
        source=IntegrationError.Source.DRAFTS,
        reason="send_unconfirmed",
        detail=detail,
    )
    return Outcome.UNCONFIRMED


def _route(draft: Draft, *, lead: Lead, workspace: Workspace) -> tuple[str, str]:
    """(route, "") or ("", problem code)."""
    has_ghl = bool(workspace.ghl_token and lead.ghl_contact_id)
    if draft.channel == Channel.SMS:
        return (Route.GHL_SMS, "") if has_ghl else ("", "no_ghl_contact")
    reply_id = draft.message.emailbison_reply_id
    if reply_id and workspace.emailbison_base_url and workspace.emailbison_token:
        if not reply_id.isdigit():
            return "", "bad_reply_id"
        return (Route.EMAILBISON_REPLY, "") if lead.email else ("", "no_email_address")
    return (Route.GHL_EMAIL, "") if has_ghl else ("", "no_email_route")


def _provider_send(claim: SendClaim, *, deadline: Deadline) -> Receipt:
    workspace = claim.workspace
    if claim.route == Route.EMAILBISON_REPLY:
        try:
            sent = email_reply_send(
                workspace=workspace,
                reply_id=claim.emailbison_reply_id,
                to_email=claim.to_email,
                to_name=claim.to_name,
                message=claim.content,
                preferred_sender_id=claim.thread_sender_id,
                deadline=deadline,
            )
        except (NoSendableSender, EmailBisonNotConfigured) as exc:
            raise SendRefused(exc.code, str(exc)) from exc
        return Receipt(emailbison_reply_id=sent.provider_reply_id)
    with GhlClient(token=workspace.ghl_token, location_id=workspace.ghl_location_id) as client:
        try:
            answer = client.message_send(
                contact_id=claim.ghl_contact_id,
                message_type="SMS" if claim.route == Route.GHL_SMS else "Email",
                message=claim.content,
                subject=claim.subject if claim.route == Route.GHL_EMAIL else "",
                reply_message_id=claim.ghl_reply_message_id if claim.route == Route.GHL_EMAIL else "",
                deadline=deadline,
            )
        except ProviderHTTPError as exc:
            if claim.route == Route.GHL_SMS and _DND.search(exc.message or ""):
                lead_sms_dnd_set(lead_id=claim.lead_id, workspace_id=claim.workspace_id, dnd=True)
                raise SendRefused("dnd", "GHL refused: Do Not Disturb is active for SMS") from exc
            raise
    return Receipt(ghl_message_id=str(answer.get("messageId") or "")[:64])


# --- Finishing -----------------------------------------------------------------------------


def _finish_sent(claim: SendClaim, receipt: Receipt) -> None:
    now = timezone.now()
    provider_ids = {"ghl_message_id": receipt.ghl_message_id, "emailbison_reply_id": receipt.emailbison_reply_id}
    with transaction.atomic():
        _outbound_mark_sent(claim, provider_ids=provider_ids, at=now)
        # Unconditional: it went out, whatever happened to the draft meanwhile (an opt-out
        # that arrived during the call cannot unsend it).
        Draft.objects.filter(pk=claim.draft_id, workspace_id=claim.workspace_id).update(
            status=DraftStatus.SENT,
            sent_message_id=claim.outbound_id,
            sent_at=now,
            send_after=None,
            failure_reason="",
            error="",
            updated_at=now,
        )
        lead_rollups_touch(lead_id=claim.lead_id, workspace_id=claim.workspace_id, direction=Direction.OUTBOUND, at=now)
        # An unconfirmed send is about one draft a person must check: no success disproves it.
        integration_error_resolve(
            workspace=claim.workspace_id,
            source=(IntegrationError.Source.DRAFTS, _route_source(claim.route)),
            code_prefix=SEND_ERROR_PREFIX,
            keep_codes=[UNCONFIRMED_CODE],
        )


def _outbound_mark_sent(claim: SendClaim, *, provider_ids: dict[str, str], at: dt.datetime) -> None:
    """The provider's id goes on our row. GHL may have told us about our own message first
    (an ``OutboundMessage`` webhook stored it as a separate row): that copy gives way."""
    values = {key: value for key, value in provider_ids.items() if value}
    rows = Message.objects.filter(pk=claim.outbound_id, workspace_id=claim.workspace_id)
    try:
        with transaction.atomic():
            rows.update(delivery=Delivery.SENT, sent_at=at, **values)
    except IntegrityError:
        Message.objects.filter(
            workspace_id=claim.workspace_id, direction=Direction.OUTBOUND, draft_source__isnull=True, **values
        ).delete()
        rows.update(delivery=Delivery.SENT, sent_at=at, **values)


def _finish_failed(claim: SendClaim, *, delivery: str, reason: str, detail: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        Message.objects.filter(pk=claim.outbound_id, workspace_id=claim.workspace_id).update(delivery=delivery)
        Draft.objects.filter(pk=claim.draft_id, workspace_id=claim.workspace_id).update(
            status=DraftStatus.FAILED, failure_reason=reason[:32], error=detail[:2000], updated_at=now
        )
        _send_error_record(
            claim.workspace_id, draft_id=claim.draft_id, source=_route_source(claim.route), reason=reason, detail=detail
        )
    logger.warning("draft %s not sent (%s, %s)", claim.draft_id, claim.route, reason)


def _finish_rate_limited(claim: SendClaim, *, detail: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        Message.objects.filter(pk=claim.outbound_id, workspace_id=claim.workspace_id).update(delivery=Delivery.FAILED)
        Draft.objects.filter(pk=claim.draft_id, workspace_id=claim.workspace_id).update(
            error=f"rate limited, retried automatically: {detail}"[:2000], updated_at=now
        )
    logger.warning("draft %s rate limited (%s); the send sweep retries it", claim.draft_id, claim.route)


def _route_source(route: str) -> str:
    return IntegrationError.Source.EMAILBISON if route == Route.EMAILBISON_REPLY else IntegrationError.Source.GHL


def _send_error_record(workspace_id: int, *, draft_id: int, source: str, reason: str, detail: str) -> None:
    code = reason if reason.startswith(SEND_ERROR_PREFIX) else f"{SEND_ERROR_PREFIX}{reason}"
    integration_error_record(
        workspace=workspace_id,
        source=source,
        code=code[:64],
        message=f"draft #{draft_id} was not sent ({detail})"[:500],
        context={"draft_id": draft_id},
    )


def _draft_update(draft: Draft, **values) -> None:
    values.setdefault("updated_at", timezone.now())
    Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id).update(**values)
    for key, value in values.items():
        setattr(draft, key, value)


# --- The beat sweep --------------------------------------------------------------------------


def drafts_send_due(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Enqueue the sends that are due, workspace by workspace: scheduled drafts whose window
    opened, approved drafts whose enqueue was lost, and sends stuck ``sending`` past the lease
    (their task settles them as ``unconfirmed``). Stops at the first broker failure. Returns
    how many were enqueued."""
    now = now or timezone.now()
    lost_after = now - dt.timedelta(seconds=settings.DRAFT_SWEEP_AFTER_S)
    enqueued = 0
    for workspace_id in Workspace.objects.filter(is_active=True).order_by("id").values_list("id", flat=True):
        stuck = Message.objects.filter(
            workspace_id=workspace_id,
            draft_source=OuterRef("pk"),
            delivery=Delivery.SENDING,
            created_at__lte=now - send_lease(),
        )
        due = Draft.objects.filter(workspace_id=workspace_id).filter(
            Q(status=DraftStatus.SCHEDULED, send_after__lte=now)
            | Q(status=DraftStatus.APPROVED, updated_at__lte=lost_after)
            | Q(Exists(stuck))  # whatever the draft's status: an opt-out may have skipped it mid-send
        )
        for draft_id in due.order_by("send_after", "id").values_list("id", flat=True)[:limit]:
            if not draft_send_enqueue(draft_id=draft_id, workspace_id=workspace_id):
                return enqueued
            enqueued += 1
    return enqueued
