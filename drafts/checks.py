"""System checks: draft and send time budgets that cannot work are reported at startup (web
commands and ``migrate`` run Django's checks; workers run these at start, config/celery_app.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_draft_time_limits(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """The soft limit must come before the hard one (the draft is failed with reason ``timeout``
    in between), and an OpenAI call must fit in the soft limit."""
    errors = []
    soft, hard = settings.DRAFT_TASK_SOFT_TIME_LIMIT_S, settings.DRAFT_TASK_TIME_LIMIT_S
    if not 0 < soft < hard:
        errors.append(
            Error(
                f"DRAFT_TASK_SOFT_TIME_LIMIT_S ({soft}) must be positive and below DRAFT_TASK_TIME_LIMIT_S ({hard}).",
                hint="Between the two the task marks its draft failed (reason timeout); give it a few seconds.",
                id="drafts.E001",
            )
        )
    for name in ("OPENAI_DRAFT_TIMEOUT_S", "OPENAI_CLASSIFY_TIMEOUT_S"):
        if getattr(settings, name) <= 0:
            errors.append(Error(f"{name} must be positive.", id="drafts.E002"))
    return errors + _send_limit_errors()


def _send_limit_errors() -> list[Error]:
    """The send task's limits: with the soft limit at or above the hard one Celery refuses every
    ``drafts_send.apply_async`` (each approved draft would wait for a sweep that fails the same
    way), and a provider call must fit in the soft limit."""
    errors = []
    soft, hard = settings.DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S, settings.DRAFT_SEND_TASK_TIME_LIMIT_S
    if not 0 < soft < hard:
        errors.append(
            Error(
                f"DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S ({soft}) must be positive and below "
                f"DRAFT_SEND_TASK_TIME_LIMIT_S ({hard}).",
                hint="Celery refuses to queue a task whose soft limit is not below its hard one: nothing is sent.",
                id="drafts.E003",
            )
        )
    timeout = settings.DRAFT_SEND_TIMEOUT_S
    if not 0 < timeout < soft:
        errors.append(
            Error(
                f"DRAFT_SEND_TIMEOUT_S ({timeout}) must be positive and below "
                f"DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S ({soft}).",
                hint="The provider calls of a batch share this deadline; the task's limits must leave room for it.",
                id="drafts.E004",
            )
        )
    if settings.DRAFT_SEND_BATCH_SIZE < 1:
        errors.append(Error("DRAFT_SEND_BATCH_SIZE must be at least 1.", id="drafts.E005"))
    return errors
