from __future__ import annotations

from celery import shared_task


@shared_task(name="inbox.tasks.sla_scan", acks_late=True, soft_time_limit=50, time_limit=58, ignore_result=True)
def sla_scan() -> int:
    """Every minute (celery beat): raise and resolve speed-to-lead SLA breaches."""
    from inbox.services import sla_scan as sla_scan_service

    return sla_scan_service().breached
