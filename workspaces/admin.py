from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
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
    CONFIGURABLE,
    CREDENTIALS,
    GENERAL,
    SENDING,
    SPEED,
    integration_error_resolve,
    token_reentry_errors,
    workspace_configure,
    workspace_validate_changes,
)

CONFIGURABLE_BY_NAME = {field.name: field for field in CONFIGURABLE}


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
        """The submitted settings become ``workspace_changes``, checked by the rules of
        ``workspace_configure`` (which ``WorkspaceAdmin.save_model`` saves them through)."""
        cleaned = super().clean()
        stored = Workspace.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        cleared = set(cleaned.get("clear_secrets") or [])
        changes: dict[str, Any] = {}
        for field in CONFIGURABLE:
            names = [name for name in field.admin_fields if name in self.fields]
            if not names or not (stored is None or any(name in self.changed_data for name in names)):
                continue
            if field.name == "sms_send_window":
                start, end = (cleaned.get(name) for name in names)
                if start is not None and end is not None:
                    changes[field.name] = f"{start.isoformat()}-{end.isoformat()}"
            elif field.name in SECRET_FIELDS:
                # Write-only: a blank submission keeps the stored value; a ticked box clears it.
                if field.name in cleared:
                    changes[field.name] = ""
                elif cleaned.get(field.name):
                    changes[field.name] = cleaned[field.name]
            elif field.name in cleaned:
                changes[field.name] = cleaned[field.name]
        for name in SECRET_FIELDS:
            # What the model instance (and its own validation) holds: never a blank secret.
            cleaned[name] = changes.get(name, getattr(stored, name) if stored else "")
        if not cleaned.get("webhook_secret"):
            cleaned["webhook_secret"] = changes["webhook_secret"] = generate_webhook_secret()
        slug = stored.slug if stored else cleaned.get("slug") or ""
        problems = dict(token_reentry_errors(stored=stored, changes=changes))
        try:
            workspace_validate_changes(slug=slug, changes=changes)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                problems.setdefault(name, "; ".join(messages))
        for name, message in problems.items():
            shown_as = CONFIGURABLE_BY_NAME[name].admin_fields if name in CONFIGURABLE_BY_NAME else (name,)
            form_field = next((f for f in shown_as if f in self.fields), None)
            if form_field is None:
                self.add_error(None, f"{name}: {message}")
            elif form_field not in self.errors:  # the form's own check already said what is wrong
                self.add_error(form_field, message)
        self.workspace_changes = changes
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


# Shown around the configurable settings (``workspaces.services.CONFIGURABLE``) on the page.
_DISPLAY_BEFORE = {GENERAL: ("slug",), CREDENTIALS: ("masked_credentials",)}
_DISPLAY_AFTER = {GENERAL: ("related_links", "webhook_urls", "panels"), CREDENTIALS: ("clear_secrets",)}
_SECTION_DESCRIPTIONS = {
    SENDING: "SMS leave only inside this window, in the lead's local time (quiet hours).",
    SPEED: "How long a lead may wait for our answer, in business minutes (business hours"
    " above); a lead waiting longer raises an SLA breach and, optionally, a note by email or webhook.",
}


def _workspace_fieldsets() -> tuple:
    sections: dict[str, list[str]] = {}
    for field in CONFIGURABLE:
        sections.setdefault(field.section, []).extend(field.admin_fields)
    fieldsets = []
    for section, names in sections.items():
        options: dict[str, Any] = {
            "fields": (*_DISPLAY_BEFORE.get(section, ()), *names, *_DISPLAY_AFTER.get(section, ()))
        }
        if section in _SECTION_DESCRIPTIONS:
            options["description"] = _SECTION_DESCRIPTIONS[section]
        fieldsets.append((None if section == GENERAL else section, options))
    return (*fieldsets, ("Timestamps", {"fields": ("created_at", "updated_at")}))


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
    fieldsets = _workspace_fieldsets()

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        # Read-only pages render field values: never the decrypted credentials (the masks stay).
        hidden = {*SECRET_FIELDS, "clear_secrets"}
        return [(name, {**opts, "fields": [f for f in opts["fields"] if f not in hidden]}) for name, opts in fieldsets]

    def get_readonly_fields(self, request, obj=None):
        # The slug is in the webhook URLs the providers were given: it is set once, at creation.
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "slug") if obj is not None else fields

    def save_model(self, request, obj, form, change):
        """Through ``workspace_configure``, like ``configure_workspace``: one set of rules."""
        workspace, _ = workspace_configure(slug=obj.slug, changes=form.workspace_changes)
        obj.pk = workspace.pk
        obj.refresh_from_db()

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
