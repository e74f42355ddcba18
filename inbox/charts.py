"""The workspace page's speed-to-lead chart: server-rendered SVG, no scripts, no CDN."""

from __future__ import annotations

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from inbox.selectors import reply_history

WIDTH, HEIGHT, PAD = 560, 150, 24
BAR = '<rect x="{}" y="{}" width="{}" height="{}" fill="#79aec8"><title>{}</title></rect>'


def _n(value: float) -> str:
    return f"{value:.1f}"


def speed_to_lead_panel(workspace) -> SafeString:
    days = reply_history(workspace=workspace, now=timezone.now())
    slot = (WIDTH - 2 * PAD) / len(days)
    most_sent = max([d.replies_sent for d in days] + [1])
    slowest = max([d.median_reply_s or 0 for d in days] + [60])
    bars, dots, marks, labels = [], [], [], []
    for i, day in enumerate(days):
        x = PAD + i * slot
        height = (HEIGHT - 2 * PAD) * day.replies_sent / most_sent
        bars.append(
            (
                _n(x + 2),
                _n(HEIGHT - PAD - height),
                _n(slot - 4),
                _n(height),
                f"{day.day:%b %d}: {day.replies_sent} sent",
            )
        )
        if day.median_reply_s is not None:
            y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * day.median_reply_s / slowest
            dots.append((_n(x + slot / 2), _n(y), f"{day.day:%b %d}: median reply {day.median_reply_s / 60:.1f} min"))
        if day.sla_breaches:
            marks.append(
                (x + slot / 2, PAD - 8, f"{day.day:%b %d}: {day.sla_breaches} SLA breach(es)", day.sla_breaches)
            )
        if i % 2 == 0:
            labels.append((_n(x + slot / 2), HEIGHT - 6, f"{day.day:%d}"))
    return format_html(
        '<figure class="speed-to-lead" style="margin:0">'
        '<svg role="img" aria-label="Speed to lead, last 14 days" width="{}" height="{}" viewBox="0 0 {} {}">'
        "{}{}{}{}</svg>"
        "<figcaption>Last 14 days: replies sent (bars), median reply time in business minutes (dots, top ="
        " {} min), SLA breaches (red, count above).</figcaption></figure>",
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        format_html_join("", BAR, bars),
        format_html_join("", '<circle cx="{}" cy="{}" r="4" fill="#264b5d"><title>{}</title></circle>', dots),
        format_html_join(
            "",
            '<text x="{}" y="{}" fill="#ba2121" font-size="11" text-anchor="middle"><title>{}</title>{}</text>',
            marks,
        ),
        format_html_join("", '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>', labels),
        round(slowest / 60, 1),
    )
