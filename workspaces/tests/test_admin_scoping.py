"""The whole admin is tenant-scoped, proven by enumeration: every registered ModelAdmin, every
action, inline, autocomplete and custom admin URL, so an admin added later is covered too.

Workspace A and B each get one row of every scoped model (strings carry the markers ZZA / ZZB).
An operator of A must see no B data anywhere, get 404 on B's objects and change nothing with
B's ids; a viewer of A can change nothing at all.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import Http404
from django.test import Client, RequestFactory
from django.urls import path, reverse

from workspaces.admin_scoping import WorkspaceScopedAdmin, WorkspaceScopedInline, role_groups_sync
from workspaces.models import AuditEvent, Membership, Role, Workspace
from workspaces.tests.scoping_helpers import custom_admin_urls, db_snapshot, object_for, scoped_models, url_params

pytestmark = pytest.mark.django_db

A_MARK, B_MARK = "ZZA", "ZZB"

# Admins a non-superuser never gets (no role grants their permissions): Django's users and
# groups, the celery-beat schedules. Anything else must be a WorkspaceScopedAdmin.
GLOBAL_APPS = {"auth", "django_celery_beat"}


@pytest.fixture
def tenants(django_user_model):
    a = Workspace.objects.create(slug="zza-acme", name=f"{A_MARK} Acme")
    b = Workspace.objects.create(slug="zzb-globex", name=f"{B_MARK} Globex")
    groups = role_groups_sync()
    users = {}
    for name, workspace, role in (
        ("op-a", a, Role.OPERATOR),
        ("viewer-a", a, Role.VIEWER),
        ("op-b", b, Role.OPERATOR),
    ):
        user = django_user_model.objects.create_user(name, password="pw-0123456789", is_staff=True)
        Membership.objects.create(user=user, workspace=workspace, role=role)
        user.groups.add(groups[role])
        users[name] = user
    superuser = django_user_model.objects.create_superuser("root", password="pw-0123456789")
    objects = {"A": {}, "B": {}}
    for label, workspace, user in (("A", a, users["op-a"]), ("B", b, users["op-b"])):
        made = {}
        for model in scoped_models():
            objects[label][model] = object_for(model, workspace=workspace, marker=f"ZZ{label}", user=user, made=made)
        AuditEvent.objects.create(workspace=workspace, actor_username=f"ZZ{label}-actor", action="seed")
    return {"a": a, "b": b, "users": users, "superuser": superuser, "objects": objects}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _text(response) -> str:
    return response.content.decode("utf-8", errors="replace")


def _b_data_in(text: str, tenants) -> list[str]:
    """What of B's shows in ``text``: marked strings, B's slug, links to B's objects."""
    found = [s for s in (B_MARK, "zzb-globex") if s in text]
    for model, obj in tenants["objects"]["B"].items():
        if model is not Workspace and _url(model, "change", obj.pk) in text:
            found.append(f"link to B's {model._meta.label}")
    return found


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _superuser_actions(model_admin, superuser) -> list[str]:
    request = RequestFactory().get("/")
    request.user = superuser
    return list(model_admin.get_actions(request))


def test_every_registered_admin_is_scoped_or_global():
    unscoped = [
        f"{m._meta.label}: {type(ma).__name__}"
        for m, ma in admin.site._registry.items()
        if not isinstance(ma, WorkspaceScopedAdmin) and m._meta.app_label not in GLOBAL_APPS
    ]
    assert unscoped == [], "every Leadline ModelAdmin must extend WorkspaceScopedAdmin"


def test_every_inline_is_scoped(tenants):
    request = RequestFactory().get("/")
    request.user = tenants["superuser"]
    for model, ma in admin.site._registry.items():
        if model._meta.app_label in GLOBAL_APPS:
            continue
        for inline in ma.get_inline_instances(request, tenants["objects"]["A"].get(model)):
            assert isinstance(inline, WorkspaceScopedInline), f"{type(inline).__name__} on {model._meta.label}"


def test_role_groups_cover_every_scoped_model_and_nothing_global(tenants):
    groups = role_groups_sync()
    for role, group in groups.items():
        labels = {p.content_type.app_label for p in group.permissions.select_related("content_type")}
        assert not labels & GLOBAL_APPS, role
    viewer = set(groups[Role.VIEWER].permissions.values_list("codename", flat=True))
    assert all(code.startswith("view_") for code in viewer)
    operator = set(groups[Role.OPERATOR].permissions.values_list("codename", flat=True))
    assert {"change_draft", "change_integrationerror", "view_message"} <= operator
    assert not any(code.startswith(("delete_", "add_")) for code in operator)


def test_operator_of_a_sees_own_data(tenants):
    """Positive control: the markers do show up when the data is in scope."""
    client = _client(tenants["users"]["op-a"])
    for model in scoped_models():
        ma = admin.site._registry[model]
        if not ma.viewer_permissions and not ma.operator_permissions:
            continue
        obj = tenants["objects"]["A"][model]
        response = client.get(_url(model, "change", obj.pk))
        assert response.status_code == 200, model._meta.label
        assert _b_data_in(_text(response), tenants) == [], f"{model._meta.label}: B in A's form (choices?)"
        listing = client.get(_url(model, "changelist"))
        assert listing.status_code == 200 and _url(model, "change", obj.pk) in _text(listing), model._meta.label
    # Inlines on A's workspace page (open integration errors) are shown to A's operator.
    error_model = next(m for m in scoped_models() if m._meta.label_lower == "workspaces.integrationerror")
    page = _text(client.get(_url(Workspace, "change", tenants["a"].pk)))
    assert tenants["objects"]["A"][error_model].message in page


def test_operator_of_a_gets_nothing_of_b(tenants):
    client = _client(tenants["users"]["op-a"])
    b_objects = tenants["objects"]["B"]
    before = db_snapshot()
    checked = []
    for model, ma in admin.site._registry.items():
        changelist = _url(model, "changelist")
        for query in ("", "?q=Globex", f"?workspace__id__exact={tenants['b'].pk}", "?_popup=1&_to_field=id"):
            response = client.get(changelist + query)
            assert response.status_code in (200, 302, 403), (model, query, response.status_code)
            assert _b_data_in(_text(response), tenants) == [], f"{model._meta.label} changelist{query}"
        if model not in b_objects:
            continue  # a global admin: no B rows of its own
        obj = b_objects[model]
        for view in ("change", "delete", "history"):
            url = _url(model, view, obj.pk)
            response = client.get(url)
            assert response.status_code in (403, 404), (model._meta.label, view, response.status_code)
            assert _b_data_in(_text(response), tenants) == []
        for url, data in ((_url(model, "change", obj.pk), {}), (_url(model, "delete", obj.pk), {"post": "yes"})):
            response = client.post(url, data)
            assert response.status_code in (403, 404), (url, response.status_code)
        for action in _superuser_actions(ma, tenants["superuser"]):
            data = {"action": action, ACTION_CHECKBOX_NAME: [obj.pk], "index": 0, "post": "yes"}
            response = client.post(changelist, data, follow=True)
            assert _b_data_in(_text(response), tenants) == [], f"{model._meta.label} action {action}"
            checked.append(f"{model._meta.label_lower}:{action}")
    assert db_snapshot() == before, "a request of A's operator changed the database"
    assert {"drafts.draft:approve_and_send", "messaging.webhookevent:reprocess"} <= set(checked)


def test_objects_of_b_answer_404_like_missing_ones(tenants):
    client = _client(tenants["users"]["op-a"])
    draft_model = next(m for m in scoped_models() if m._meta.label_lower == "drafts.draft")
    b_draft = tenants["objects"]["B"][draft_model]
    assert client.get(_url(draft_model, "change", b_draft.pk)).status_code == 404
    assert client.get(_url(draft_model, "change", 987654321)).status_code == 404
    # The superuser still gets everything.
    root = _client(tenants["superuser"])
    assert root.get(_url(draft_model, "change", b_draft.pk)).status_code == 200
    assert _b_data_in(_text(root.get(_url(draft_model, "changelist"))), tenants)


def test_workspace_filter_lists_only_own_workspaces(tenants):
    client = _client(tenants["users"]["op-a"])
    for model, ma in admin.site._registry.items():
        if not isinstance(ma, WorkspaceScopedAdmin) or "workspace" not in ma.list_filter:
            continue
        response = client.get(_url(model, "changelist"))
        if response.status_code == 403:
            continue
        text = _text(response)
        assert "zzb-globex" not in text and tenants["b"].name not in text, model._meta.label


def test_autocomplete_never_returns_b(tenants):
    client = _client(tenants["users"]["op-a"])
    asked = 0
    for source, source_admin in admin.site._registry.items():
        for field in source._meta.get_fields():
            if not (field.is_relation and field.concrete and (field.many_to_one or field.one_to_one)):
                continue
            target_admin = admin.site._registry.get(field.remote_field.model)
            if target_admin is None or not target_admin.search_fields:
                continue
            for term in ("", B_MARK, "zzb"):
                params = {
                    "app_label": source._meta.app_label,
                    "model_name": source._meta.model_name,
                    "field_name": field.name,
                    "term": term,
                }
                response = client.get(reverse("admin:autocomplete"), params)
                asked += 1
                assert _b_data_in(_text(response), tenants) == [], params
    assert asked > 0


def test_custom_admin_views_never_show_or_change_b(tenants):
    """Every admin URL that is not Django's own (custom views on a ModelAdmin or the site)."""
    client = _client(tenants["users"]["op-a"])
    b_objects = tenants["objects"]["B"]
    before = db_snapshot()
    for pattern, model in custom_admin_urls():
        assert pattern.name, f"custom admin URL {pattern.pattern} needs a name"
        target = b_objects.get(model, tenants["b"]) if model is not None else tenants["b"]
        kwargs = {p: (target.slug if "slug" in p else target.pk) for p in url_params(pattern)}
        url = reverse(f"admin:{pattern.name}", kwargs=kwargs)
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code in (200, 302, 400, 403, 404, 405), (url, response.status_code)
            assert _b_data_in(_text(response), tenants) == [], url
            if model is not None and kwargs:
                assert response.status_code in (302, 403, 404, 405), f"{url}: B's object must not be served"
    assert db_snapshot() == before


def test_viewer_gets_no_action_and_changes_nothing(tenants):
    client = _client(tenants["users"]["viewer-a"])
    a_objects = tenants["objects"]["A"]
    before = db_snapshot()
    for model, ma in admin.site._registry.items():
        changelist = _url(model, "changelist")
        listing = client.get(changelist)
        if model not in a_objects:
            assert listing.status_code == 403, model._meta.label
            continue
        if listing.status_code == 403:
            continue  # no role gets this model (memberships)
        assert listing.status_code == 200
        assert 'name="action"' not in _text(listing), f"{model._meta.label}: a viewer sees actions"
        obj = a_objects[model]
        page = client.get(_url(model, "change", obj.pk))
        assert page.status_code == 200
        assert not page.context["has_change_permission"] and not page.context["has_delete_permission"]
        assert "<textarea" not in _text(page) and 'name="_save"' not in _text(page), model._meta.label
        for action in _superuser_actions(ma, tenants["superuser"]):
            data = {"action": action, ACTION_CHECKBOX_NAME: [obj.pk], "index": 0, "post": "yes"}
            client.post(changelist, data)
        assert client.post(_url(model, "change", obj.pk), {}).status_code == 403
        assert client.post(_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert db_snapshot() == before


def test_viewer_page_shows_no_credentials(tenants):
    tenants["a"].emailbison_token = "eb-secret-token-abcdef-7777"
    tenants["a"].save()
    page = _client(tenants["users"]["viewer-a"]).get(_url(Workspace, "change", tenants["a"].pk))
    assert page.status_code == 200
    assert "eb-secret-token-abcdef" not in _text(page) and "7777" in _text(page)  # the mask only


def test_mixed_roles_act_only_where_operator(tenants, django_user_model):
    """Operator of A and viewer of B: an action on both acts on A's row only."""
    user = tenants["users"]["op-a"]
    Membership.objects.create(user=user, workspace=tenants["b"], role=Role.VIEWER)
    error_model = next(m for m in scoped_models() if m._meta.label_lower == "workspaces.integrationerror")
    a_err, b_err = tenants["objects"]["A"][error_model], tenants["objects"]["B"][error_model]
    client = _client(user)
    assert client.get(_url(error_model, "change", b_err.pk)).status_code == 200  # B is visible now
    client.post(
        _url(error_model, "changelist"),
        {"action": "mark_resolved", ACTION_CHECKBOX_NAME: [a_err.pk, b_err.pk], "index": 0},
    )
    a_err.refresh_from_db()
    b_err.refresh_from_db()
    assert a_err.resolved_at is not None and b_err.resolved_at is None


def test_operator_actions_are_audited_with_their_workspace(tenants):
    user = tenants["users"]["op-a"]
    error_model = next(m for m in scoped_models() if m._meta.label_lower == "workspaces.integrationerror")
    a_err = tenants["objects"]["A"][error_model]
    client = _client(user)
    client.post(
        _url(error_model, "changelist"), {"action": "mark_resolved", ACTION_CHECKBOX_NAME: [a_err.pk], "index": 0}
    )
    event = AuditEvent.objects.get(action="mark_resolved")
    assert (event.workspace_id, event.actor_id, event.actor_username) == (tenants["a"].pk, user.pk, "op-a")
    assert (event.target_type, event.target_id) == ("workspaces.integrationerror", str(a_err.pk))
    # Readable in the admin, by A's operator, and not by B's.
    listing = _client(user).get(_url(AuditEvent, "changelist"))
    assert "mark_resolved" in _text(listing)
    other = _client(tenants["users"]["op-b"]).get(_url(AuditEvent, "changelist"))
    assert "mark_resolved" not in _text(other) and "ZZB-actor" in _text(other)


def test_operator_edit_is_audited(tenants):
    lead_model = next(m for m in scoped_models() if m._meta.label_lower == "leads.lead")
    lead = tenants["objects"]["A"][lead_model]
    root = _client(tenants["superuser"])
    form = root.get(_url(lead_model, "change", lead.pk)).context["adminform"].form
    data = {k: ("" if v is None else v) for k, v in form.initial.items() if k in form.fields}
    data.update({"first_name": "Edited", "workspace": tenants["a"].pk, "sms_dnd": ""})
    response = _client(tenants["users"]["op-a"]).post(_url(lead_model, "change", lead.pk), data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    event = AuditEvent.objects.get(action="change", target_id=str(lead.pk))
    assert event.workspace_id == tenants["a"].pk and event.detail["fields"] == ["First name"]


def test_custom_url_enumeration_finds_views_added_later():
    """The enumeration above sees a custom view a later ModelAdmin adds (e.g. a dry-run page)."""
    site = admin.AdminSite(name="probe")

    class ProbeAdmin(WorkspaceScopedAdmin):
        def get_urls(self):
            view = self.admin_site.admin_view(lambda request, object_id: None)
            return [path("<path:object_id>/dry-run/", view, name="workspaces_workspace_dry_run"), *super().get_urls()]

    site.register(Workspace, ProbeAdmin)
    found = [(p.name, model) for p, model in custom_admin_urls(site)]
    assert found == [("workspaces_workspace_dry_run", Workspace)]
    assert url_params(custom_admin_urls(site)[0][0]) == ["object_id"]


def test_get_scoped_object_or_404_for_custom_views(tenants):
    ma = admin.site._registry[Workspace]
    request = RequestFactory().get("/")
    request.user = tenants["users"]["op-a"]
    assert ma.get_scoped_object_or_404(request, tenants["a"].pk) == tenants["a"]
    with pytest.raises(Http404):
        ma.get_scoped_object_or_404(request, tenants["b"].pk)
    request.user = tenants["users"]["viewer-a"]
    with pytest.raises(Http404):
        ma.get_scoped_object_or_404(request, tenants["a"].pk, operable=True)


def test_every_action_of_an_operator_is_audited_with_the_workspace(tenants, django_capture_on_commit_callbacks):
    """approve, reject, regenerate, reprocess, resolve, refresh... and any action added later."""
    user = tenants["users"]["op-a"]
    client = _client(user)
    ran = []
    for model, ma in admin.site._registry.items():
        if model not in tenants["objects"]["A"]:
            continue
        obj = tenants["objects"]["A"][model]
        for action in _superuser_actions(ma, tenants["superuser"]):
            if action == "delete_selected":
                continue  # operators get no delete permission (and deletions are audited as "delete")
            before = AuditEvent.objects.count()
            data = {"action": action, ACTION_CHECKBOX_NAME: [obj.pk], "index": 0}
            client.post(_url(model, "changelist"), data)
            events = list(AuditEvent.objects.order_by("-id")[: AuditEvent.objects.count() - before])
            assert [(e.action, e.workspace_id, e.actor_id, e.target_id) for e in events] == [
                (action, tenants["a"].pk, user.pk, str(obj.pk))
            ], f"{model._meta.label}:{action}"
            ran.append(action)
    assert {"approve_and_send", "reject", "regenerate_drafts", "reprocess", "mark_resolved"} <= set(ran)


def test_raw_id_and_choice_fields_offer_only_the_users_workspaces(tenants):
    request = RequestFactory().get("/")
    request.user = tenants["users"]["op-a"]
    message_admin = next(ma for m, ma in admin.site._registry.items() if m._meta.label_lower == "messaging.message")
    lead_field = message_admin.model._meta.get_field("lead")
    formfield = message_admin.formfield_for_foreignkey(lead_field, request)
    lead_model = lead_field.remote_field.model
    a_lead, b_lead = tenants["objects"]["A"][lead_model], tenants["objects"]["B"][lead_model]
    assert list(formfield.queryset) == [a_lead]
    assert formfield.widget.label_and_url_for_value(b_lead.pk) == ("", "")
    assert formfield.widget.label_and_url_for_value(a_lead.pk)[0] == str(a_lead)
    workspace_field = message_admin.model._meta.get_field("workspace")
    assert list(message_admin.formfield_for_foreignkey(workspace_field, request).queryset) == [tenants["a"]]
