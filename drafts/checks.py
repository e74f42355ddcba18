"""System checks: draft time budgets that cannot work are reported at startup."""

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
    return errors
