from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join

from core.redaction import mask_secret
from workspaces.admin_scoping import WorkspaceScopedAdmin, WorkspaceScopedInline
from workspaces.models import (
    SECRET_FIELDS,
    AuditEvent,
    IntegrationError,
    Membership,
    Workspace,
    generate_webhook_secret,
)
from workspaces.services import (
    TOKEN_BOUND_URLS,
    URL_FIELDS,
    integration_error_resolve,
    outbound_url_error,
    token_reentry_errors,
)


class WriteOnlySecretWidget(forms.PasswordInput):
    """Never renders the stored value; shows its mask as the placeholder."""

    def __init__(self, *args, **kwargs):
        kwargs["render_value"] = False
        super().__init__(*args, **kwargs)


class WorkspaceAdminForm(forms.ModelForm):
    """Secrets are write-only: a blank submission keeps the stored value."""

    clear_secrets = forms.MultipleChoiceField(
        choices=[(f, f.replace("_", " ")) for f in SECRET_FIELDS if f != "webhook_secret"],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Tick to remove a stored credential.",
    )

    class Meta:
        model = Workspace
        fields = SECRET_FIELDS  # the admin's fieldsets add the rest
        widgets = {name: WriteOnlySecretWidget() for name in SECRET_FIELDS}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in SECRET_FIELDS:
            field = self.fields.get(name)
            if field is None:
                continue  # a read-only page leaves the credentials out
            field.required = False
            stored = getattr(self.instance, name, "") if self.instance.pk else ""
            field.widget.attrs["placeholder"] = mask_secret(stored) if stored else "not set"
            field.widget.attrs["autocomplete"] = "new-password"
            field.help_text = "Write-only. Leave blank to keep the current value."
            self.initial[name] = ""

    def clean(self):
        cleaned = super().clean()
        stored = Workspace.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        for name in URL_FIELDS:
            if name in self.changed_data and cleaned.get(name) and (refused := outbound_url_error(cleaned[name])):
                self.add_error(name, refused)
        cleared = set(cleaned.get("clear_secrets") or [])
        submitted = {url: cleaned.get(url, "") for url in TOKEN_BOUND_URLS if url in self.changed_data}
        for token in TOKEN_BOUND_URLS.values():
            # A new token, or clearing the stored one: either way the old token never goes to the new URL.
            submitted[token] = "cleared" if token in cleared else cleaned.get(token)
        for name, message in token_reentry_errors(stored=stored, changes=submitted).items():
            self.add_error(name, message)
        for name in SECRET_FIELDS:
            if not cleaned.get(name):
                cleaned[name] = getattr(stored, name) if stored else ""
        for name in cleaned.get("clear_secrets") or []:
            cleaned[name] = ""
        secret = cleaned.get("webhook_secret")
        if not secret:
            cleaned["webhook_secret"] = generate_webhook_secret()
        elif len(secret) < 16:
            self.add_error("webhook_secret", "must be at least 16 characters")
        return cleaned


class OpenIntegrationErrorInline(WorkspaceScopedInline, admin.TabularInline):
    model = IntegrationError
    verbose_name_plural = "Open integration errors"
    fields = ("source", "code", "count", "last_seen", "first_seen", "message")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-last_seen",)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(resolved_at__isnull=True)

    def has_add_permission(self, request, obj=None):
        return False


def _admin_changelist_link(app_label: str, model: str, workspace: Workspace, label: str) -> str:
    try:
        url = reverse(f"admin:{app_label}_{model}_changelist")
    except NoReverseMatch:
        return ""
    return format_html('<a href="{}?workspace__id__exact={}">{}</a>', url, workspace.pk, label)


# Panels other apps add to the workspace page (each: workspace -> safe HTML), registered from
# their AppConfig.ready() so this low layer imports none of them (the speed-to-lead chart).
workspace_page_panels: list = []


@dataclass(frozen=True)
class WorkspaceTool:
    """A page about one workspace that an app above ``workspaces`` adds to this admin
    (registered from its own admin module, since this layer must not import it).

    ``view(request, workspace=..., context=...)`` gets the workspace loaded through
    ``WorkspaceAdmin.get_object`` (the admin's queryset, so its scoping applies), already
    checked for the change permission, and the admin's base template context.
    """

    name: str  # URL segment: /admin/workspaces/workspace/<id>/tools/<name>/
    label: str
    view: Callable[..., HttpResponse]


WORKSPACE_TOOLS: dict[str, WorkspaceTool] = {}


def workspace_tool_register(tool: WorkspaceTool) -> None:
    WORKSPACE_TOOLS[tool.name] = tool


# Inlines other apps show first on the workspace page (the availability snapshot), registered
# from their own admin module like the tools above.
WORKSPACE_INLINES: list[type] = []


def workspace_inline_register(inline: type) -> None:
    if inline not in WORKSPACE_INLINES:
        WORKSPACE_INLINES.append(inline)


@admin.register(Workspace)
class WorkspaceAdmin(WorkspaceScopedAdmin):
    workspace_field = None  # the workspace itself
    operator_permissions = ("view", "change")  # operators edit their workspace's settings
    form = WorkspaceAdminForm
    list_display = ("slug", "name", "timezone", "is_active", "booking_provider", "open_errors", "credentials")
    list_filter = ("is_active", "booking_provider")
    search_fields = ("slug", "name", "ghl_location_id")
    readonly_fields = ("related_links", "panels", "webhook_urls", "masked_credentials", "created_at", "updated_at")
    inlines = [OpenIntegrationErrorInline]
    fieldsets = (
        (None, {"fields": ("slug", "name", "timezone", "is_active", "related_links", "webhook_urls", "panels")}),
        (
            "Credentials (write-only)",
            {
                "fields": (
                    "masked_credentials",
                    "webhook_secret",
                    "verify_ghl_signatures",
                    "ghl_location_id",
                    "ghl_token",
                    "emailbison_base_url",
                    "emailbison_token",
                    "calendly_token",
                    "clear_secrets",
                )
            },
        ),
        (
            "Booking",
            {
                "fields": (
                    "booking_provider",
                    "ghl_calendar_id",
                    "ghl_booking_url",
                    "calendly_event_type_uri",
                    "calendly_booking_url",
                    "business_hours_start",
                    "business_hours_end",
                    "business_days",
                )
            },
        ),
        (
            "AI persona",
            {
                "fields": (
                    "persona_name",
                    "persona_tone",
                    "company_name",
                    "offer_description",
                    "signature",
                    "slots_to_offer",
                )
            },
        ),
        (
            "Sending",
            {
                "fields": ("sms_send_start", "sms_send_end"),
                "description": "SMS leave only inside this window, in the lead's local time (quiet hours).",
            },
        ),
        (
            "Speed to lead",
            {
                "fields": ("sla_sms_minutes", "sla_email_minutes", "sla_notify_email", "sla_notify_webhook_url"),
                "description": "How long a lead may wait for our answer, in business minutes (business hours"
                " above); a lead waiting longer raises an SLA breach and, optionally, a note by email or webhook.",
            },
        ),
        ("Timestamps", {"fields": ("created_at", "updated_at")}),
    )

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        # Read-only pages render field values: never the decrypted credentials (the masks stay).
        hidden = {*SECRET_FIELDS, "clear_secrets"}
        return [(name, {**opts, "fields": [f for f in opts["fields"] if f not in hidden]}) for name, opts in fieldsets]

    def get_queryset(self, request):
        from django.db.models import Count, Q

        return (
            super()
            .get_queryset(request)
            .annotate(_open_errors=Count("integration_errors", filter=Q(integration_errors__resolved_at__isnull=True)))
            .order_by("slug")  # GROUP BY drops Meta.ordering: autocomplete pages need an order
        )

    def get_urls(self):
        tool_url = path(
            "<path:object_id>/tools/<slug:tool>/",
            self.admin_site.admin_view(self.tool_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_tool",
        )
        # Before the default URLs: their catch-all "<path:object_id>/" would take it.
        return [tool_url, *super().get_urls()]

    def tool_view(self, request: HttpRequest, object_id: str, tool: str) -> HttpResponse:
        spec = WORKSPACE_TOOLS.get(tool)
        if spec is None:
            raise Http404(f"no workspace tool {tool!r}")
        workspace = self.get_object(request, unquote(object_id))
        if workspace is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, workspace):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": workspace,
            "title": f"{spec.label}: {workspace.slug}",
            "tool": spec,
        }
        return spec.view(request, workspace=workspace, context=context)

    def get_inlines(self, request, obj):
        return [*WORKSPACE_INLINES, *self.inlines]

    @admin.display(description="Open errors", ordering="_open_errors")
    def open_errors(self, obj: Workspace) -> int:
        return obj._open_errors

    @admin.display(description="Credentials")
    def credentials(self, obj: Workspace) -> str:
        labels = {"ghl_token": "GHL", "emailbison_token": "EmailBison", "calendly_token": "Calendly"}
        return ", ".join(label for name, label in labels.items() if getattr(obj, name)) or "none"

    @admin.display(description="Stored credentials")
    def masked_credentials(self, obj: Workspace) -> str:
        return format_html_join(
            "",
            "<div><code>{}</code>: {}</div>",
            ((name, mask_secret(getattr(obj, name)) or "not set") for name in SECRET_FIELDS),
        )

    @admin.display(description="Webhook URLs")
    def webhook_urls(self, obj: Workspace) -> str:
        if not obj.pk:
            return "-"
        from workspaces.selectors import workspace_webhook_urls

        urls = workspace_webhook_urls(workspace=obj)
        return format_html_join("", "<div>{}: <code>{}</code></div>", urls.items())

    @admin.display(description="Activity")
    def panels(self, obj: Workspace) -> str:
        if not obj.pk:
            return "-"
        return format_html_join("", "<div>{}</div>", ((panel(obj),) for panel in workspace_page_panels)) or "-"

    @admin.display(description="Related")
    def related_links(self, obj: Workspace) -> str:
        if not obj.pk:
            return "-"
        links = [
            _admin_changelist_link("leads", "lead", obj, "Leads"),
            _admin_changelist_link("messaging", "message", obj, "Messages"),
            _admin_changelist_link("drafts", "draft", obj, "Drafts"),
            _admin_changelist_link("messaging", "webhookevent", obj, "Webhook events"),
            _admin_changelist_link("workspaces", "integrationerror", obj, "Integration errors"),
        ]
        for name, tool in WORKSPACE_TOOLS.items():
            url = reverse("admin:workspaces_workspace_tool", args=[obj.pk, name])
            links.append(format_html('<a href="{}">{}</a>', url, tool.label))
        return format_html_join(" · ", "{}", ((link,) for link in links if link))


class ResolvedFilter(admin.SimpleListFilter):
    title = "resolved"
    parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return [("no", "Open"), ("yes", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(IntegrationError)
class IntegrationErrorAdmin(WorkspaceScopedAdmin):
    operator_permissions = ("view", "change")  # resolving an error is a change
    list_display = ("workspace", "source", "code", "count", "last_seen", "first_seen", "is_open", "short_message")
    list_filter = ("workspace", "source", ResolvedFilter)
    search_fields = ("code", "workspace__slug")
    ordering = ("-last_seen",)
    list_select_related = ("workspace",)
    readonly_fields = (
        "workspace",
        "source",
        "code",
        "message",
        "context",
        "count",
        "first_seen",
        "last_seen",
        "resolved_at",
    )
    actions = ["mark_resolved"]

    def has_add_permission(self, request):
        return False

    @admin.display(boolean=True, description="Open")
    def is_open(self, obj: IntegrationError) -> bool:
        return obj.resolved_at is None

    @admin.display(description="Message")
    def short_message(self, obj: IntegrationError) -> str:
        return (obj.message[:120] + "…") if len(obj.message) > 120 else obj.message

    @admin.action(description="Mark selected errors resolved", permissions=("change",))
    def mark_resolved(self, request, queryset):
        count = 0
        for err in queryset.filter(resolved_at__isnull=True).select_related("workspace"):
            count += integration_error_resolve(workspace=err.workspace_id, source=err.source, codes=[err.code])
        self.message_user(request, f"{count} error(s) marked resolved.")


@admin.register(Membership)
class MembershipAdmin(WorkspaceScopedAdmin):
    """Who may see which workspace: superusers only (``configure_operator`` manages it too)."""

    operator_permissions = ()
    viewer_permissions = ()
    list_display = ("user", "workspace", "role", "created_at")
    list_filter = ("role", "workspace")
    search_fields = ("user__username", "workspace__slug")
    list_select_related = ("user", "workspace")
    raw_id_fields = ("user",)


@admin.register(AuditEvent)
class AuditEventAdmin(WorkspaceScopedAdmin):
    """The operator audit trail, read-only for everyone."""

    list_display = ("created_at", "workspace", "actor_username", "action", "target_type", "target_id", "target_repr")
    list_filter = ("workspace", "action", "target_type")
    search_fields = ("actor_username", "target_id", "action")
    list_select_related = ("workspace",)
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "created_at",
        "workspace",
        "actor",
        "actor_username",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "detail",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
