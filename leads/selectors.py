"""Reads of the leads app."""

from __future__ import annotations

from django.db.models import Q

from leads.models import Lead, LeadStatus, Sentiment
from workspaces.models import Workspace
from workspaces.selectors import count_by


def lead_is_blacklisted(*, lead_id: int, workspace_id: int) -> bool:
    """Whether the lead opted out (``Lead.is_blacklisted``'s rule, read from the database now)."""
    return (
        Lead.objects.filter(pk=lead_id, workspace_id=workspace_id)
        .filter(Q(status=LeadStatus.BLACKLISTED) | Q(sentiment=Sentiment.BLACKLIST))
        .exists()
    )


def lead_count(*, workspace: Workspace) -> int:
    """``workspace_report``'s ``leads``."""
    return Lead.objects.filter(workspace=workspace).count()


def lead_counts_by_sentiment(*, workspace: Workspace) -> dict[str, int]:
    """``workspace_report``'s ``leads_by_sentiment``."""
    return count_by(Lead.objects.filter(workspace=workspace), "sentiment")
