from __future__ import annotations

from celery import shared_task


@shared_task(
    name="messaging.tasks.sweep_unprocessed_messages",
    acks_late=True,
    soft_time_limit=50,
    time_limit=58,
    ignore_result=True,
)
def sweep_unprocessed_messages() -> int:
    """Every minute (celery beat): enqueue classify+draft work the webhooks could not enqueue."""
    from messaging.services import message_sweep_unprocessed

    return message_sweep_unprocessed()
