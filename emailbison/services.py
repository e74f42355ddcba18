"""EmailBison senders: snapshots per workspace, picking a sender, and replies that heal a dead sender.

A reply goes out through a sender email of the workspace. Senders die under us: deleted,
disconnected, their mailbox paused. ``email_reply_send`` tries the thread's own sender first
(the address the lead already talks to); when EmailBison refuses because of the sender, it
marks that sender unsendable, refreshes the workspace's snapshot, picks another sendable
sender (the default first, then the one least used today), retries exactly once, and records
``emailbison/sender_invalid`` for operators. Nothing is retried when the refusal is not about
the sender: a write is never repeated blindly. ``ReplySenders`` holds that logic for one reply
and for a batch of replies sent at once (``drafts.sending``): the senders read once, one read of
the sender list for all the replies a dead sender refused together.
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


def emailbison_client_for(
    workspace: Workspace, *, read_timeout_s: float = 15.0, max_connections: int = 10
) -> EmailBisonClient:
    if not workspace.emailbison_base_url or not workspace.emailbison_token:
        raise EmailBisonNotConfigured(f"workspace {workspace.slug} has no EmailBison base URL or token")
    return EmailBisonClient(
        base_url=workspace.emailbison_base_url,
        token=workspace.emailbison_token,
        read_timeout_s=read_timeout_s,
        max_connections=max_connections,
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


def _sends_today_add(*, workspace: Workspace, counts: dict[str, int]) -> None:
    """Count ``counts[sender_id]`` more sends today for each sender (one statement a sender)."""
    today = timezone.localdate(timezone=workspace.tzinfo)
    for sender_id, count in sorted(counts.items()):
        SenderEmail.objects.filter(workspace_id=workspace.pk, sender_id=sender_id).update(
            sends_today=Case(When(sends_day=today, then=F("sends_today") + count), default=Value(count)),
            sends_day=today,
        )


# --- Picking -------------------------------------------------------------------------------


@dataclass
class _Candidate:
    sender_id: str
    is_default: bool
    order: int  # the row's id: the oldest wins a tie
    used: int  # sends today, plus the picks of this batch


def _sendable_senders(workspace: Workspace) -> dict[str, _Candidate]:
    today = timezone.localdate(timezone=workspace.tzinfo)
    rows = SenderEmail.objects.filter(workspace_id=workspace.pk, is_sendable=True).values_list(
        "sender_id", "is_default", "id", "sends_today", "sends_day"
    )
    return {
        sender_id: _Candidate(sender_id, is_default, pk, sends if day == today else 0)
        for sender_id, is_default, pk, sends, day in rows
    }


def _choose(candidates: dict[str, _Candidate], *, preferred: str, exclude: frozenset[str]) -> str:
    """The rule: the thread's own sender when it can send, else the default, else the sender
    least used today (ties: the oldest). "" when none can send."""
    open_ = [c for sender_id, c in candidates.items() if sender_id not in exclude]
    if preferred and preferred not in exclude and preferred in candidates:
        return preferred
    if not open_:
        return ""
    return min(open_, key=lambda c: (not c.is_default, c.used, c.order)).sender_id


class ReplySenders:
    """The senders a batch of replies of one workspace goes out through.

    The workspace's sendable senders are read once; each reply gets one by ``_choose``'s rule,
    the picks of the batch counting as use (a batch spreads over the least used senders, not
    all onto one). When none can send, the snapshot is refreshed once (one thread of a process
    at a time per workspace). A sender EmailBison refuses is marked unsendable and recorded
    (``failed``); ``heal`` then reads the sender list again, once for all the refusals of a
    wave, before the refused replies pick another sender. ``settle`` writes the day's counts,
    repairs a dead default and resolves what the batch disproved. Used for one reply
    (``email_reply_send``) and for a batch (``drafts.sending``) alike; its methods touch the
    database and run in the caller's thread, never in the threads making the HTTP calls.
    """

    def __init__(self, *, workspace: Workspace, client: EmailBisonClient) -> None:
        self.workspace = workspace
        self.client = client
        self._candidates: dict[str, _Candidate] | None = None
        self._failed: set[str] = set()
        self._sent: collections.Counter[str] = collections.Counter()
        self._healed: dict[str, str] = {}  # failed sender -> a sender that sent in its place
        self._read_after: set[str] = set()  # the failed senders the last read of the list followed
        self._none_left = False  # "no sendable sender" recorded by this batch

    def pick(self, *, preferred: str = "", exclude: frozenset[str] = frozenset(), deadline: Deadline) -> str:
        """A sender for one reply; raises :class:`NoSendableSender` (recorded) when none can send."""
        exclude = exclude | self._failed
        if self._candidates is None:
            self._candidates = _sendable_senders(self.workspace)
        sender_id = _choose(self._candidates, preferred=preferred, exclude=exclude)
        if not sender_id and not exclude and not self._none_left:
            self._refresh_once_for_all(deadline)
            sender_id = _choose(self._candidates, preferred=preferred, exclude=exclude)
        if not sender_id:
            # Recorded once a batch: one error, not one a reply.
            record, self._none_left = not self._none_left, True
            _no_sender(self.workspace, tried=tuple(sorted(exclude)), record=record)
        self._candidates[sender_id].used += 1
        return sender_id

    def _refresh_once_for_all(self, deadline: Deadline) -> None:
        lock = _refreshing[self.workspace.pk]
        # Bounded by the send's own deadline: past it, refresh regardless (as without the lock).
        locked = lock.acquire(timeout=min(deadline.remaining(), REFRESH_WAIT_MAX_S))
        try:
            # Another thread may have refreshed while this one waited for the lock.
            self._candidates = _sendable_senders(self.workspace)
            if not self._candidates:
                sender_snapshot_refresh(workspace=self.workspace, client=self.client, deadline=deadline)
                self._candidates = _sendable_senders(self.workspace)
        finally:
            if locked:
                lock.release()

    def failed(self, *, sender_id: str, exc: SenderInvalid) -> None:
        """EmailBison refused ``sender_id`` itself: unsendable from now on, and recorded."""
        if sender_id not in self._failed:
            self._failed.add(sender_id)
            _sender_failed(self.workspace, sender_id=sender_id, exc=exc)

    def heal(self, *, deadline: Deadline) -> None:
        """Read what EmailBison lists now (after ``failed``), before the refused replies pick
        again: once for all the refusals of the senders that failed since the last read.
        Raises :class:`NoSendableSender` when the list cannot be read: nothing went out."""
        if self._failed <= self._read_after:
            return
        self._read_after = set(self._failed)
        try:
            sender_snapshot_refresh(workspace=self.workspace, client=self.client, deadline=deadline)
        except ProviderError as exc:
            raise NoSendableSender(f"the sender refused and the sender list could not be read: {exc.message}") from exc
        for sender_id in self._failed:
            # Still listed as connected, yet it refused: unsendable until a refresh after this batch.
            sender_mark_unsendable(workspace_id=self.workspace.pk, sender_id=sender_id, reason="refused a send")
        self._candidates = _sendable_senders(self.workspace)

    def sent(self, *, sender_id: str, healed_from: str = "") -> None:
        self._sent[sender_id] += 1
        if healed_from:
            self._healed.setdefault(healed_from, sender_id)

    def settle(self) -> None:
        """After the batch: the day's counts, a dead default replaced, errors resolved."""
        if not self._sent:
            return
        _sends_today_add(workspace=self.workspace, counts=dict(self._sent))
        dead_defaults = SenderEmail.objects.filter(
            workspace_id=self.workspace.pk, sender_id__in=list(self._healed), is_default=True
        ).values_list("sender_id", flat=True)
        for dead in dead_defaults:
            sender_default_set(workspace_id=self.workspace.pk, sender_id=self._healed[dead])
        # Sends that needed no healing put the sender problem recorded earlier behind us too.
        resolved = [NO_SENDABLE_SENDER] if self._failed else [NO_SENDABLE_SENDER, SENDER_INVALID]
        integration_error_resolve(workspace=self.workspace, source=SOURCE, codes=resolved)


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
    senders = ReplySenders(workspace=workspace, client=client)

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
            senders.failed(sender_id=sender_id, exc=exc)
            raise

    try:
        sender_id = senders.pick(preferred=preferred_sender_id, deadline=deadline)
        healed_from = ""
        try:
            sent = send_through(sender_id)
        except SenderInvalid:
            # Refresh what EmailBison lists, then retry once through another sender.
            healed_from = sender_id
            senders.heal(deadline=deadline)
            sender_id = senders.pick(deadline=deadline)
            sent = send_through(sender_id)
    finally:
        if own:
            client.close()
    senders.sent(sender_id=sender_id, healed_from=healed_from)
    senders.settle()
    return EmailReplySent(sender_id=sender_id, provider_reply_id=sent.reply_id, healed_from=healed_from)


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


def _no_sender(workspace: Workspace, *, tried: tuple[str, ...], record: bool = True) -> NoReturn:
    if record:
        integration_error_record(
            workspace=workspace,
            source=SOURCE,
            code=NO_SENDABLE_SENDER,
            message="no EmailBison sender of this workspace can send: connect one in EmailBison",
            context={"tried": list(tried)},
        )
    raise NoSendableSender(f"no sendable EmailBison sender in workspace {workspace.slug}")
