"""Tenant scoping for the whole admin: one base class every ModelAdmin (and inline) uses.

A superuser sees and does everything. Any other staff user sees only the
objects of the workspaces they are a member of (``workspaces.Membership``)
and acts only on those where their role is ``operator``; a ``viewer`` reads.
Objects of other workspaces answer 404, as if they did not exist.

Covered by one class, :class:`WorkspaceScopedAdmin` (``workspace_field`` is
the ORM path from the model to its workspace; ``None`` for Workspace itself):
changelists, change/delete/history views (404), actions (the queryset is
narrowed to the operator's workspaces, viewers get none, each run is
audited), list-filter choices of relations (only values present in the
scoped queryset), foreign-key choices and raw-id labels, autocomplete (Django
asks the target admin's ``get_queryset``), inlines (:class:`WorkspaceScopedInline`).
``workspaces/tests/test_admin_scoping.py`` enumerates every registered admin
and admin URL, so a new admin that does not use this class fails the tests.
Custom admin views resolve their objects through :meth:`get_scoped_object_or_404`.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib import admin
from django.contrib.admin.filters import RelatedOnlyFieldListFilter
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.contrib.auth import get_permission_codename
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import models
from django.http import Http404

from workspaces.models import Role, Workspace
from workspaces.selectors import member_workspace_ids
from workspaces.services import audit_record_many


def _is_superuser(request) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_superuser)


def visible_workspace_ids(request) -> set[int]:
    return member_workspace_ids(user=request.user)


def operable_workspace_ids(request) -> set[int]:
    return member_workspace_ids(user=request.user, roles=(Role.OPERATOR,))


def request_workspace_ids(request, *, operable: bool = False) -> set[int]:
    """The workspaces this request's user sees (``operable``: acts on): every workspace for a
    superuser, else their memberships. For custom admin views (the inbox)."""
    if _is_superuser(request):
        return set(Workspace.objects.values_list("id", flat=True))
    return operable_workspace_ids(request) if operable else visible_workspace_ids(request)


def _path_filter(workspace_field: str | None, ids) -> models.Q:
    return models.Q(pk__in=ids) if workspace_field is None else models.Q(**{f"{workspace_field}__in": ids})


def workspace_id_of(obj: models.Model, workspace_field: str | None) -> int | None:
    """The id of the workspace ``obj`` belongs to, following ``workspace_field``."""
    if workspace_field is None:
        return obj.pk
    *hops, last = workspace_field.split("__")
    for hop in hops:
        obj = getattr(obj, hop, None)
        if obj is None:
            return None
    return getattr(obj, f"{last}_id", None)


class _ScopedRawIdWidget(ForeignKeyRawIdWidget):
    """Shows the label of the chosen object only when it is inside the user's scope."""

    def __init__(self, rel, admin_site, *, queryset, **kwargs):
        self.scoped_queryset = queryset
        super().__init__(rel, admin_site, **kwargs)

    def label_and_url_for_value(self, value):
        key = self.rel.get_related_field().name
        try:
            visible = self.scoped_queryset.filter(**{key: value}).exists()
        except (ValueError, TypeError, ValidationError):
            return "", ""
        return super().label_and_url_for_value(value) if visible else ("", "")


class _ScopingMixin:
    """What ModelAdmins and inlines share: the queryset filter and the choices of related fields."""

    workspace_field: str | None = "workspace"

    def scope_queryset(self, request, queryset, *, operable: bool = False):
        if _is_superuser(request):
            return queryset
        ids = operable_workspace_ids(request) if operable else visible_workspace_ids(request)
        return queryset.filter(_path_filter(self.workspace_field, ids))

    def get_queryset(self, request):
        return self.scope_queryset(request, super().get_queryset(request))

    def _related_choices(self, request, related_model):
        """The queryset of choices for a relation to ``related_model``, scoped like its own admin."""
        queryset = related_model._default_manager.all()
        if _is_superuser(request):
            return queryset
        if related_model is Workspace:
            return queryset.filter(pk__in=operable_workspace_ids(request))
        related_admin = self.admin_site._registry.get(related_model)
        if isinstance(related_admin, WorkspaceScopedAdmin):
            return related_admin.scope_queryset(request, queryset, operable=True)
        return queryset.none()  # an unscoped model is never offered to a non-superuser

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not _is_superuser(request):
            queryset = self._related_choices(request, db_field.remote_field.model)
            kwargs["queryset"] = queryset
            if db_field.name in self.raw_id_fields:
                kwargs["widget"] = _ScopedRawIdWidget(
                    db_field.remote_field, self.admin_site, queryset=queryset, using=kwargs.get("using")
                )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if not _is_superuser(request):
            kwargs["queryset"] = self._related_choices(request, db_field.remote_field.model)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    # -- permissions per object (the object's workspace must be the user's) ----------

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self._in_scope(request, obj, operable=False)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._may_operate(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._may_operate(request, obj)

    def has_add_permission(self, request, *args):
        # ModelAdmin: (request); inlines: (request, parent obj).
        return super().has_add_permission(request, *args) and self._may_operate(request, args[0] if args else None)

    def _in_scope(self, request, obj, *, operable: bool) -> bool:
        if _is_superuser(request) or obj is None:
            return True
        ids = operable_workspace_ids(request) if operable else visible_workspace_ids(request)
        return workspace_id_of(obj, self.checked_workspace_field) in ids

    def _may_operate(self, request, obj=None) -> bool:
        """A non-superuser acts only as an operator: of ``obj``'s workspace, or of any when no obj."""
        if _is_superuser(request):
            return True
        if obj is not None:
            return self._in_scope(request, obj, operable=True)
        return bool(operable_workspace_ids(request))


class WorkspaceScopedInline(_ScopingMixin):
    """Mix into every inline (before the Django inline class): same scope, viewers read only.

    Django passes the *parent* object to an inline's permission checks:
    ``parent_workspace_field`` leads from it to the workspace (``None``: the parent is the workspace).
    """

    parent_workspace_field: str | None = None

    @property
    def checked_workspace_field(self) -> str | None:
        return self.parent_workspace_field


class WorkspaceScopedAdmin(_ScopingMixin, admin.ModelAdmin):
    """Base class of every Leadline ModelAdmin (see the module docstring).

    ``operator_permissions`` / ``viewer_permissions``: the model permissions each
    role's group gets; ``configure_operator`` builds the groups from these.
    """

    operator_permissions: tuple[str, ...] = ("view",)
    viewer_permissions: tuple[str, ...] = ("view",)

    @property
    def checked_workspace_field(self) -> str | None:
        return self.workspace_field

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects to the index with "does not exist"; for a non-superuser an object of
        # another workspace must be indistinguishable from a missing one: 404 for both.
        if _is_superuser(request):
            return super()._get_obj_does_not_exist_redirect(request, opts, object_id)
        raise Http404(f"{opts.verbose_name} not found")

    def get_scoped_object_or_404(self, request, object_id: Any, *, operable: bool = False):
        """For custom admin views: the object if it is in the user's scope, else 404."""
        queryset = self.scope_queryset(request, self.model._default_manager.all(), operable=operable)
        try:
            return queryset.get(pk=object_id)
        except (self.model.DoesNotExist, ValueError, TypeError):
            raise Http404(f"{self.opts.verbose_name} not found") from None

    # -- list filters ------------------------------------------------------------

    def get_list_filter(self, request):
        filters = super().get_list_filter(request)
        if _is_superuser(request):
            return filters
        scoped = []
        for item in filters:
            if isinstance(item, str) and get_fields_from_path(self.model, item)[-1].is_relation:
                # Only values present in the scoped queryset (the workspace filter lists own workspaces).
                item = (item, RelatedOnlyFieldListFilter)
            scoped.append(item)
        return scoped

    # -- actions ------------------------------------------------------------------

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not self._may_operate(request):
            return {}  # a viewer gets no action
        return {
            name: (self._audited(func, name), name, description) for name, (func, _, description) in actions.items()
        }

    def response_action(self, request, queryset):
        # A user who operates some workspaces and views others acts only on the former.
        return super().response_action(request, self.scope_queryset(request, queryset, operable=True))

    def _audited(self, func, name: str):
        @functools.wraps(func)
        def run(modeladmin, request, queryset):
            targets = []
            if name != "delete_selected" or request.POST.get("post"):
                # The audit needs each row and its workspace, not the changelist's joins (a
                # hundred drafts would each load and decrypt their workspace's credentials).
                hops = (self.workspace_field or "").rpartition("__")[0]
                lean = queryset.select_related(None)
                targets = list(lean.select_related(hops) if hops else lean)
            result = func(modeladmin, request, queryset)
            if name != "delete_selected":  # deletions are audited by log_deletions
                self._audit(request, name, targets)
            return result

        return run

    # -- audit (next to Django's LogEntry) -------------------------------------------

    def _audit(self, request, action: str, objects, detail: dict | None = None) -> None:
        audit_record_many(
            actor=request.user,
            action=action,
            targets=[(workspace_id_of(obj, self.workspace_field), obj) for obj in objects],
            detail=detail,
        )

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        self._audit(request, "add", [obj])
        return entry

    def log_change(self, request, obj, message):
        entry = super().log_change(request, obj, message)
        if entry is not None:
            changed = sorted({f for part in message or [] for f in part.get("changed", {}).get("fields", [])})
            self._audit(request, "change", [obj], {"fields": changed} if changed else None)
        return entry

    def log_deletions(self, request, queryset):
        self._audit(request, "delete", list(queryset))
        return super().log_deletions(request, queryset)


# -- role groups ----------------------------------------------------------------------

ROLE_GROUP_NAMES = {Role.OPERATOR: "Leadline operators", Role.VIEWER: "Leadline viewers"}


def role_permissions(site: admin.AdminSite | None = None) -> dict[str, set[tuple[str, str]]]:
    """{role: {(app_label, codename)}} from every scoped admin's ``operator_permissions`` /
    ``viewer_permissions``; unscoped admins (users, beat schedules) give no role anything."""
    site = site or admin.site
    wanted: dict[str, set[tuple[str, str]]] = {role: set() for role in Role.values}
    for model, model_admin in site._registry.items():
        if not isinstance(model_admin, WorkspaceScopedAdmin):
            continue
        for role, actions in (
            (Role.OPERATOR, model_admin.operator_permissions),
            (Role.VIEWER, model_admin.viewer_permissions),
        ):
            for action in actions:
                wanted[role].add((model._meta.app_label, get_permission_codename(action, model._meta)))
    return wanted


def role_groups_sync(site: admin.AdminSite | None = None) -> dict[str, Group]:
    """Create or update one auth Group per role holding exactly that role's model permissions."""
    groups = {}
    for role, wanted in role_permissions(site).items():
        group, _ = Group.objects.get_or_create(name=ROLE_GROUP_NAMES[role])
        perms = [
            p
            for p in Permission.objects.filter(codename__in={c for _, c in wanted}).select_related("content_type")
            if (p.content_type.app_label, p.codename) in wanted
        ]
        group.permissions.set(perms)
        groups[role] = group
    return groups
