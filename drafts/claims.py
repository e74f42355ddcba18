"""One worker at a time on an inbound message's classify-and-draft work, without holding a
database connection.

A claim is a row of ``MessageWorkClaim`` (message id, a random token, an expiry): taken by one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` (a live claim of another run makes it
return nothing), given back by a ``DELETE`` on the token. Both are single autocommit
statements, so the connection returns to the pool between them while the LLM answers; a
session advisory lock would pin one connection per message in flight.

When a worker dies its claim is not dropped with its connection: it expires after
``claim_ttl_s()`` (the task's hard limit plus the longest rate-limit wait plus a margin), after
which a redelivered or swept task takes the work over. A run never outlives its claim in
practice: its LLM calls end by its deadline, which moves only by its rate-limit waits.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.sql import table
from drafts.models import MessageWorkClaim

CLAIM_MARGIN_S = 30


def claim_ttl_s() -> float:
    """How long a claim lasts: the task's hard limit, the longest wait for a rate-limit slot, a margin."""
    return settings.DRAFT_TASK_TIME_LIMIT_S + settings.OPENAI_QUEUE_MAX_WAIT_S + CLAIM_MARGIN_S


def message_work_claim_take(message_id: int, *, token: str) -> bool:
    """Claim the message's work for ``token``; False when another live claim holds it."""
    now = timezone.now()
    expires_at = now + timedelta(seconds=claim_ttl_s())
    claims = table(MessageWorkClaim)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {claims} (message_id, token, expires_at) VALUES (%s, %s, %s)"  # noqa: S608 (identifiers from _meta)
            f" ON CONFLICT (message_id) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at"
            f" WHERE {claims}.expires_at < %s RETURNING message_id",
            [message_id, token, *map(connection.ops.adapt_datetimefield_value, (expires_at, now))],
        )
        return cursor.fetchone() is not None


def message_work_claim_release(message_id: int, *, token: str) -> None:
    """Give the claim back (only our own: an expired claim may have been taken over)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table(MessageWorkClaim)} WHERE message_id = %s AND token = %s",  # noqa: S608
            [message_id, token],
        )


@contextlib.contextmanager
def message_work_claim(message_id: int) -> Iterator[bool]:
    """Hold the message's claim for the block; yields whether it was taken (False: another
    worker is on it). A release that fails leaves the claim to expire."""
    token = uuid.uuid4().hex
    acquired = message_work_claim_take(message_id, token=token)
    try:
        yield acquired
    finally:
        if acquired:
            message_work_claim_release(message_id, token=token)
