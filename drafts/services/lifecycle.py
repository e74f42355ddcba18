"""A draft row's life: insert (one live draft per message), the final writes of a run (ready,
failed, skipped, superseded), opt-outs, and reviving a draft a machine reply made stale.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Subquery
from django.utils import timezone

from core.sql import table, update_rows
from drafts.models import Draft, DraftStatus
from leads.models import MACHINE_REPLY_SENTIMENTS
from leads.selectors import lead_opted_out
from messaging.models import Direction, Message
from messaging.selectors import lead_state_after, newer_inbound

DRAFT_PROMPT_VERSION = "draft-v1"

OPEN_STATUSES = (DraftStatus.PENDING, DraftStatus.GENERATING)

# IntegrationError codes (source ``openai``): ``classify_<LLMError.code>`` and
# ``draft_<failure_reason>``; a success resolves every open code of its prefix.
CLASSIFY_ERROR_PREFIX = "classify_"

DRAFT_ERROR_PREFIX = "draft_"


def _live_draft(*, message: Message) -> Draft | None:
    return (
        Draft.objects.filter(workspace_id=message.workspace_id, message_id=message.pk)
        .exclude(status=DraftStatus.SUPERSEDED)
        .first()
    )


def draft_insert(*, message: Message, status: str) -> tuple[Draft, bool]:
    """(draft, inserted by this call). In autocommit mode (the task) the INSERT is its own
    transaction and a conflict needs no savepoint; inside a caller's transaction it gets one."""
    now = timezone.now()
    fields = {
        "workspace_id": message.workspace_id,
        "lead_id": message.lead_id,
        "message": message,
        "channel": message.channel,
        "status": status,
        "prompt_version": DRAFT_PROMPT_VERSION,
        "generation_started_at": now if status == DraftStatus.GENERATING else None,
    }
    try:
        if connection.in_atomic_block:
            with transaction.atomic():
                return Draft.objects.create(**fields), True
        return Draft.objects.create(**fields), True
    except IntegrityError:
        existing = _live_draft(message=message)
        if existing is None:
            raise
        return existing, False


def draft_finish_ready(*, draft: Draft, message: Message, **fields: Any) -> Draft:
    """The final write of a usable reply, with the last checks in the same statement: ``ready``
    unless a newer inbound arrived while drafting (then ``superseded``, content kept) or the
    lead opted out meanwhile (then ``skipped``, reason ``blacklisted``)."""
    now = timezone.now()
    values = {"status": DraftStatus.READY, "failure_reason": "", "error": "", "finished_at": now, "updated_at": now}
    values.update(fields)
    newer_sql, newer_params = newer_inbound(message).sql("nm")
    out_sql, out_params = lead_opted_out(lead_id=message.lead_id, workspace_id=message.workspace_id).sql("bl")
    updated = update_rows(
        Draft,
        values,
        f"id = %s AND workspace_id = %s AND status IN (%s, %s) AND NOT {newer_sql} AND NOT {out_sql}",
        [draft.pk, draft.workspace_id, *OPEN_STATUSES, *newer_params, *out_params],
    )
    if updated:
        for key, value in values.items():
            setattr(draft, key, value)
        return draft
    lead = lead_state_after(message)
    if lead.is_blacklisted:
        status, reason, error = DraftStatus.SKIPPED, "blacklisted", "the lead opted out while the reply was written"
    elif lead.newer_inbound:
        status, reason, error = DraftStatus.SUPERSEDED, "stale", "a newer inbound message arrived while drafting"
    else:
        draft.refresh_from_db()  # someone else finished it
        return draft
    return draft_finish(draft=draft, status=status, failure_reason=reason, error=error, **fields)


def drafts_skip_for_blacklisted_lead(*, lead_id: int, workspace_id: int) -> int:
    """A lead just opted out: its drafts awaiting review or sending are never sent (``skipped``,
    reason ``blacklisted``). Open drafts end the same way at their final write."""
    return Draft.objects.filter(
        workspace_id=workspace_id,
        lead_id=lead_id,
        status__in=(DraftStatus.READY, DraftStatus.APPROVED, DraftStatus.SCHEDULED),
    ).update(
        status=DraftStatus.SKIPPED,
        failure_reason="blacklisted",
        error="the lead opted out before the reply was sent",
        updated_at=timezone.now(),
    )


def draft_finish(*, draft: Draft, status: str, **fields: Any) -> Draft:
    """Move an open draft to its final status (no-op if someone else already finished it)."""
    now = timezone.now()
    values = {"status": status, "finished_at": now, "updated_at": now, **fields}
    if "failure_reason" in values:
        values["failure_reason"] = values["failure_reason"][:32]  # the column's length
    updated = Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id, status__in=OPEN_STATUSES).update(
        **values
    )
    if updated:
        for key, value in values.items():
            setattr(draft, key, value)
    else:
        draft.refresh_from_db()
    return draft


def draft_fail_open(*, message_id: int, failure_reason: str, error: str) -> int:
    """Fail the message's open draft (used when the task's soft limit or an unexpected error
    ends the run outside generation). Scoped to the message's own workspace."""
    workspace_id = Message.objects.filter(pk=message_id).values("workspace_id")
    drafts = Draft.objects.filter(workspace_id=Subquery(workspace_id[:1]), message_id=message_id)
    return drafts_fail_open(drafts, failure_reason=failure_reason, error=error)


def drafts_fail_open(drafts, *, failure_reason: str, error: str) -> int:
    """The drafts of ``drafts`` that are still open end ``failed`` (no content). One UPDATE."""
    now = timezone.now()
    return drafts.filter(status__in=OPEN_STATUSES).update(
        status=DraftStatus.FAILED,
        failure_reason=failure_reason[:32],
        error=error,
        content="",
        finished_at=now,
        updated_at=now,
    )


def drafts_revive_stale(*, message: Message) -> int:
    """``message`` (of the lead) turned out to be a machine reply: a draft it made stale while it
    was not classified yet is ``ready`` again. Only the latest superseded-as-stale draft with
    content, finished after ``message`` arrived (so one this reply may have made stale, never an
    old one), of a message with no newer inbound but machine replies, with no live draft, for a
    lead not blacklisted. One UPDATE, on the machine-reply path only; a live draft inserted
    concurrently for that message wins (nothing revived)."""
    d, msg = table(Draft), table(Message)
    machine = ", ".join(["%s"] * len(MACHINE_REPLY_SENTIMENTS))
    out_sql, out_params = lead_opted_out(lead_id=message.lead_id, workspace_id=message.workspace_id).sql("bl")
    where = (
        "workspace_id = %s AND lead_id = %s AND status = %s AND failure_reason = %s AND content <> ''"  # noqa: S608
        " AND finished_at >= %s"
        f" AND id = (SELECT MAX(d2.id) FROM {d} d2 WHERE d2.message_id = {d}.message_id AND d2.status = %s"
        "   AND d2.failure_reason = %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {d} live WHERE live.message_id = {d}.message_id AND live.status <> %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {msg} w JOIN {msg} n ON n.workspace_id = w.workspace_id"
        "   AND n.lead_id = w.lead_id AND n.direction = %s"
        "   AND (n.sent_at > w.sent_at OR (n.sent_at = w.sent_at AND n.id > w.id))"
        f"   WHERE w.id = {d}.message_id AND n.sentiment NOT IN ({machine}))"
        f" AND NOT {out_sql}"
    )
    stale = [DraftStatus.SUPERSEDED, "stale"]
    params = [
        message.workspace_id,
        message.lead_id,
        *stale,
        Draft._meta.get_field("finished_at").get_db_prep_value(message.created_at, connection),
        *stale,
        DraftStatus.SUPERSEDED,
        Direction.INBOUND,
        *MACHINE_REPLY_SENTIMENTS,
        *out_params,
    ]
    values = {"status": DraftStatus.READY, "failure_reason": "", "error": "", "updated_at": timezone.now()}
    try:
        with transaction.atomic(savepoint=connection.in_atomic_block):
            return update_rows(Draft, values, where, params)
    except IntegrityError:  # draft_one_live_per_message: a live draft was inserted meanwhile
        return 0
