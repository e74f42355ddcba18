"""Speed-to-lead SLA: breaches raised while a lead waits past the SLA, resolved when we answer.

``sla_scan`` runs every minute (celery beat). For each active workspace it walks the running
clocks (``inbox.selectors.running_clocks``); a clock whose business time passed the channel's
SLA (``Workspace.sla_sms_minutes`` / ``sla_email_minutes``) gets one ``SlaBreach`` row, and the
workspace's operators see one open IntegrationError ``speed_to_lead/sla_breached`` naming the
waiting leads. A breach resolves when its clock stops (we answered, or the message turned out
to be a machine reply or an opt-out); the error resolves with the last open breach. A new
breach may also notify (email through Django's mail backend, or a JSON POST to the
workspace's webhook URL): no message text is ever in a notification.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.http import HttpClient, ProviderError, RetryPolicy
from inbox.businesstime import BusinessHours
from inbox.models import SlaBreach
from inbox.selectors import running_clocks, sla_seconds
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

SOURCE = IntegrationError.Source.SPEED_TO_LEAD
BREACHED = "sla_breached"
NOTIFY_FAILED = "notify_failed"
NOTIFY_TIMEOUT_S = 5.0
NOTIFY_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class SlaScan:
    breached: int  # new breaches
    resolved: int
    open: int


def sla_scan(*, now: dt.datetime | None = None) -> SlaScan:
    now = now or timezone.now()
    totals = [0, 0, 0]
    for workspace in Workspace.objects.filter(is_active=True).order_by("id"):
        result = workspace_sla_scan(workspace=workspace, now=now)
        totals = [totals[0] + result.breached, totals[1] + result.resolved, totals[2] + result.open]
    return SlaScan(*totals)


def workspace_sla_scan(*, workspace: Workspace, now: dt.datetime) -> SlaScan:
    hours = BusinessHours.of(workspace)
    clocks = running_clocks(workspace_id=workspace.pk, now=now)
    new: list[SlaBreach] = []
    for clock in clocks:
        sla = sla_seconds(workspace=workspace, channel=clock.channel)
        due = hours.add(clock.started_at, sla)
        if due is None or due > now:
            continue
        try:
            with transaction.atomic():
                new.append(
                    SlaBreach.objects.create(
                        workspace=workspace,
                        lead_id=clock.lead_id,
                        message_id=clock.message_id,
                        channel=clock.channel,
                        clock_started_at=clock.started_at,
                        sla_seconds=sla,
                        due_at=due,
                        detected_at=now,
                    )
                )
        except IntegrityError:
            continue  # already recorded (one breach per clock)
    running = {clock.message_id for clock in clocks}
    open_breaches = SlaBreach.objects.filter(workspace_id=workspace.pk, resolved_at__isnull=True)
    resolved = open_breaches.exclude(message_id__in=running).update(resolved_at=now)
    still_open = list(open_breaches.order_by("clock_started_at").values_list("lead_id", "clock_started_at"))
    if new:
        oldest_lead, oldest_start = still_open[0]
        minutes = int((now - oldest_start).total_seconds() // 60)
        integration_error_record(
            workspace=workspace,
            source=SOURCE,
            code=BREACHED,
            message=(
                f"{len(still_open)} lead(s) waiting past the speed-to-lead SLA; the longest, lead #{oldest_lead},"
                f" for {minutes} min. Answer them from the inbox."
            ),
            context={"lead_ids": [lead_id for lead_id, _ in still_open][:50]},
        )
    elif not still_open:
        integration_error_resolve(workspace=workspace, source=SOURCE, codes=[BREACHED])
    if workspace.sla_notify_email or workspace.sla_notify_webhook_url:
        _notes_enqueue(workspace=workspace, now=now)
    return SlaScan(breached=len(new), resolved=resolved, open=len(still_open))


def _notes_enqueue(*, workspace: Workspace, now: dt.datetime) -> None:
    """Hand each open breach not yet notified to its own task (a slow hook never holds the scan);
    a note that failed is tried again at the next scans, up to NOTIFY_MAX_ATTEMPTS, within the hour."""
    from inbox.tasks import sla_breach_notify as notify_task

    pending = SlaBreach.objects.filter(
        workspace_id=workspace.pk,
        resolved_at__isnull=True,
        notified_at__isnull=True,
        notify_attempts__lt=NOTIFY_MAX_ATTEMPTS,
        detected_at__gte=now - dt.timedelta(hours=1),
    ).values_list("id", flat=True)
    for breach_id in pending:
        try:
            notify_task.apply_async(args=[breach_id, workspace.pk], retry=False)
        except Exception as exc:  # noqa: BLE001 - broker down: the next scan tries again
            logger.warning("SLA note not enqueued (%s)", type(exc).__name__)
            return


def _notify_failed(workspace: Workspace, message: str) -> None:
    integration_error_record(workspace=workspace, source=SOURCE, code=NOTIFY_FAILED, message=message)


def sla_breach_notify(*, breach_id: int, workspace_id: int) -> None:
    """Tell someone outside the console about one breach; never raises (a failure is an
    IntegrationError, and the scan tries again)."""
    workspace = Workspace.objects.get(pk=workspace_id)
    counted = SlaBreach.objects.filter(
        pk=breach_id, workspace_id=workspace_id, notified_at__isnull=True, notify_attempts__lt=NOTIFY_MAX_ATTEMPTS
    ).update(notify_attempts=F("notify_attempts") + 1)
    if not counted or not (workspace.sla_notify_email or workspace.sla_notify_webhook_url):
        return  # notified already, out of attempts, or nobody to tell
    breach = SlaBreach.objects.get(pk=breach_id, workspace_id=workspace_id)
    waited_min = round((breach.detected_at - breach.clock_started_at).total_seconds() / 60)
    note = {
        "workspace": workspace.slug,
        "lead_id": breach.lead_id,
        "channel": breach.channel,
        "received_at": breach.clock_started_at.isoformat(),
        "sla_minutes": breach.sla_seconds // 60,
        "waited_minutes": waited_min,
    }
    try:
        if workspace.sla_notify_email:
            send_mail(
                subject=f"[Leadline] {workspace.name}: a lead has waited {waited_min} min",
                message=(
                    f"Lead #{breach.lead_id} ({breach.channel}) has waited {waited_min} minutes for an answer;"
                    f" the SLA is {note['sla_minutes']} business minutes. Answer from the inbox."
                ),
                from_email=None,
                recipient_list=[workspace.sla_notify_email],
            )
        if workspace.sla_notify_webhook_url:
            with HttpClient(
                provider="sla-webhook",
                read_timeout_s=NOTIFY_TIMEOUT_S,
                retry=RetryPolicy(max_tries=2),
                outbound_guard=True,  # a URL an operator typed: never loopback, private or metadata
                secrets=[workspace.sla_notify_webhook_url, urlsplit(workspace.sla_notify_webhook_url).path],
            ) as http:
                http.request("POST", workspace.sla_notify_webhook_url, json=note, deadline=NOTIFY_TIMEOUT_S * 2)
    except ProviderError as exc:
        # The hook's path may be its secret (Slack, Zapier): only the host and the reason are kept.
        host = urlsplit(workspace.sla_notify_webhook_url).hostname or "?"
        _notify_failed(workspace, f"the SLA webhook on {host} failed: {exc.message}")
        return
    except OSError as exc:
        _notify_failed(workspace, f"the SLA email could not be sent: {type(exc).__name__}")
        return
    SlaBreach.objects.filter(pk=breach.pk, workspace_id=workspace.pk).update(notified_at=timezone.now())
    integration_error_resolve(workspace=workspace, source=SOURCE, codes=[NOTIFY_FAILED])
