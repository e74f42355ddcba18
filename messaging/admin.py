from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from messaging.models import Message, WebhookEvent
from messaging.selectors import ghl_delivery_preview
from messaging.services import WebhookEventNotReprocessable, webhook_event_reprocess
from workspaces.admin import WorkspaceTool, workspace_tool_register
from workspaces.admin_scoping import WorkspaceScopedAdmin
from workspaces.models import Workspace
from workspaces.selectors import workspace_webhook_urls


@admin.register(WebhookEvent)
class WebhookEventAdmin(WorkspaceScopedAdmin):
    """Every stored delivery, per workspace; failures can be reprocessed (dj-stripe style).

    The list never shows bodies; the change page shows the stored body
    (secret-named fields masked) and headers (secrets dropped).
    """

    list_display = ("id", "workspace", "provider", "event_type", "status", "received_at", "processed_at", "short_error")
    list_filter = ("workspace", "provider", "status", "event_type", "reprocessable", "received_at")
    search_fields = ("idempotency_key", "event_type")
    list_select_related = ("workspace",)
    date_hierarchy = "received_at"
    actions = ["reprocess"]
    readonly_fields = (
        "workspace",
        "provider",
        "event_type",
        "idempotency_key",
        "status",
        "error",
        "message",
        "lead",
        "received_at",
        "processed_at",
        "reprocessable",
        "pretty_headers",
        "pretty_body",
    )
    exclude = ("body", "headers")
    operator_permissions = ("view", "change")  # reprocessing takes the change permission

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_reprocess_permission(self, request) -> bool:
        # The admin is read-only (no change form), but reprocessing writes: it
        # takes the model's change permission.
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.display(description="Error")
    def short_error(self, obj: WebhookEvent) -> str:
        return (obj.error or "")[:80]

    @admin.display(description="Headers")
    def pretty_headers(self, obj: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.headers, indent=2, sort_keys=True))

    @admin.display(description="Body")
    def pretty_body(self, obj: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.body, indent=2, ensure_ascii=False))

    @admin.action(description="Reprocess selected webhook events", permissions=("reprocess",))
    def reprocess(self, request, queryset):
        counts: dict[str, int] = {}
        refused = 0
        for event in queryset.only("id", "workspace_id"):
            try:
                result = webhook_event_reprocess(event_id=event.pk, workspace_id=event.workspace_id)
            except WebhookEventNotReprocessable:
                refused += 1
                continue
            counts[result.status] = counts.get(result.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
        self.message_user(request, f"Reprocessed: {summary}.", messages.SUCCESS)
        if refused:
            self.message_user(
                request,
                f"Skipped {refused} not reprocessable (refused by signature checks, never verified).",
                messages.WARNING,
            )


@admin.register(Message)
class MessageAdmin(WorkspaceScopedAdmin):
    """Bodies appear on the change page only, never in the list."""

    list_display = (
        "id",
        "workspace",
        "lead",
        "channel",
        "direction",
        "sentiment",
        "sent_at",
        "classified_at",
        "work_enqueued_at",
    )
    list_filter = ("workspace", "channel", "direction", "sentiment", ("classified_at", admin.EmptyFieldListFilter))
    search_fields = ("ghl_message_id", "emailbison_reply_id", "lead__email", "lead__phone_e164")
    list_select_related = ("workspace", "lead")
    raw_id_fields = ("lead", "draft_source")
    date_hierarchy = "sent_at"
    readonly_fields = ("body_hash", "created_at", "work_enqueued_at", "work_enqueue_count", "classified_at")


def webhook_check_view(request: HttpRequest, *, workspace: Workspace, context: dict) -> HttpResponse:
    """Dry run of a pasted GHL body for one workspace (the ``webhook_check`` command's twin).

    Reached through ``WorkspaceAdmin`` (its queryset and change permission); writes nothing.
    """
    body = request.POST.get("body", "") if request.method == "POST" else ""
    preview = ghl_delivery_preview(workspace=workspace, raw=body.encode()) if request.method == "POST" else None
    context = {
        **context,
        "body": body,
        "preview": preview,
        "webhook_url": workspace_webhook_urls(workspace=workspace).get("ghl", ""),
    }
    return TemplateResponse(request, "admin/messaging/webhook_check.html", context)


workspace_tool_register(WorkspaceTool(name="webhook-check", label="Webhook dry run", view=webhook_check_view))
