"""Reads for the operator inbox and the speed-to-lead figures.

A **clock** starts when Leadline receives a lead's message that expects an answer (a person's
message: not an out-of-office or automated reply, not an opt-out, and not old history a sync
imported) while no clock of that lead is running, and stops at our next answer (an outbound
message that went out: a sent draft, or a reply an operator wrote in GHL). A reopened thread
(the lead writes again after our answer) starts a new clock. Clocks count business time
(``BusinessHours``): the SLA and the reply figures are about the hours the team works.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from drafts.models import Draft, DraftStatus
from drafts.quoting import new_text
from inbox.businesstime import BusinessHours
from inbox.models import SlaBreach
from leads.models import DRAFTABLE_SENTIMENTS, LeadStatus
from messaging.models import Channel, Delivery, Direction, Message, Origin
from messaging.selectors import SWEEP_MAX_MESSAGE_AGE
from workspaces.models import Workspace

# Tags that start a clock: what expects an answer (the tags that get a draft), and messages not
# classified yet. Machine replies, opt-outs, "not interested", neutral, booked... start none.
CLOCK_SENTIMENTS = (*DRAFTABLE_SENTIMENTS, "")
# Drafts an operator closed without answering: their message stops waiting.
CLOSED_DRAFT_STATUSES = (DraftStatus.REJECTED, DraftStatus.SKIPPED)
# A running clock is looked for this far back: older unanswered messages are history.
CLOCK_LOOKBACK = dt.timedelta(days=7)
REPORT_DAYS = 7
HISTORY_DAYS = 14


def sla_seconds(*, workspace: Workspace, channel: str) -> int:
    minutes = workspace.sla_sms_minutes if channel == Channel.SMS else workspace.sla_email_minutes
    return int(minutes) * 60


# --- Clocks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    lead_id: int
    message_id: int
    channel: str
    started_at: dt.datetime


def _clock_starters(workspace_id: int):
    """Inbound messages of the workspace that start a clock when none is running."""
    closed = Draft.objects.filter(
        workspace_id=workspace_id, message_id=OuterRef("pk"), status__in=CLOSED_DRAFT_STATUSES
    )
    return (
        Message.objects.filter(workspace_id=workspace_id, direction=Direction.INBOUND, sentiment__in=CLOCK_SENTIMENTS)
        # History a sync imported: only a recent message (a webhook we missed) expects an answer.
        .exclude(origin=Origin.SYNC, sent_at__lt=F("created_at") - SWEEP_MAX_MESSAGE_AGE)
        .exclude(Exists(closed))
    )


def _answers(workspace_id: int):
    """Outbound messages that answer a lead: ours once sent, and what GHL reports was sent from
    its side (a person in the GHL inbox; GHL does not tell its workflow auto-replies apart).
    Campaign emails (EmailBison ``EMAIL_SENT``) and our failed or unconfirmed sends are no answer."""
    return Message.objects.filter(workspace_id=workspace_id, direction=Direction.OUTBOUND).filter(
        Q(origin=Origin.SENT, delivery=Delivery.SENT) | (~Q(origin=Origin.SENT) & ~Q(ghl_message_id=""))
    )


def running_clocks(*, workspace_id: int, now: dt.datetime | None = None) -> list[Clock]:
    """One clock per lead still waiting for our answer, started by its first unanswered message."""
    last_answer = (
        _answers(workspace_id).filter(lead_id=OuterRef("lead_id")).order_by("-created_at").values("created_at")[:1]
    )
    rows = (
        _clock_starters(workspace_id)
        .filter(created_at__gte=(now or timezone.now()) - CLOCK_LOOKBACK)
        .exclude(lead__status=LeadStatus.BLACKLISTED)
        .annotate(last_answer=Subquery(last_answer))
        .filter(Q(last_answer__isnull=True) | Q(created_at__gt=F("last_answer")))
        .order_by("created_at", "id")
        .values_list("lead_id", "id", "channel", "created_at")
    )
    clocks: dict[int, Clock] = {}
    for lead_id, message_id, channel, created_at in rows:
        clocks.setdefault(lead_id, Clock(lead_id, message_id, channel, created_at))
    return list(clocks.values())


@dataclass(frozen=True)
class Reply:
    lead_id: int
    channel: str
    received_at: dt.datetime
    replied_at: dt.datetime
    business_s: float


def replies_since(*, workspace: Workspace, since: dt.datetime) -> list[Reply]:
    """Completed clocks whose answer went out after ``since`` (clocks may have started before)."""
    hours = BusinessHours.of(workspace)
    starters = set(
        _clock_starters(workspace.pk)
        .filter(created_at__gte=since - dt.timedelta(days=HISTORY_DAYS))
        .values_list("id", flat=True)
    )
    window = Q(created_at__gte=since - dt.timedelta(days=HISTORY_DAYS))
    answers = _answers(workspace.pk).filter(window).values("id")
    messages = (
        Message.objects.filter(window, workspace_id=workspace.pk)
        .filter(Q(direction=Direction.INBOUND) | Q(pk__in=answers))
        .order_by("lead_id", "created_at", "id")
        .values_list("id", "lead_id", "direction", "channel", "created_at")
    )
    replies = []
    running: dict[int, tuple[str, dt.datetime]] = {}
    for message_id, lead_id, direction, channel, created_at in messages:
        if direction == Direction.INBOUND:
            if message_id in starters and lead_id not in running:
                running[lead_id] = (channel, created_at)
        elif lead_id in running:
            channel_in, received = running.pop(lead_id)
            if created_at >= since:
                replies.append(
                    Reply(lead_id, channel_in, received, created_at, hours.seconds_between(received, created_at))
                )
    return replies


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def speed_to_lead_report(*, workspace: Workspace) -> dict:
    """``speed_to_lead_summary`` as of now, as a ``workspace_report`` section."""
    return speed_to_lead_summary(workspace=workspace, now=timezone.now())


def speed_to_lead_summary(*, workspace: Workspace, now: dt.datetime) -> dict:
    """``workspace_report``'s ``speed_to_lead``: ready drafts waiting, the longest current wait
    (received → now, wall clock), and reply times of the last 7 days (received → our answer,
    business seconds)."""
    waiting = Draft.objects.filter(workspace_id=workspace.pk, status=DraftStatus.READY)
    oldest = waiting.order_by("message__created_at").values_list("message__created_at", flat=True).first()
    reply_s = [r.business_s for r in replies_since(workspace=workspace, since=now - dt.timedelta(days=REPORT_DAYS))]
    median = statistics.median(reply_s) if reply_s else None
    p90 = _pct(reply_s, 0.9)
    return {
        "waiting": waiting.count(),
        "oldest_wait_s": round((now - oldest).total_seconds(), 1) if oldest else None,
        "median_reply_s": round(median, 1) if median is not None else None,
        "p90_reply_s": round(p90, 1) if p90 is not None else None,
    }


@dataclass(frozen=True)
class DayFigures:
    day: dt.date
    median_reply_s: float | None
    replies_sent: int
    sla_breaches: int


def reply_history(*, workspace: Workspace, now: dt.datetime, days: int = HISTORY_DAYS) -> list[DayFigures]:
    """Per local day of the last ``days``: median reply time (business seconds), replies Leadline
    sent, SLA breaches detected."""
    zone = workspace.tzinfo
    today = now.astimezone(zone).date()
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first, dt.time(), tzinfo=zone)
    per_day: dict[dt.date, list[float]] = defaultdict(list)
    for reply in replies_since(workspace=workspace, since=since):
        per_day[reply.replied_at.astimezone(zone).date()].append(reply.business_s)
    sent = defaultdict(int)
    for at in Message.objects.filter(
        workspace_id=workspace.pk, origin=Origin.SENT, delivery=Delivery.SENT, sent_at__gte=since
    ).values_list("sent_at", flat=True):
        sent[at.astimezone(zone).date()] += 1
    breaches = defaultdict(int)
    for at in SlaBreach.objects.filter(workspace_id=workspace.pk, detected_at__gte=since).values_list(
        "detected_at", flat=True
    ):
        breaches[at.astimezone(zone).date()] += 1
    out = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        values = per_day.get(day)
        out.append(DayFigures(day, statistics.median(values) if values else None, sent[day], breaches[day]))
    return out


# --- The review queue ------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    draft_id: int
    workspace_id: int
    workspace_slug: str
    lead_id: int
    lead_label: str
    channel: str
    sentiment: str
    new_text: str
    full_text: str
    subject: str
    content: str
    slots: list[str]
    received_at: dt.datetime  # when the lead's wait began (its first unanswered message)
    waited_s: float  # wall clock, received -> now
    business_waited_s: float
    sla_s: int
    breached: bool


def review_queue(
    *,
    workspace_ids: list[int],
    now: dt.datetime,
    channel: str = "",
    sentiment: str = "",
    limit: int = 500,
) -> list[QueueRow]:
    """Ready drafts of ``workspace_ids``, the longest-waiting lead first (by when Leadline
    received the message the draft answers; the wait shown counts from the lead's running clock).
    One query for the rows (plain values, no model instances: the page lists hundreds), one for
    the workspaces, one per workspace for the clocks."""
    drafts = Draft.objects.filter(workspace_id__in=workspace_ids, status=DraftStatus.READY)
    if channel:
        drafts = drafts.filter(channel=channel)
    if sentiment:
        drafts = drafts.filter(message__sentiment=sentiment)
    values = drafts.order_by("message__created_at", "id").values(
        "id",
        "workspace_id",
        "lead_id",
        "channel",
        "subject",
        "content",
        "offered_slots",
        "message__body",
        "message__sentiment",
        "message__created_at",
        "lead__first_name",
        "lead__last_name",
        "lead__email",
        "lead__phone_e164",
    )[:limit]
    values = list(values)
    workspaces = {w.pk: w for w in Workspace.objects.filter(pk__in={v["workspace_id"] for v in values})}
    hours = {pk: BusinessHours.of(w) for pk, w in workspaces.items()}
    # The lead waits since its first unanswered message (the SLA's clock), which may be older than
    # the message this draft answers: one query per workspace on the page.
    clock_starts = {
        clock.lead_id: clock.started_at
        for workspace_id in workspaces
        for clock in running_clocks(workspace_id=workspace_id, now=now)
    }
    rows = []
    for v in values:
        workspace = workspaces[v["workspace_id"]]
        received = clock_starts.get(v["lead_id"], v["message__created_at"])
        business_waited = hours[workspace.pk].seconds_between(received, now)
        sla = sla_seconds(workspace=workspace, channel=v["channel"])
        body = v["message__body"]
        name = f"{v['lead__first_name']} {v['lead__last_name']}".strip()
        rows.append(
            QueueRow(
                draft_id=v["id"],
                workspace_id=workspace.pk,
                workspace_slug=workspace.slug,
                lead_id=v["lead_id"],
                lead_label=name or v["lead__email"] or v["lead__phone_e164"] or f"lead {v['lead_id']}",
                channel=v["channel"],
                sentiment=v["message__sentiment"],
                new_text=new_text(body) or body,
                full_text=body,
                subject=v["subject"],
                content=v["content"],
                slots=[slot.get("label", "") for slot in v["offered_slots"] or [] if isinstance(slot, dict)],
                received_at=received,
                waited_s=(now - received).total_seconds(),
                business_waited_s=business_waited,
                sla_s=sla,
                breached=business_waited > sla,
            )
        )
    return rows


def waiting_leads_count(*, workspace_ids: list[int]) -> int:
    """Leads with a ready draft awaiting review (the admin header's badge)."""
    return (
        Draft.objects.filter(workspace_id__in=workspace_ids, status=DraftStatus.READY)
        .values("lead_id")
        .distinct()
        .count()
    )
