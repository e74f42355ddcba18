"""The inbox's rows as HTML, built in Python: the page lists hundreds of drafts, and Django's
template engine costs ~1 ms a row where ``format_html`` costs a tenth of that. Everything
is escaped by ``format_html``; the layout and styles live in ``inbox/inbox.html``."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from inbox.selectors import QueueRow

_ID = 987654321  # a placeholder id to build change URLs once per page


def wait_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def rows_html(rows: list[QueueRow], *, csrf_token: str, query: str, can_act: bool) -> SafeString:
    change_url = reverse("admin:drafts_draft_change", args=[_ID]).replace(str(_ID), "{}")
    disabled = "" if can_act else " disabled"
    parts = []
    for row in rows:
        breached = " breached" if row.breached else ""
        history = ""
        if row.full_text != row.new_text:
            history = format_html(
                '<details><summary>quoted history</summary><div class="inbox-message">{}</div></details>',
                row.full_text,
            )
        subject = ""
        if row.channel == "email":
            subject = format_html(
                '<input type="text" name="subject" value="{}" aria-label="subject"{}>', row.subject, disabled
            )
        slots = ""
        if row.slots:
            slots = format_html(
                '<div>Offered times:<ul class="inbox-slots">{}</ul></div>',
                format_html_join("", "<li>{}</li>", ((slot,) for slot in row.slots)),
            )
        actions = ""
        if can_act:
            actions = format_html(
                '<div class="inbox-actions">'
                '<button type="submit" name="action" value="send" class="default">Approve and send</button>'
                '<button type="submit" name="action" value="reject">Reject</button>'
                '<button type="submit" name="action" value="regenerate">Regenerate</button>'
                '<a href="{}">details</a></div>',
                change_url.format(row.draft_id),
            )
        parts.append(
            format_html(
                '<div class="inbox-row{}" id="draft-{}" data-draft="{}">'
                '<div class="inbox-meta"><span><strong>{}</strong> (lead #{})</span><span>{}</span><span>{}</span>'
                '<span>{}</span><span class="inbox-wait{}" title="received {} UTC; {} of business time,'
                ' SLA {} min">waiting {}{}</span></div>'
                '<div class="inbox-cols"><div><div class="inbox-message">{}</div>{}</div>'
                '<div><form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                '<input type="hidden" name="draft_id" value="{}"><input type="hidden" name="query" value="{}">'
                '{}<textarea name="content" aria-label="draft"{}>{}</textarea>{}{}</form></div></div></div>',
                breached,
                row.draft_id,
                row.draft_id,
                row.lead_label,
                row.lead_id,
                row.workspace_slug,
                row.channel.upper(),
                row.sentiment or "unclassified",
                breached,
                row.received_at.strftime("%Y-%m-%d %H:%M"),
                wait_text(row.business_waited_s),
                row.sla_s // 60,
                wait_text(row.waited_s),
                mark_safe(" &mdash; past the SLA") if row.breached else "",
                row.new_text,
                history,
                csrf_token,
                row.draft_id,
                query,
                subject,
                disabled,
                row.content,
                slots,
                actions,
            )
        )
    return mark_safe("".join(parts))  # noqa: S308 - every part is format_html output
