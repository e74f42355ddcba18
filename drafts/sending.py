"""Approve and send: a draft reaches its lead exactly once, or is never sent.

``drafts_send`` runs in a Celery task (``drafts.tasks.drafts_send``, the ``sends`` queue) on a
batch of approved drafts of one workspace, in three steps, each done once for the batch
(``draft_send`` is a batch of one):

1. **Claim** (one transaction, the draft rows locked): the draft must be ``approved`` (or a
   ``scheduled`` one whose time came). Compliance is checked now, when the message leaves, not
   only at approval: a blacklisted lead gets nothing (``skipped``); an SMS lead with DND gets
   nothing (``skipped``, reason ``dnd``); an SMS outside the lead's send window is
   ``scheduled`` for the window's opening. Then the outbound ``Message`` is written with
   ``delivery=sending`` and ``draft_source=draft``. A partial unique constraint allows one
   such row per draft (``message_one_send_per_draft``): whoever comes second (a double click,
   a second operator, a redelivered task) finds it and sends nothing.
2. **The provider calls**, outside any transaction, at the same time in threads (HTTP only),
   under one deadline (``_ProviderCalls``).
3. **Finish**, one transaction for each group of calls that ended together: accepted → the
   row becomes ``sent`` with the provider's id, the draft ``sent`` and linked
   (``sent_message``). Refused for certain (4xx, a connect failure, no sendable sender) → the
   row ``failed``, the draft ``failed`` with the reason, an IntegrationError. Anything else (a
   read timeout, a 5xx, a dropped connection) → ``unconfirmed``: the provider may have sent
   it, so it is never sent again; the operator is told to look.

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
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, Exists, F, OuterRef, Q, Value, When
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
from emailbison.client import SenderInvalid
from emailbison.services import NoSendableSender, ReplySenders, emailbison_client_for
from ghl.client import GhlClient
from leads.models import Lead
from leads.services import lead_rollups_touch, lead_sms_dnd_set
from messaging.models import SEND_CLAIMED_DELIVERIES, Channel, Delivery, Direction, Message, Origin
from messaging.selectors import messages_emailbison_sender_ids, messages_with_newer_inbound
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

SENDABLE_STATUSES = (DraftStatus.APPROVED, DraftStatus.SCHEDULED)
SEND_ERROR_PREFIX = "send_"
UNCONFIRMED_CODE = "send_unconfirmed"
DND_REASON = "dnd"
_DND = re.compile(r"\bdnd\b|do not disturb", re.IGNORECASE)


def send_lease() -> dt.timedelta:
    """How long a ``sending`` row may belong to a live worker: the send task's hard limit (no
    worker runs it longer) plus a margin for clocks and queueing."""
    return dt.timedelta(seconds=settings.DRAFT_SEND_TASK_TIME_LIMIT_S + settings.DRAFT_SEND_LEASE_MARGIN_S)


class Route:
    GHL_SMS = "ghl_sms"
    GHL_EMAIL = "ghl_email"
    EMAILBISON_REPLY = "emailbison_reply"
    ALL = frozenset({GHL_SMS, GHL_EMAIL, EMAILBISON_REPLY})


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

    def provider_ids(self) -> dict[str, str]:
        """The ids the provider gave, by the outbound row's field name."""
        return {name: value for name in ("ghl_message_id", "emailbison_reply_id") if (value := getattr(self, name))}


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
        transaction.on_commit(functools.partial(drafts_send_enqueue, draft_ids=queued, workspace_id=workspace_id))
    return ApproveAndSend(queued=queued, refused=refused)


def draft_approve_and_send(*, draft: Draft, user) -> Draft:
    """One draft's approve-and-send; a refusal raises ``ValueError`` saying why."""
    result = drafts_approve_and_send(workspace_id=draft.workspace_id, draft_ids=[draft.pk], user=user)
    if result.refused:
        raise ValueError(result.refused[0])
    draft.refresh_from_db()
    return draft


def drafts_send_enqueue(*, draft_ids: list[int], workspace_id: int) -> int:
    """Hand the sends to the broker, ``DRAFT_SEND_BATCH_SIZE`` drafts a task; never raises
    (the beat sweep ``drafts_send_due`` retries). Returns how many drafts were handed over:
    fewer than asked when the broker failed."""
    from drafts.tasks import drafts_send as drafts_send_task

    size = max(1, settings.DRAFT_SEND_BATCH_SIZE)
    handed = 0
    for i in range(0, len(draft_ids), size):
        batch = list(draft_ids[i : i + size])
        try:
            drafts_send_task.apply_async(args=[batch, workspace_id], retry=False)
        except Exception as exc:  # noqa: BLE001 - broker down: the sweep sends them later
            logger.warning("drafts_send not enqueued (%s); the send sweep will retry", type(exc).__name__)
            return handed
        handed += len(batch)
    return handed


# --- The send ------------------------------------------------------------------------------


def draft_send(*, draft_id: int, workspace_id: int, deadline: Deadline | float | None = None) -> str:
    """Send one approved draft (see the module docstring); returns an ``Outcome``."""
    return drafts_send(draft_ids=[draft_id], workspace_id=workspace_id, deadline=deadline)[draft_id]


def drafts_send(*, draft_ids: list[int], workspace_id: int, deadline: Deadline | float | None = None) -> dict[int, str]:
    """Send approved drafts of one workspace together; returns each draft's ``Outcome``.

    The same three steps as one send, each done once for the batch: one claim transaction
    for all (a few statements whatever their number), the provider calls at once in threads
    (HTTP only: they touch no database), and the finish in one transaction for the sends that
    ended together. A dead EmailBison sender is healed once for all the replies it refused.
    """
    deadline = Deadline.coerce(deadline or settings.DRAFT_SEND_TIMEOUT_S)
    claims = _claim_all(draft_ids=draft_ids, workspace_id=workspace_id)
    outcomes = {draft_id: found for draft_id, found in claims.items() if isinstance(found, str)}
    to_send = [found for found in claims.values() if isinstance(found, SendClaim)]
    if not to_send:
        return outcomes
    calls = _ProviderCalls(to_send[0].workspace, routes={claim.route for claim in to_send}, batch=len(to_send))
    open_claims = {claim.draft_id: claim for claim in to_send}
    try:
        for ended in calls.run(to_send, deadline=deadline):
            outcomes.update(_finish_all(ended))
            for claim, _ in ended:
                open_claims.pop(claim.draft_id, None)
        calls.settle()
    except SoftTimeLimitExceeded:
        # Out of time with calls in flight: they may have gone out. Settle now, then let Celery see it.
        for claim in open_claims.values():
            _finish_failed(claim, delivery=Delivery.UNCONFIRMED, reason="send_unconfirmed", detail="the send timed out")
        raise
    finally:
        calls.close()
    return outcomes


def _outcome(claim: SendClaim, result: object) -> tuple[str, str, str]:
    """(outcome, delivery of the row, reason) of a provider call's result."""
    if isinstance(result, Receipt):
        return Outcome.SENT, Delivery.SENT, ""
    if isinstance(result, SendRefused):
        return Outcome.FAILED, Delivery.FAILED, result.reason
    if isinstance(result, ProviderRateLimited):
        # The provider refused it for now, certainly unsent: the row gives way, the draft stays
        # approved, and the beat sweep sends it again after DRAFT_SWEEP_AFTER_S.
        return Outcome.RATE_LIMITED, Delivery.FAILED, ""
    if isinstance(result, ProviderError):
        if _certainly_not_sent(result):
            return Outcome.FAILED, Delivery.FAILED, f"provider_{result.code}"[:32]
        return Outcome.UNCONFIRMED, Delivery.UNCONFIRMED, "send_unconfirmed"
    # Not a provider's answer (a bug): the call may have gone out. For the log and Sentry.
    logger.error("draft %s: the send ended in %s", claim.draft_id, type(result).__name__, exc_info=result)
    return Outcome.UNCONFIRMED, Delivery.UNCONFIRMED, "send_unconfirmed"


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


def _claim_all(*, draft_ids: list[int], workspace_id: int) -> dict[int, SendClaim | str]:
    """Claim each draft (``SendClaim``) or say why it is not sent now (an ``Outcome``), in one
    transaction with the drafts locked (in id order, as every writer of several drafts locks)."""
    now = timezone.now()
    found: dict[int, SendClaim | str] = {draft_id: Outcome.NOT_SENDABLE for draft_id in draft_ids}
    with transaction.atomic():
        drafts = list(
            Draft.objects.select_for_update(of=("self",))
            .select_related("lead", "message", "workspace")
            .only(*CLAIM_FIELDS)
            .filter(pk__in=draft_ids, workspace_id=workspace_id)
            .order_by("id")
        )
        # A statement of its own, after the lock: one that waited for the lock sees the rows the
        # holder wrote (a subquery of the locking SELECT would read the snapshot from before).
        earlier_sends = _earlier_sends(drafts, workspace_id=workspace_id)
        open_drafts = []
        for draft in drafts:
            earlier = earlier_sends.get(draft.pk)
            if earlier is not None:
                # Whatever the draft's status now (an opt-out may have skipped it mid-send).
                found[draft.pk] = _earlier_send_settle(draft, earlier, now=now)
            elif draft.status in SENDABLE_STATUSES:
                open_drafts.append(draft)
        stale = messages_with_newer_inbound([draft.message for draft in open_drafts])
        routed = []
        for draft in open_drafts:
            checked = _send_check(draft, stale=draft.message_id in stale, now=now)
            if checked in Route.ALL:
                routed.append((draft, checked))
            else:
                found[draft.pk] = checked
        if not routed:
            return found
        thread_senders = messages_emailbison_sender_ids(
            [draft.message for draft, route in routed if route == Route.EMAILBISON_REPLY]
        )
        # One INSERT for all; the partial unique constraint keeps one such row per draft.
        outbound = Message.objects.bulk_create(
            [
                Message(
                    workspace_id=workspace_id,
                    lead_id=draft.lead_id,
                    channel=draft.channel,
                    direction=Direction.OUTBOUND,
                    body=draft.content,
                    subject=draft.subject,
                    sent_at=now,
                    origin=Origin.SENT,
                    delivery=Delivery.SENDING,
                    draft_source_id=draft.pk,
                )
                for draft, _ in routed
            ]
        )
        for (draft, route), row in zip(routed, outbound, strict=True):
            lead, answered = draft.lead, draft.message
            found[draft.pk] = SendClaim(
                draft_id=draft.pk,
                workspace_id=workspace_id,
                outbound_id=row.pk,
                route=route,
                lead_id=lead.pk,
                content=draft.content,
                subject=draft.subject,
                ghl_contact_id=lead.ghl_contact_id,
                ghl_reply_message_id=answered.ghl_message_id,
                emailbison_reply_id=answered.emailbison_reply_id,
                thread_sender_id=thread_senders.get(answered.pk, ""),
                to_email=lead.email,
                to_name=f"{lead.first_name} {lead.last_name}".strip(),
                workspace=draft.workspace,
            )
    return found


def _send_check(draft: Draft, *, stale: bool, now: dt.datetime) -> str:
    """The draft's route when it may leave now; else the ``Outcome``, with the draft updated."""
    if stale:
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
            workspace=draft.workspace_id,
            source=IntegrationError.Source.DRAFTS,
            code=f"{SEND_ERROR_PREFIX}{problem}"[:64],
            message=f"draft #{draft.pk} cannot be sent: {problem}",
            context={"draft_id": draft.pk},
        )
        return Outcome.FAILED
    return route


def _earlier_sends(drafts: list[Draft], *, workspace_id: int) -> dict[int, Message]:
    """Each draft's claimed send, if any (the first by id)."""
    if not drafts:
        return {}
    rows = (
        Message.objects.filter(
            workspace_id=workspace_id,
            draft_source_id__in=[draft.pk for draft in drafts],
            delivery__in=SEND_CLAIMED_DELIVERIES,
        )
        .only("id", "workspace_id", "draft_source_id", "delivery", "created_at", "sent_at")
        .order_by("-id")
    )
    return {row.draft_source_id: row for row in rows}


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


class _ProviderCalls:
    """The provider calls of one batch (one workspace): a client per provider shared by the
    threads making the calls, and the EmailBison senders the replies go out through.

    ``run`` is the only place threads appear. The calls themselves are HTTP only; everything
    that touches the database (picking a sender, healing a dead one, the finish) runs in the
    caller's thread between waits, so the threads need no connection of their own.
    """

    def __init__(self, workspace: Workspace, *, routes: set[str], batch: int) -> None:
        self.workspace = workspace
        self.threads = max(1, min(batch, settings.DRAFT_SEND_BATCH_SIZE))
        self.ghl = None
        if routes & {Route.GHL_SMS, Route.GHL_EMAIL}:
            self.ghl = GhlClient(
                token=workspace.ghl_token, location_id=workspace.ghl_location_id, max_connections=self.threads
            )
        self.emailbison = None
        self.senders = None
        if Route.EMAILBISON_REPLY in routes:  # _route checked the base URL and the token
            self.emailbison = emailbison_client_for(workspace, max_connections=self.threads)
            self.senders = ReplySenders(workspace=workspace, client=self.emailbison)
        self._sender_of: dict[int, str] = {}  # draft id -> the EmailBison sender of its reply
        self._healed_from: dict[int, str] = {}  # draft id -> the sender that refused it first
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[Future, SendClaim] = {}  # calls in flight
        self._ended: list[tuple[SendClaim, object]] = []  # calls ended, not yet handed to the caller

    def close(self) -> None:
        for client in (self.ghl, self.emailbison):
            if client is not None:
                client.close()

    def run(self, claims: list[SendClaim], *, deadline: Deadline) -> Iterator[list[tuple[SendClaim, object]]]:
        """Make every claim's call at once; yield the calls that ended, a group at a time
        (each ``(claim, Receipt or the exception)``), as they end."""
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="draft-send")
        try:
            for claim in claims:
                self._start(claim, deadline=deadline)
            while self._pending or self._ended:
                if not self._ended:
                    wait(self._pending, return_when=FIRST_COMPLETED)
                refused = [claim for claim in self._collect() if claim.draft_id not in self._healed_from]
                if refused:
                    self._heal(refused, deadline=deadline)
                if self._ended:
                    group, self._ended = self._ended, []
                    yield group
        finally:
            # Never wait here for calls still in flight (out of time: the caller settles them as
            # unconfirmed now); a normal end has none left.
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, claim: SendClaim, *, deadline: Deadline, exclude: frozenset[str] = frozenset()) -> None:
        try:
            call = self._call_for(claim, exclude=exclude, deadline=deadline)
        except SendRefused as exc:
            self._ended.append((claim, exc))
            return
        self._pending[self._pool.submit(call)] = claim

    def _collect(self) -> list[SendClaim]:
        """Move the calls that are done to ``_ended``; returns the replies refused by their sender
        for the first time (to heal), which stay out of it."""
        refused = []
        for future in [future for future in self._pending if future.done()]:
            claim = self._pending.pop(future)
            result = future.exception() or future.result()
            if isinstance(result, SenderInvalid):
                self.senders.failed(sender_id=self._sender_of[claim.draft_id], exc=result)
                if claim.draft_id not in self._healed_from:
                    refused.append(claim)  # healed once: a second refusal ends it
                    continue
            elif isinstance(result, Receipt) and claim.route == Route.EMAILBISON_REPLY:
                healed_from = self._healed_from.get(claim.draft_id, "")
                self.senders.sent(sender_id=self._sender_of[claim.draft_id], healed_from=healed_from)
            self._ended.append((claim, result))
        return refused

    def _heal(self, refused: list[SendClaim], *, deadline: Deadline) -> None:
        """Read the sender list once for these refusals, then send each through another sender."""
        try:
            self.senders.heal(deadline=deadline)
        except NoSendableSender as exc:
            self._ended += [(claim, SendRefused(exc.code, str(exc))) for claim in refused]
            return
        for claim in refused:
            dead = self._sender_of[claim.draft_id]
            self._healed_from[claim.draft_id] = dead
            self._start(claim, deadline=deadline, exclude=frozenset({dead}))

    def settle(self) -> None:
        if self.senders is not None:
            self.senders.settle()

    def _call_for(self, claim: SendClaim, *, exclude: frozenset[str], deadline: Deadline) -> Callable[[], Receipt]:
        """What one call needs from the database, read now; returns the call (HTTP only)."""
        if claim.route != Route.EMAILBISON_REPLY:
            return functools.partial(self._ghl_send, claim, deadline=deadline)
        preferred = "" if exclude else claim.thread_sender_id
        try:
            sender_id = self.senders.pick(preferred=preferred, exclude=exclude, deadline=deadline)
        except NoSendableSender as exc:
            raise SendRefused(exc.code, str(exc)) from exc
        self._sender_of[claim.draft_id] = sender_id
        return functools.partial(self._emailbison_send, claim, sender_id=sender_id, deadline=deadline)

    def _emailbison_send(self, claim: SendClaim, *, sender_id: str, deadline: Deadline) -> Receipt:
        sent = self.emailbison.reply_send(
            reply_id=claim.emailbison_reply_id,
            sender_email_id=sender_id,
            to_email=claim.to_email,
            to_name=claim.to_name,
            message=claim.content,
            deadline=deadline,
        )
        return Receipt(emailbison_reply_id=sent.reply_id)

    def _ghl_send(self, claim: SendClaim, *, deadline: Deadline) -> Receipt:
        try:
            answer = self.ghl.message_send(
                contact_id=claim.ghl_contact_id,
                message_type="SMS" if claim.route == Route.GHL_SMS else "Email",
                message=claim.content,
                subject=claim.subject if claim.route == Route.GHL_EMAIL else "",
                reply_message_id=claim.ghl_reply_message_id if claim.route == Route.GHL_EMAIL else "",
                deadline=deadline,
            )
        except ProviderHTTPError as exc:
            if claim.route == Route.GHL_SMS and _DND.search(exc.message or ""):
                raise SendRefused(DND_REASON, "GHL refused: Do Not Disturb is active for SMS") from exc
            raise
        return Receipt(ghl_message_id=str(answer.get("messageId") or "")[:64])


# --- Finishing -----------------------------------------------------------------------------


def _finish_all(ended: list[tuple[SendClaim, object]]) -> dict[int, str]:
    """Record the calls that ended together, in one transaction; returns their outcomes."""
    outcomes: dict[int, str] = {}
    sent: list[tuple[SendClaim, Receipt]] = []
    with transaction.atomic():
        for claim, result in ended:
            outcome, delivery, reason = _outcome(claim, result)
            outcomes[claim.draft_id] = outcome
            if outcome == Outcome.SENT:
                sent.append((claim, result))
            elif outcome == Outcome.RATE_LIMITED:
                _finish_rate_limited(claim, detail=str(result))
            else:
                if reason == DND_REASON:
                    lead_sms_dnd_set(lead_id=claim.lead_id, workspace_id=claim.workspace_id, dnd=True)
                detail = result.detail if isinstance(result, SendRefused) else str(result)
                _finish_failed(claim, delivery=delivery, reason=reason, detail=detail)
        if sent:
            _finish_sent(sent)
    return outcomes


def _finish_sent(sent: list[tuple[SendClaim, Receipt]]) -> None:
    """The rows ``sent``, their drafts ``sent`` and linked, the leads' times moved, the send
    errors these successes disprove resolved: a few statements whatever the number."""
    now = timezone.now()
    workspace_id = sent[0][0].workspace_id
    _outbound_mark_sent(sent, at=now)
    # Unconditional: it went out, whatever happened to the draft meanwhile (an opt-out
    # that arrived during the call cannot unsend it).
    Draft.objects.filter(pk__in=[claim.draft_id for claim, _ in sent], workspace_id=workspace_id).update(
        status=DraftStatus.SENT,
        sent_message_id=_by_pk([(claim.draft_id, claim.outbound_id) for claim, _ in sent]),
        sent_at=now,
        send_after=None,
        failure_reason="",
        error="",
        updated_at=now,
    )
    lead_rollups_touch(
        lead_ids=[claim.lead_id for claim, _ in sent], workspace_id=workspace_id, direction=Direction.OUTBOUND, at=now
    )
    # An unconfirmed send is about one draft a person must check: no success disproves it.
    integration_error_resolve(
        workspace=workspace_id,
        source=(IntegrationError.Source.DRAFTS, *sorted({_route_source(claim.route) for claim, _ in sent})),
        code_prefix=SEND_ERROR_PREFIX,
        keep_codes=[UNCONFIRMED_CODE],
    )


def _by_pk(values: list[tuple[int, object]], *, default: object = None) -> Case:
    """``CASE WHEN id = <pk> THEN <value> ... ELSE <default> END``: a value of its own for each
    row of one UPDATE."""
    return Case(*(When(pk=pk, then=Value(value)) for pk, value in values), default=default)


def _outbound_mark_sent(sent: list[tuple[SendClaim, Receipt]], *, at: dt.datetime) -> None:
    """The provider's ids go on our rows. GHL may have told us about our own message first
    (an ``OutboundMessage`` webhook stored it as a separate row): that copy gives way."""
    values: dict[str, object] = {"delivery": Delivery.SENT, "sent_at": at}
    by_field: dict[str, list[tuple[int, object]]] = {}
    for claim, receipt in sent:
        for name, value in receipt.provider_ids().items():
            by_field.setdefault(name, []).append((claim.outbound_id, value))
    for name, ids in by_field.items():
        values[name] = _by_pk(ids, default=F(name))
    workspace_id = sent[0][0].workspace_id
    try:
        with transaction.atomic():
            Message.objects.filter(pk__in=[claim.outbound_id for claim, _ in sent], workspace_id=workspace_id).update(
                **values
            )
            return
    except IntegrityError:
        pass
    for claim, receipt in sent:  # one of them collided: row by row, the copies giving way
        own = receipt.provider_ids()
        rows = Message.objects.filter(pk=claim.outbound_id, workspace_id=workspace_id)
        try:
            with transaction.atomic():
                rows.update(delivery=Delivery.SENT, sent_at=at, **own)
        except IntegrityError:
            Message.objects.filter(
                workspace_id=workspace_id, direction=Direction.OUTBOUND, draft_source__isnull=True, **own
            ).delete()
            rows.update(delivery=Delivery.SENT, sent_at=at, **own)


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
        draft_ids = list(due.order_by("send_after", "id").values_list("id", flat=True)[:limit])
        if not draft_ids:
            continue
        handed = drafts_send_enqueue(draft_ids=draft_ids, workspace_id=workspace_id)
        enqueued += handed
        if handed < len(draft_ids):
            return enqueued
    return enqueued
