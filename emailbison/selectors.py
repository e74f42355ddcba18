from __future__ import annotations

from django.db.models import Count, Q

from emailbison.models import SenderEmail


def sender_counts(*, workspace_id: int) -> dict[str, int]:
    """``workspace_report``'s ``senders``: the workspace's EmailBison senders by sendability."""
    counts = SenderEmail.objects.filter(workspace_id=workspace_id).aggregate(
        sendable=Count("id", filter=Q(is_sendable=True)), unsendable=Count("id", filter=Q(is_sendable=False))
    )
    return {"sendable": counts["sendable"], "unsendable": counts["unsendable"]}


def sender_report(*, workspace) -> dict[str, int]:
    """``sender_counts`` as a ``workspace_report`` section."""
    return sender_counts(workspace_id=workspace.pk)
