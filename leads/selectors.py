"""Reads of the leads app."""

from __future__ import annotations

from leads.models import Lead
from workspaces.models import Workspace
from workspaces.selectors import count_by


def lead_count(*, workspace: Workspace) -> int:
    """``workspace_report``'s ``leads``."""
    return Lead.objects.filter(workspace=workspace).count()


def lead_counts_by_sentiment(*, workspace: Workspace) -> dict[str, int]:
    """``workspace_report``'s ``leads_by_sentiment``."""
    return count_by(Lead.objects.filter(workspace=workspace), "sentiment")
