from __future__ import annotations

from typing import Any

from ghl.models import SyncRun
from workspaces.models import Workspace


def sync_run_last_summary(*, workspace: Workspace) -> dict[str, Any] | None:
    """``workspace_report``'s ``last_sync``: the workspace's latest run, or None."""
    run = SyncRun.objects.filter(workspace=workspace).order_by("-started_at", "-id").first()
    if run is None:
        return None
    return {
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "leads_total": run.leads_total,
        "leads_ok": run.leads_ok,
        "leads_failed": run.leads_failed,
        "rate_limited": run.rate_limited,
    }
