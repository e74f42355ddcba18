"""EmailBison senders: snapshots per workspace, picking a sender, and replies that heal a dead sender.

A reply goes out through a sender email of the workspace. Senders die under us: deleted,
disconnected, their mailbox paused. ``email_reply_send`` tries the thread's own sender first
(the address the lead already talks to); when EmailBison refuses because of the sender, it
marks that sender unsendable, refreshes the workspace's snapshot, picks another sendable
sender (the default first, then the one least used today), retries exactly once, and records
``emailbison/sender_invalid`` for operators. Nothing is retried when the refusal is not about
the sender: a write is never repeated blindly.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import NoReturn

from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from core.http import Deadline, ProviderError
from emailbison.client import EmailBisonClient, ReplySent, Sender, SenderInvalid
from emailbison.models import SenderEmail
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

SOURCE = IntegrationError.Source.EMAILBISON
SENDER_INVALID = "sender_invalid"
NO_SENDABLE_SENDER = "no_sendable_sender"
NOT_CONFIGURED = "not_configured"


class EmailBisonNotConfigured(Exception):
    """The workspace has no EmailBison base URL or token."""

    code = NOT_CONFIGURED


class NoSendableSender(Exception):
    """No sender of the workspace can send (after healing)."""

    code = NO_SENDABLE_SENDER


@dataclass(frozen=True)
class SenderRefresh:
    listed: int
    sendable: int
    dropped: int  # known senders EmailBison no longer lists, now unsendable


@dataclass(frozen=True)
class EmailReplySent:
    sender_id: str
    provider_reply_id: str
    healed_from: str  # the sender that failed before this one succeeded ("" when none did)


def emailbison_client_for(workspace: Workspace, *, read_timeout_s: float = 15.0) -> EmailBisonClient:
    if not workspace.emailbison_base_url or not workspace.emailbison_token:
        raise EmailBisonNotConfigured(f"workspace {workspace.slug} has no EmailBison base URL or token")
    return EmailBisonClient(
        base_url=workspace.emailbison_base_url, token=workspace.emailbison_token, read_timeout_s=read_timeout_s
    )


# --- Snapshots ---------------------------------------------------------------------------


_SNAPSHOT_FIELDS = ["email", "name", "status", "is_sendable", "listed", "last_checked_at", "last_error", "updated_at"]

# One snapshot refresh at a time per workspace in a process: the threads of a worker that all
# find no sender (a workspace's first sends) wait for one refresh instead of each running one.
_refreshing: dict[int, threading.Lock] = collections.defaultdict(threading.Lock)
REFRESH_WAIT_MAX_S = 30.0


@transaction.atomic
def sender_snapshot_store(*, workspace_id: int, senders: list[Sender]) -> SenderRefresh:
    """Upsert the listed senders; the ones EmailBison no longer lists become unsendable."""
    now = timezone.now()
    listed = {sender.sender_id: sender for sender in senders}  # the last of a repeated id wins
    listed_ids = list(listed)
    # One statement whatever the number of senders (INSERT ... ON CONFLICT DO UPDATE).
    SenderEmail.objects.bulk_create(
        [
            SenderEmail(
                workspace_id=workspace_id,
                sender_id=sender.sender_id,
                email=sender.email,
                name=sender.name,
                status=sender.status,
                is_sendable=sender.is_sendable,
                listed=True,
                last_checked_at=now,
                last_error="" if sender.is_sendable else f"status {sender.status or 'unknown'}",
                updated_at=now,
            )
            for sender in listed.values()
        ],
        update_conflicts=True,
        unique_fields=["workspace", "sender_id"],
        update_fields=_SNAPSHOT_FIELDS,
    )
    dropped = (
        SenderEmail.objects.filter(workspace_id=workspace_id)
        .exclude(sender_id__in=listed_ids)
        .exclude(listed=False, is_sendable=False)
        .update(is_sendable=False, listed=False, last_checked_at=now, last_error="no longer listed by EmailBison")
    )
    sendable = SenderEmail.objects.filter(workspace_id=workspace_id, is_sendable=True).count()
    return SenderRefresh(listed=len(listed_ids), sendable=sendable, dropped=dropped)


def sender_snapshot_refresh(
    *, workspace: Workspace, client: EmailBisonClient | None = None, deadline: Deadline | float | None = None
) -> SenderRefresh:
    """Fetch the workspace's senders from EmailBison and store the snapshot."""
    own = client is None
    client = client or emailbison_client_for(workspace)
    try:
        senders = client.sender_emails_list(deadline=deadline)
    finally:
        if own:
            client.close()
    return sender_snapshot_store(workspace_id=workspace.pk, senders=senders)


def sender_mark_unsendable(*, workspace_id: int, sender_id: str, reason: str) -> None:
    SenderEmail.objects.filter(workspace_id=workspace_id, sender_id=sender_id).update(
        is_sendable=False, last_error=reason[:300], last_checked_at=timezone.now()
    )


def sender_default_set(*, workspace_id: int, sender_id: str) -> None:
    """Make ``sender_id`` the workspace's default sender (the only one)."""
    with transaction.atomic():
        SenderEmail.objects.filter(workspace_id=workspace_id, is_default=True).exclude(sender_id=sender_id).update(
            is_default=False
        )
        SenderEmail.objects.filter(workspace_id=workspace_id, sender_id=sender_id).update(is_default=True)


def _sends_today_bump(*, workspace: Workspace, sender_id: str) -> None:
    today = timezone.localdate(timezone=workspace.tzinfo)
    SenderEmail.objects.filter(workspace_id=workspace.pk, sender_id=sender_id).update(
        sends_today=Case(When(sends_day=today, then=F("sends_today") + 1), default=Value(1)),
        sends_day=today,
    )


# --- Picking -------------------------------------------------------------------------------


def sender_pick(*, workspace: Workspace, preferred_sender_id: str = "", exclude: frozenset[str] = frozenset()) -> str:
    """The sender to send through: the thread's own when it can send, else the default, else
    the sendable sender least used today (ties: the oldest). "" when none can send."""
    today = timezone.localdate(timezone=workspace.tzinfo)
    preferred = When(sender_id=preferred_sender_id, then=Value(0)) if preferred_sender_id else None
    picked = (
        SenderEmail.objects.filter(workspace_id=workspace.pk, is_sendable=True)
        .exclude(sender_id__in=exclude)
        .annotate(
            # One statement: the order says the rule (thread's own, default, least used today, oldest).
            not_preferred=Case(preferred, default=Value(1)) if preferred else Value(1),
            used=Case(When(sends_day=today, then=F("sends_today")), default=Value(0)),
        )
        .order_by("not_preferred", "-is_default", "used", "id")
        .values_list("sender_id", flat=True)
        .first()
    )
    return picked or ""


# --- Sending -------------------------------------------------------------------------------


def email_reply_send(
    *,
    workspace: Workspace,
    reply_id: str,
    to_email: str,
    to_name: str = "",
    message: str,
    preferred_sender_id: str = "",
    client: EmailBisonClient | None = None,
    deadline: Deadline | float | None = None,
) -> EmailReplySent:
    """Send ``message`` as a reply in the thread of EmailBison reply ``reply_id``.

    Heals a dead sender once (see the module's docstring). Raises :class:`NoSendableSender`
    when no sender can send (nothing was sent), :class:`SenderInvalid` when the healed retry was
    refused too, and any other ``core.http.ProviderError`` unchanged (nothing retried).
    """
    deadline = Deadline.coerce(deadline)
    own = client is None
    client = client or emailbison_client_for(workspace)

    def send_through(sender_id: str) -> ReplySent:
        try:
            return client.reply_send(
                reply_id=reply_id,
                sender_email_id=sender_id,
                to_email=to_email,
                to_name=to_name,
                message=message,
                deadline=deadline,
            )
        except SenderInvalid as exc:
            _sender_failed(workspace, sender_id=sender_id, exc=exc)
            raise

    try:
        sender_id = _sender_for(workspace, client=client, preferred=preferred_sender_id, deadline=deadline)
        healed_from = ""
        try:
            sent = send_through(sender_id)
        except SenderInvalid:
            # Refresh what EmailBison lists, then retry once through another sender.
            healed_from = sender_id
            try:
                sender_snapshot_refresh(workspace=workspace, client=client, deadline=deadline)
            except ProviderError as exc:
                # Nothing went out (the refusal was certain): say so, not "maybe sent".
                raise NoSendableSender(
                    f"the sender refused and the sender list could not be read: {exc.message}"
                ) from exc
            # Still listed as connected, yet it refused: unsendable until a refresh after this send.
            sender_mark_unsendable(workspace_id=workspace.pk, sender_id=healed_from, reason="refused a send")
            sender_id = sender_pick(workspace=workspace, exclude=frozenset({healed_from}))
            if not sender_id:
                _no_sender(workspace, tried=(healed_from,))
            sent = send_through(sender_id)
            if SenderEmail.objects.filter(workspace_id=workspace.pk, sender_id=healed_from, is_default=True).exists():
                sender_default_set(workspace_id=workspace.pk, sender_id=sender_id)
    finally:
        if own:
            client.close()
    _sends_today_bump(workspace=workspace, sender_id=sender_id)
    # A send that needed no healing: the sender problem recorded earlier is behind us too.
    resolved = [NO_SENDABLE_SENDER] if healed_from else [NO_SENDABLE_SENDER, SENDER_INVALID]
    integration_error_resolve(workspace=workspace, source=SOURCE, codes=resolved)
    return EmailReplySent(sender_id=sender_id, provider_reply_id=sent.reply_id, healed_from=healed_from)


def _sender_for(workspace: Workspace, *, client: EmailBisonClient, preferred: str, deadline: Deadline) -> str:
    """A sender to try first; the snapshot is refreshed when it has none that can send."""
    sender_id = sender_pick(workspace=workspace, preferred_sender_id=preferred)
    if not sender_id:
        lock = _refreshing[workspace.pk]
        # Bounded by the send's own deadline: past it, refresh regardless (as without the lock).
        locked = lock.acquire(timeout=min(deadline.remaining(), REFRESH_WAIT_MAX_S))
        try:
            # Another thread may have refreshed while this one waited for the lock.
            sender_id = sender_pick(workspace=workspace, preferred_sender_id=preferred)
            if not sender_id:
                sender_snapshot_refresh(workspace=workspace, client=client, deadline=deadline)
                sender_id = sender_pick(workspace=workspace, preferred_sender_id=preferred)
        finally:
            if locked:
                lock.release()
    if not sender_id:
        _no_sender(workspace, tried=())
    return sender_id


def _sender_failed(workspace: Workspace, *, sender_id: str, exc: SenderInvalid) -> None:
    logger.warning("emailbison sender %s refused a send (%s)", sender_id, exc.status)
    sender_mark_unsendable(workspace_id=workspace.pk, sender_id=sender_id, reason="refused a send")
    integration_error_record(
        workspace=workspace,
        source=SOURCE,
        code=SENDER_INVALID,
        message=f"sender #{sender_id} could not send ({exc.message}); reconnect it in EmailBison",
        context={"sender_id": sender_id, "status": exc.status},
    )


def _no_sender(workspace: Workspace, *, tried: tuple[str, ...]) -> NoReturn:
    integration_error_record(
        workspace=workspace,
        source=SOURCE,
        code=NO_SENDABLE_SENDER,
        message="no EmailBison sender of this workspace can send: connect one in EmailBison",
        context={"tried": list(tried)},
    )
    raise NoSendableSender(f"no sendable EmailBison sender in workspace {workspace.slug}")
