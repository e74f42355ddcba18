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


def count_by(queryset, field: str) -> dict[str, int]:
    """{value of ``field``: rows} over ``queryset`` (one GROUP BY)."""
    return dict(queryset.values(field).annotate(n=Count("id")).order_by().values_list(field, "n"))


# The keys of ``workspace_report`` in their documented order. ``workspace`` and ``open_errors``
# are this app's; every other key is a section owned by an app above this one (leads, messaging,
# drafts, availability, ghl, inbox, emailbison), registered from that app's AppConfig.ready so
# this low layer imports none of them. A key nobody registered reports None.
REPORT_KEYS = (
    "workspace",
    "leads",
    "leads_by_sentiment",
    "messages",
    "drafts",
    "open_errors",
    "availability",
    "last_sync",
    "speed_to_lead",
    "senders",
)
ReportSection = Callable[..., Any]
_report_sections: dict[str, ReportSection] = {}


def report_section_register(name: str, section: ReportSection) -> None:
    """Fill ``name`` of ``workspace_report``: ``section(workspace=...)`` gives its value."""
    if name not in REPORT_KEYS:
        raise ValueError(f"{name!r} is not a workspace_report key")
    _report_sections[name] = section


def workspace_report(*, workspace: Workspace) -> dict[str, Any]:
    """The workspace's state, as printed by ``workspace_report <slug> --json``."""
    own = {"workspace": workspace.slug, "open_errors": _open_errors(workspace=workspace)}
    report: dict[str, Any] = {}
    for key in REPORT_KEYS:
        section = _report_sections.get(key)
        report[key] = own[key] if key in own else (section(workspace=workspace) if section else None)
    return report


def _open_errors(*, workspace: Workspace) -> list[dict[str, Any]]:
    return [
        {
            "source": err.source,
            "code": err.code,
            "count": err.count,
            "last_seen": _iso(err.last_seen),
            "message": err.message,
        }
        for err in IntegrationError.objects.filter(workspace=workspace, resolved_at__isnull=True).order_by("-last_seen")
    ]
