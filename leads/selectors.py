"""Reads of the leads app."""

from __future__ import annotations

from core.sql import RowsExist
from leads.models import Lead, LeadStatus, Sentiment
from workspaces.models import Workspace
from workspaces.selectors import count_by


def lead_opted_out(*, lead_id: int, workspace_id: int) -> RowsExist:
    """ "The lead opted out" (``Lead.is_blacklisted``'s rule) as a typed condition, for the
    statements of other apps that must not act for an opted-out lead (a draft's final write)."""
    return RowsExist(
        model=Lead,
        equal=(("id", lead_id), ("workspace_id", workspace_id)),
        any_equal=(("status", LeadStatus.BLACKLISTED), ("sentiment", Sentiment.BLACKLIST)),
    )


def lead_count(*, workspace: Workspace) -> int:
    """``workspace_report``'s ``leads``."""
    return Lead.objects.filter(workspace=workspace).count()


def lead_counts_by_sentiment(*, workspace: Workspace) -> dict[str, int]:
    """``workspace_report``'s ``leads_by_sentiment``."""
    return count_by(Lead.objects.filter(workspace=workspace), "sentiment")
