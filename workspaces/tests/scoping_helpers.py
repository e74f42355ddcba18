"""Helpers for the admin scoping tests: one object of every scoped model per workspace, built
generically from the model's fields (so a model added later gets rows without new test code),
a database snapshot, and the enumeration of admin URLs."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import uuid

from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import models
from django.urls import URLPattern, URLResolver
from django.utils import timezone

from workspaces.admin_scoping import WorkspaceScopedAdmin
from workspaces.models import Workspace

_seq = itertools.count(1)

# Rows an action would really change if scoping failed (a ready draft can be approved, a failed
# webhook reprocessed, an open error resolved).
FIELD_OVERRIDES = {
    "drafts.draft": {"status": "ready", "channel": "sms", "subject": ""},
    "messaging.webhookevent": {"status": "failed", "body": {}, "headers": {}},
    "messaging.message": {"channel": "sms", "direction": "inbound"},
}


def scoped_models(site=admin.site) -> list[type[models.Model]]:
    return [m for m, ma in site._registry.items() if isinstance(ma, WorkspaceScopedAdmin)]


def _value_for(field: models.Field, *, marker: str, workspace: Workspace, user, made: dict):
    n = next(_seq)
    if isinstance(field, models.ForeignKey | models.OneToOneField):
        target = field.remote_field.model
        if target is Workspace:
            return workspace
        if target is get_user_model():
            return user
        if field.null:
            return None
        return object_for(target, workspace=workspace, marker=marker, user=user, made=made)
    if field.choices:
        return field.default if field.has_default() else field.choices[0][0]
    if isinstance(field, models.EmailField):
        return f"{marker.lower()}{n}@example.com"
    if isinstance(field, models.URLField):
        return f"https://example.com/{marker.lower()}/{n}"
    if isinstance(field, models.CharField | models.TextField):
        return f"{marker}-{field.name}-{n}"[: field.max_length or 200]
    if isinstance(field, models.JSONField):
        return field.get_default() if field.has_default() else {}
    if field.has_default() or field.null:
        return field.get_default()
    if isinstance(field, models.DateTimeField):
        return timezone.now()
    if isinstance(field, models.DateField):
        return timezone.now().date()
    if isinstance(field, models.TimeField):
        return dt.time(9, 0)
    if isinstance(field, models.BooleanField):
        return False
    if isinstance(field, models.DecimalField):
        return decimal.Decimal(1)
    if isinstance(field, models.IntegerField | models.FloatField):
        return 1
    if isinstance(field, models.UUIDField):
        return uuid.uuid4()
    raise AssertionError(f"scoping_helpers cannot fill {field.model._meta.label}.{field.name}: add an override")


def object_for(model, *, workspace: Workspace, marker: str, user, made: dict) -> models.Model:
    """One row of ``model`` in ``workspace`` (created once per workspace and model)."""
    if model is Workspace:
        return workspace
    key = (model, workspace.pk)
    if key in made:
        return made[key]
    existing = model._default_manager.filter(workspace=workspace).first() if _has_workspace_fk(model) else None
    if existing is not None:
        made[key] = existing
        return existing
    overrides = FIELD_OVERRIDES.get(model._meta.label_lower, {})
    values = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            continue
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        values[field.name] = _value_for(field, marker=marker, workspace=workspace, user=user, made=made)
    made[key] = model._default_manager.create(**values)
    return made[key]


def _has_workspace_fk(model) -> bool:
    try:
        field = model._meta.get_field("workspace")
    except Exception:
        return False
    return field.is_relation and field.remote_field.model is Workspace


def db_snapshot() -> dict[str, list[dict]]:
    """Every row of every table (sessions and login times aside): what no refused request may change."""
    snapshot = {}
    user_model = get_user_model()
    for model in apps.get_models():
        if model is Session:
            continue
        rows = list(model._default_manager.order_by("pk").values())
        if model is user_model:
            for row in rows:
                row.pop("last_login", None)
        snapshot[model._meta.label_lower] = rows
    return snapshot


STANDARD_MODEL_VIEWS = {"changelist", "add", "history", "delete", "change"}
STANDARD_SITE_VIEWS = {
    "index",
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "autocomplete",
    "jsi18n",
    "view_on_site",
    "app_list",
}


def _walk(patterns, prefix: str = ""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p


def custom_admin_urls(site=admin.site) -> list[tuple[URLPattern, type[models.Model] | None]]:
    """(pattern, its model or None) of every admin URL that is not one of Django's own views."""
    found = []
    model_routes = []
    for model, model_admin in site._registry.items():
        info = f"{model._meta.app_label}_{model._meta.model_name}_"
        model_routes.append(f"{model._meta.app_label}/{model._meta.model_name}/")
        for route, pattern in _walk(model_admin.get_urls()):
            name = pattern.name or ""
            if name.startswith(info) and name[len(info) :] in STANDARD_MODEL_VIEWS:
                continue
            if not name and route.startswith("<path:object_id>"):
                continue  # Django's redirect of old-style change URLs
            found.append((pattern, model))
    for route, pattern in _walk(site.get_urls()):
        if pattern.name in STANDARD_SITE_VIEWS or route.startswith(tuple(model_routes)):
            continue
        if "(?P<app_label>" in route or "(?P<url>.*)" in route or route.startswith("r/"):
            continue  # the app index, the final catch-all and Django's shortcut redirect
        found.append((pattern, None))
    return found


def url_params(pattern: URLPattern) -> list[str]:
    return list(pattern.pattern.regex.groupindex)
