from __future__ import annotations

from celery import shared_task


@shared_task(name="inbox.tasks.sla_scan", acks_late=True, soft_time_limit=50, time_limit=58, ignore_result=True)
def sla_scan() -> int:
    """Every minute (celery beat): raise and resolve speed-to-lead SLA breaches."""
    from inbox.services import sla_scan as sla_scan_service

    return sla_scan_service().breached


@shared_task(
    name="inbox.tasks.sla_breach_notify", acks_late=True, soft_time_limit=20, time_limit=30, ignore_result=True
)
def sla_breach_notify(breach_id: int, workspace_id: int) -> None:
    """Email and/or POST the workspace's SLA note for one breach."""
    from inbox.services import sla_breach_notify as notify

    notify(breach_id=breach_id, workspace_id=workspace_id)
