"""``/admin/inbox/``: the needs-review queue, oldest wait first, with the actions in place.

Each row is one ready draft: the lead, the channel, the lead's new text (quoted history
folded), the draft (editable), the offered slots and how long the lead has waited. Approve and
send, edit then send, reject and regenerate post back here and return to the same queue.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from drafts.models import Draft
from drafts.sending import drafts_approve_and_send
from drafts.services import draft_edit, draft_regenerate, draft_reject
from inbox.rows import rows_html
from inbox.selectors import review_queue
from leads.models import Sentiment
from messaging.models import Channel
from workspaces.models import Workspace

ACTIONS = ("send", "reject", "regenerate")


def visible_workspace_ids(request) -> list[int]:
    """The workspaces whose leads this staff user may see in the inbox."""
    return list(Workspace.objects.filter(is_active=True).order_by("id").values_list("id", flat=True))


def inbox_view(request):
    visible = visible_workspace_ids(request)
    if request.method == "POST":
        return _act(request, visible)
    filters = {
        "workspace": request.GET.get("workspace", ""),
        "channel": request.GET.get("channel", "") if request.GET.get("channel") in Channel.values else "",
        "sentiment": request.GET.get("sentiment", "") if request.GET.get("sentiment") in Sentiment.values else "",
    }
    workspace_ids = visible
    if filters["workspace"].isdigit() and int(filters["workspace"]) in visible:
        workspace_ids = [int(filters["workspace"])]
    else:
        filters["workspace"] = ""
    now = timezone.now()
    rows = review_queue(
        workspace_ids=workspace_ids, now=now, channel=filters["channel"], sentiment=filters["sentiment"]
    )
    query = urlencode({k: v for k, v in filters.items() if v})
    can_act = request.user.has_perm("drafts.change_draft")
    context = {
        **admin.site.each_context(request),
        "title": "Inbox: drafts awaiting review",
        "rows": rows,
        "rows_html": rows_html(rows, csrf_token=get_token(request), query=query, can_act=can_act),
        "filters": filters,
        "workspaces": Workspace.objects.filter(pk__in=visible).order_by("slug").values_list("id", "slug"),
        "channels": Channel.choices,
        "sentiments": Sentiment.choices,
    }
    return TemplateResponse(request, "inbox/inbox.html", context)


def _act(request, visible: list[int]):
    if not request.user.has_perm("drafts.change_draft"):
        raise PermissionDenied
    action = request.POST.get("action", "")
    draft_id = request.POST.get("draft_id", "")
    if action not in ACTIONS or not draft_id.isdigit():
        messages.error(request, "Unknown inbox action.")
        return _back(request)
    draft = Draft.objects.filter(pk=int(draft_id), workspace_id__in=visible).first()
    if draft is None:
        raise Http404("no such draft")
    try:
        if action == "send":
            content = request.POST.get("content", draft.content)
            subject = request.POST.get("subject", draft.subject)
            if (content, subject) != (draft.content, draft.subject):
                draft = draft_edit(draft=draft, content=content, subject=subject)
            result = drafts_approve_and_send(workspace_id=draft.workspace_id, draft_ids=[draft.pk], user=request.user)
            if result.refused:
                raise ValueError(result.refused[0])
            messages.success(request, f"Draft #{draft.pk} approved: it is being sent to {draft.lead}.")
        elif action == "reject":
            draft_reject(draft=draft)
            messages.success(request, f"Draft #{draft.pk} rejected.")
        else:
            draft_regenerate(draft=draft)
            messages.success(request, f"Draft #{draft.pk} is being written again.")
    except ValueError as exc:
        messages.error(request, f"Not done: {exc}")
    return _back(request)


def _back(request):
    query = request.POST.get("query", "")
    return HttpResponseRedirect(reverse("admin:inbox") + (f"?{query}" if query else ""))
