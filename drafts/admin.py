from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from drafts.models import Draft, DraftStatus
from drafts.sending import draft_approve_and_send, drafts_approve_and_send
from drafts.services.actions import EDITABLE_STATUSES, draft_edit, draft_regenerate, draft_reject
from messaging.models import Channel
from workspaces.admin_scoping import WorkspaceScopedAdmin


class DraftForm(forms.ModelForm):
    class Meta:
        model = Draft
        fields = ("subject", "content")

    def clean_content(self) -> str:
        content = self.cleaned_data.get("content") or ""
        if not content.strip():
            raise forms.ValidationError("A draft cannot be empty: reject it instead.")
        return content

    def clean_subject(self) -> str:
        subject = self.cleaned_data.get("subject") or ""
        if subject and self.instance.channel == Channel.SMS:
            raise forms.ValidationError("SMS drafts have no subject.")
        return subject


@admin.register(Draft)
class DraftAdmin(WorkspaceScopedAdmin):
    operator_permissions = ("view", "change")  # edit, approve, reject, regenerate
    form = DraftForm
    # No message bodies or draft content on the list page.
    list_display = (
        "id",
        "workspace",
        "lead",
        "channel",
        "status",
        "send_after",
        "failure_reason",
        "answered_message",
        "model",
        "attempts",
        "tokens",
        "latency_ms",
        "created_at",
    )
    list_filter = ("status", "channel", "workspace", "failure_reason")
    list_select_related = ("workspace", "lead", "message")
    search_fields = ("=id", "=message__id", "lead__email", "lead__phone_e164")
    date_hierarchy = "created_at"
    actions = ("approve_and_send", "reject", "regenerate_drafts")
    # The change form adds an "Approve and send" button (name ``_approve_and_send``).
    change_form_template = "admin/drafts/draft/change_form.html"
    readonly_fields = (
        "workspace",
        "lead",
        "message",
        "answered_message_body",
        "channel",
        "status",
        "model",
        "max_output_tokens",
        "attempts",
        "incomplete_reason",
        "failure_reason",
        "error",
        "usage",
        "latency_ms",
        "offered_slots_display",
        "prompt_version",
        "approved_by",
        "approved_at",
        "send_after",
        "sent_message_link",
        "sent_at",
        "generation_started_at",
        "finished_at",
        "created_at",
        "updated_at",
    )
    fields = ("subject", "content", *readonly_fields)

    @admin.display(description="message")
    def answered_message(self, obj: Draft) -> str:
        return f"#{obj.message_id} ({obj.message.sentiment or 'unclassified'})"

    @admin.display(description="answered message")
    def answered_message_body(self, obj: Draft) -> str:
        return obj.message.body

    @admin.display(description="sent message")
    def sent_message_link(self, obj: Draft) -> str:
        if not obj.sent_message_id:
            return "-"
        url = reverse("admin:messaging_message_change", args=[obj.sent_message_id])
        return format_html('<a href="{}">message #{}</a>', url, obj.sent_message_id)

    @admin.display(description="tokens (in/out/reasoning)")
    def tokens(self, obj: Draft) -> str:
        usage = obj.usage or {}
        if not usage:
            return "-"
        return f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}/{usage.get('reasoning_tokens', 0)}"

    @admin.display(description="offered slots")
    def offered_slots_display(self, obj: Draft) -> str:
        if not obj.offered_slots:
            return "-"
        return format_html(
            "<br>".join(["{}"] * len(obj.offered_slots)), *[s.get("label", "") for s in obj.offered_slots]
        )

    def has_add_permission(self, request) -> bool:
        return False

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_approve_and_send"] = (
            obj is not None and obj.status in EDITABLE_STATUSES and self.has_change_permission(request, obj)
        )
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def get_readonly_fields(self, request, obj=None):
        # Operators edit the text only while the draft awaits review or sending.
        if obj is not None and obj.status not in EDITABLE_STATUSES:
            return ("subject", "content", *self.readonly_fields)
        return self.readonly_fields

    def save_model(self, request, obj: Draft, form, change) -> None:
        """Only the text is written, and only while the draft is still editable (a conditional
        update: a worker or another operator may have moved it since the form was loaded)."""
        if not {"content", "subject"} & set(form.changed_data):
            return
        was_approved = obj.status == DraftStatus.APPROVED
        try:
            draft_edit(draft=obj, content=obj.content, subject=obj.subject)
        except ValueError as exc:
            request._draft_edit_refused = str(exc)
            return
        if was_approved:
            self.message_user(request, "The text changed: the draft is ready again and needs a new approval.")

    def log_change(self, request, obj, message):
        if getattr(request, "_draft_edit_refused", None):
            return None  # nothing was changed
        return super().log_change(request, obj, message)

    def response_change(self, request, obj):
        refused = getattr(request, "_draft_edit_refused", None)
        if refused:
            # Back to the form, with why (not Django's "changed successfully").
            self.message_user(request, f"Not saved: {refused}", messages.ERROR)
            return HttpResponseRedirect(request.path)
        if "_approve_and_send" in request.POST:
            # The edit (if any) is saved; now approve what was saved and send it.
            obj.refresh_from_db()
            try:
                draft = draft_approve_and_send(draft=obj, user=request.user)
            except ValueError as exc:
                self.message_user(request, f"Not sent: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Draft #{draft.pk} approved: it is being sent.", messages.SUCCESS)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def _apply(self, request, queryset, func, verb: str, **kwargs) -> None:
        done, refused = 0, []
        for draft in queryset.select_related("workspace"):
            try:
                func(draft=draft, **kwargs)
                done += 1
            except ValueError as exc:
                refused.append(str(exc))
        if done:
            self.message_user(request, f"{done} draft(s) {verb}.", messages.SUCCESS)
        for reason in refused[:10]:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Approve and send selected drafts", permissions=("change",))
    def approve_and_send(self, request, queryset) -> None:
        by_workspace: dict[int, list[int]] = {}
        for draft_id, workspace_id in queryset.values_list("id", "workspace_id"):
            by_workspace.setdefault(workspace_id, []).append(draft_id)
        queued, refused = 0, []
        for workspace_id, draft_ids in by_workspace.items():
            result = drafts_approve_and_send(workspace_id=workspace_id, draft_ids=draft_ids, user=request.user)
            queued += len(result.queued)
            refused += result.refused
        if queued:
            self.message_user(request, f"{queued} draft(s) approved and being sent.", messages.SUCCESS)
        for reason in refused[:10]:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Reject selected drafts", permissions=("change",))
    def reject(self, request, queryset) -> None:
        self._apply(request, queryset, draft_reject, "rejected")

    @admin.action(description="Regenerate selected drafts", permissions=("change",))
    def regenerate_drafts(self, request, queryset) -> None:
        self._apply(request, queryset, draft_regenerate, "queued for regeneration")
