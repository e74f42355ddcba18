"""The sweeper (celery beat, every minute): inbound messages whose work was lost and open
drafts whose task was lost are handed back to the workers, or failed for good.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from drafts.models import Draft
from drafts.selectors import drafts_stale_open, messages_awaiting_work
from drafts.services.lifecycle import DRAFT_ERROR_PREFIX, drafts_fail_open
from messaging.selectors import SWEEP_MAX_ENQUEUES
from messaging.services import message_work_enqueue
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record

logger = logging.getLogger(__name__)

# An open draft whose work was enqueued the maximum number of times is failed only after this long
# without a change: a task that waits in a long queue still gets its turn.
DRAFT_ABANDON_AFTER = timedelta(hours=1)


def message_sweep_unprocessed(*, now: datetime | None = None, grace_s: float = 15.0, limit: int = 500) -> int:
    """Enqueue the work of inbound messages whose enqueue was lost (broker down, crash), and of
    open drafts whose task was lost (``draft_sweep_stale``).

    Stops at the first broker failure (the next run retries). Returns how
    many messages were enqueued.
    """
    now = now or timezone.now()
    enqueued = 0
    for workspace_id in Workspace.objects.filter(is_active=True).order_by("id").values_list("id", flat=True):
        broker_ok = True
        for message_id in messages_awaiting_work(workspace_id=workspace_id, now=now, grace_s=grace_s, limit=limit):
            broker_ok = message_work_enqueue(message_id=message_id, workspace_id=workspace_id, force=True)
            if not broker_ok:
                break
            enqueued += 1
        if broker_ok:
            # Open drafts whose task was lost (a regenerate's enqueue, a killed worker).
            drafts_enqueued, drafts_failed, broker_ok = draft_sweep_stale(
                workspace_id=workspace_id, now=now, limit=limit
            )
            enqueued += drafts_enqueued
            if drafts_failed:
                logger.warning("sweeper: %d abandoned drafts failed in workspace %s", drafts_failed, workspace_id)
        if not broker_ok:
            logger.warning("sweeper: broker unavailable after %d enqueues; next run retries", enqueued)
            return enqueued
    if enqueued:
        logger.info("sweeper: enqueued classify_and_draft for %d messages", enqueued)
    return enqueued


def draft_sweep_stale(*, workspace_id: int, now: datetime | None = None, limit: int = 500) -> tuple[int, int, bool]:
    """Hand open drafts whose task was lost back to the workers, or fail them for good.

    A draft is stale when it is ``pending`` longer than ``DRAFT_SWEEP_AFTER_S`` (its enqueue
    was lost: broker down during a regenerate) or ``generating`` longer than the task's hard
    time limit plus a margin (its worker was killed and the task not re-delivered). Its
    message is enqueued again (``force``: the per-message work claim makes a duplicate
    harmless), at most ``SWEEP_MAX_ENQUEUES`` times per message; after that, once the draft
    has not changed for ``DRAFT_ABANDON_AFTER`` (its last task is not merely waiting in a busy
    queue), it ends ``failed`` with reason ``abandoned`` and an IntegrationError. Returns
    (enqueued, failed, whether the broker took every enqueue).
    """
    now = now or timezone.now()
    enqueued = failed = 0
    stale = drafts_stale_open(workspace_id=workspace_id, now=now, limit=limit)
    for draft_id, message_id, enqueues, changed_at in stale:
        if enqueues >= SWEEP_MAX_ENQUEUES:
            if changed_at <= now - DRAFT_ABANDON_AFTER:
                failed += draft_abandon(draft_id=draft_id, workspace_id=workspace_id)
            continue
        if not message_work_enqueue(message_id=message_id, workspace_id=workspace_id, force=True):
            return enqueued, failed, False  # broker down: the next run retries
        enqueued += 1
    return enqueued, failed, True


def draft_abandon(*, draft_id: int, workspace_id: int) -> int:
    """Fail an open draft whose work was handed out ``SWEEP_MAX_ENQUEUES`` times without an end."""
    error = "the draft's task was lost or killed repeatedly; regenerate it to try again"
    drafts = Draft.objects.filter(pk=draft_id, workspace_id=workspace_id)
    done = drafts_fail_open(drafts, failure_reason="abandoned", error=error)
    if done:
        integration_error_record(
            workspace=workspace_id,
            source=IntegrationError.Source.OPENAI,
            code=f"{DRAFT_ERROR_PREFIX}abandoned",
            message=f"draft generation abandoned: {error}",
            context={"draft_id": draft_id},
        )
    return done
