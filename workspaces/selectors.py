from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.urls import reverse

from workspaces.models import IntegrationError, Membership, Role, Workspace


def workspace_webhook_urls(*, workspace: Workspace) -> dict[str, str]:
    """Where providers should post this workspace's events (authenticate with the
    ``X-Webhook-Secret`` header, or ``?secret=`` where a provider cannot set headers)."""
    base = settings.PUBLIC_BASE_URL
    return {
        "ghl": f"{base}/webhooks/ghl/{workspace.slug}/",
        "emailbison": f"{base}/webhooks/emailbison/{workspace.slug}/",
        "admin": f"{base}{reverse('admin:workspaces_workspace_change', args=[workspace.pk])}",
    }


def member_workspace_ids(*, user, roles: tuple[str, ...] = (Role.OPERATOR, Role.VIEWER)) -> set[int]:
    """Ids of the workspaces ``user`` is a member of with one of ``roles`` (superusers: not special here)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return set()
    return set(Membership.objects.filter(user=user, role__in=list(roles)).values_list("workspace_id", flat=True))


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _count_by(queryset, field: str) -> dict[str, int]:
    return dict(queryset.values(field).annotate(n=Count("id")).order_by().values_list(field, "n"))


def workspace_report(*, workspace: Workspace) -> dict[str, Any]:
    """The workspace's state, as printed by ``workspace_report <slug> --json``."""
    from django.utils import timezone

    from availability.selectors import availability_summary
    from drafts.models import Draft
    from emailbison.selectors import sender_counts
    from inbox.selectors import speed_to_lead_summary
    from leads.models import Lead
    from messaging.models import Direction, Message

    by_sentiment = _count_by(Lead.objects.filter(workspace=workspace), "sentiment")
    by_direction = _count_by(Message.objects.filter(workspace=workspace), "direction")
    drafts = _count_by(Draft.objects.filter(workspace=workspace), "status")
    open_errors = [
        {
            "source": err.source,
            "code": err.code,
            "count": err.count,
            "last_seen": _iso(err.last_seen),
            "message": err.message,
        }
        for err in IntegrationError.objects.filter(workspace=workspace, resolved_at__isnull=True).order_by("-last_seen")
    ]
    return {
        "workspace": workspace.slug,
        "leads": sum(by_sentiment.values()),
        "leads_by_sentiment": by_sentiment,
        "messages": {
            "inbound": by_direction.get(Direction.INBOUND, 0),
            "outbound": by_direction.get(Direction.OUTBOUND, 0),
        },
        "drafts": drafts,
        "open_errors": open_errors,
        "availability": availability_summary(workspace=workspace),
        "last_sync": _last_sync(workspace=workspace),
        "speed_to_lead": speed_to_lead_summary(workspace=workspace, now=timezone.now()),
        "senders": sender_counts(workspace_id=workspace.pk),
    }


# Report sections owned by apps above this one (e.g. ``last_sync`` from ghl), registered from
# their AppConfig.ready: a section nobody registered reports None.
ReportSection = Callable[..., Any]
_report_sections: dict[str, ReportSection] = {}


def report_section_register(name: str, section: ReportSection) -> None:
    """Add ``name`` to ``workspace_report``: ``section(workspace=...)`` gives its value."""
    _report_sections[name] = section


def _last_sync(*, workspace: Workspace) -> dict[str, Any] | None:
    """The latest GHL sync run (``ghl.SyncRun``, registered by the ghl app), or None."""
    section = _report_sections.get("last_sync")
    return section(workspace=workspace) if section is not None else None
