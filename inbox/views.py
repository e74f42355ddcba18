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
from drafts.services.actions import draft_edit, draft_regenerate, draft_reject
from inbox.rows import rows_html
from inbox.selectors import review_queue
from leads.models import Sentiment
from messaging.models import Channel
from workspaces.admin_scoping import request_workspace_ids
from workspaces.models import Workspace
from workspaces.services import audit_record

ACTIONS = ("send", "reject", "regenerate")


def inbox_view(request):
    """The queue of the workspaces this staff user is a member of (all, for a superuser)."""
    visible = sorted(request_workspace_ids(request))
    if request.method == "POST":
        return _act(request)
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


def _act(request):
    if not request.user.has_perm("drafts.change_draft"):
        raise PermissionDenied
    action = request.POST.get("action", "")
    draft_id = request.POST.get("draft_id", "")
    if action not in ACTIONS or not draft_id.isdigit():
        messages.error(request, "Unknown inbox action.")
        return _back(request)
    # Only drafts of workspaces where this user is an operator: others answer 404, as if absent.
    draft = Draft.objects.filter(
        pk=int(draft_id), workspace_id__in=request_workspace_ids(request, operable=True)
    ).first()
    if draft is None:
        raise Http404("no such draft")
    try:
        if action == "send":
            # Browsers send a textarea's line breaks as CRLF: an untouched draft is not an edit.
            content = request.POST.get("content", draft.content).replace("\r\n", "\n")
            subject = request.POST.get("subject", draft.subject)
            if (content, subject) != (draft.content, draft.subject):
                draft = draft_edit(draft=draft, content=content, subject=subject)
                audit_record(workspace=draft.workspace_id, actor=request.user, action="edit", target=draft)
            result = drafts_approve_and_send(workspace_id=draft.workspace_id, draft_ids=[draft.pk], user=request.user)
            if result.refused:
                raise ValueError(result.refused[0])
            audit_record(workspace=draft.workspace_id, actor=request.user, action="approve_and_send", target=draft)
            messages.success(request, f"Draft #{draft.pk} approved: it is being sent to {draft.lead}.")
        elif action == "reject":
            draft_reject(draft=draft)
            audit_record(workspace=draft.workspace_id, actor=request.user, action="reject", target=draft)
            messages.success(request, f"Draft #{draft.pk} rejected.")
        else:
            draft_regenerate(draft=draft)
            audit_record(workspace=draft.workspace_id, actor=request.user, action="regenerate", target=draft)
            messages.success(request, f"Draft #{draft.pk} is being written again.")
    except ValueError as exc:
        messages.error(request, f"Not done: {exc}")
    return _back(request)


def _back(request):
    query = request.POST.get("query", "")
    return HttpResponseRedirect(reverse("admin:inbox") + (f"?{query}" if query else ""))
