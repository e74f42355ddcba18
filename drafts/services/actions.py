"""Operator actions on a draft: reject, edit, regenerate (approve and send: ``drafts.sending``)."""

from __future__ import annotations

import functools
from typing import Any

from django.db import transaction
from django.utils import timezone

from drafts.models import Draft, DraftStatus
from drafts.services.lifecycle import draft_insert
from leads.models import DRAFTABLE_SENTIMENTS, LeadStatus, Sentiment
from messaging.models import SEND_CLAIMED_DELIVERIES, Channel, Message
from messaging.services import message_work_enqueue

REJECTABLE_STATUSES = (
    DraftStatus.READY,
    DraftStatus.APPROVED,
    DraftStatus.SCHEDULED,
    DraftStatus.FAILED,
    DraftStatus.SKIPPED,
)

# Editing an approved or scheduled draft takes the approval back: what is sent was approved.
EDITABLE_STATUSES = (DraftStatus.READY, DraftStatus.APPROVED, DraftStatus.SCHEDULED)

REGENERATABLE_STATUSES = (
    DraftStatus.READY,
    DraftStatus.APPROVED,
    DraftStatus.SCHEDULED,
    DraftStatus.FAILED,
    DraftStatus.SKIPPED,
    DraftStatus.REJECTED,
)


def _draft_transition(
    *, draft: Draft, allowed: tuple[str, ...], action: str, lead_open: bool = False, **values: Any
) -> Draft:
    """One conditional UPDATE: applies only while the draft is still in ``allowed`` (a worker or
    another operator may have moved it since the page was shown) and, with ``lead_open``, while
    its lead is not blacklisted; raises ValueError otherwise."""
    values.setdefault("updated_at", timezone.now())
    with transaction.atomic():
        # The send's claim holds this row's lock while it writes the outbound row: once we
        # have the lock, a send that started is visible, and a draft on its way out is final.
        Draft.objects.select_for_update().filter(pk=draft.pk, workspace_id=draft.workspace_id).first()
        if Message.objects.filter(
            workspace_id=draft.workspace_id, draft_source_id=draft.pk, delivery__in=SEND_CLAIMED_DELIVERIES
        ).exists():
            raise ValueError(f"draft #{draft.pk} is being sent or was sent: cannot {action} it")
        drafts = Draft.objects.filter(pk=draft.pk, workspace_id=draft.workspace_id, status__in=allowed)
        if lead_open:
            drafts = drafts.exclude(lead__status=LeadStatus.BLACKLISTED).exclude(lead__sentiment=Sentiment.BLACKLIST)
        done = drafts.update(**values)
    draft.refresh_from_db()
    if not done:
        if lead_open and draft.status in allowed:
            raise ValueError(f"draft #{draft.pk}: the lead is blacklisted, cannot {action} it")
        raise ValueError(f"draft #{draft.pk} is {draft.status}: cannot {action} it")
    return draft


def draft_reject(*, draft: Draft) -> Draft:
    return _draft_transition(draft=draft, allowed=REJECTABLE_STATUSES, action="reject", status=DraftStatus.REJECTED)


def draft_edit(*, draft: Draft, content: str, subject: str) -> Draft:
    """An operator's edit of the reply. Editing an approved draft takes the approval back
    (``ready`` again): what is sent is always exactly what was approved."""
    if not content.strip():
        raise ValueError("content: a draft cannot be empty")
    if draft.channel == Channel.SMS and subject:
        raise ValueError("subject: SMS drafts have no subject")
    return _draft_transition(
        draft=draft,
        allowed=EDITABLE_STATUSES,
        action="edit",
        lead_open=True,
        content=content,
        subject=subject,
        status=DraftStatus.READY,
        approved_by=None,
        approved_at=None,
        send_after=None,
    )


@transaction.atomic
def draft_regenerate(*, draft: Draft) -> Draft:
    """Supersede a finished draft with a new ``pending`` one for the same message; returns it.

    Both rows change in one transaction; the work is handed to the broker after commit by
    ``message_work_enqueue``, which never raises: with the broker down the new draft stays
    ``pending`` and the sweeper enqueues it later (``draft_sweep_stale``).
    """
    message = Message.objects.select_related("lead").get(pk=draft.message_id, workspace_id=draft.workspace_id)
    if message.lead.is_blacklisted:
        raise ValueError(f"draft #{draft.pk}: the lead is blacklisted, no new drafts")
    if message.sentiment not in DRAFTABLE_SENTIMENTS:
        raise ValueError(f"draft #{draft.pk}: a {message.sentiment or 'unclassified'} message gets no draft")
    _draft_transition(
        draft=draft,
        allowed=REGENERATABLE_STATUSES,
        action="regenerate",
        status=DraftStatus.SUPERSEDED,
        failure_reason="regenerated",
    )
    new_draft, _ = draft_insert(message=message, status=DraftStatus.PENDING)
    # A fresh job the operator asked for: the sweeper's retry count starts again.
    Message.objects.filter(pk=message.pk, workspace_id=message.workspace_id).update(
        work_enqueued_at=None, work_enqueue_count=0
    )
    transaction.on_commit(
        functools.partial(message_work_enqueue, message_id=message.pk, workspace_id=message.workspace_id, force=True)
    )
    return new_draft
