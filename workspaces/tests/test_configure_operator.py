"""manage.py configure_operator: staff user, never a superuser, memberships, role groups; bad input changes nothing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from workspaces.admin_scoping import ROLE_GROUP_NAMES
from workspaces.models import Membership, Role
from workspaces.tests.scoping_helpers import db_snapshot

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())


@pytest.fixture
def stdin(monkeypatch):
    def feed(text: str) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))

    return feed


def test_creates_a_staff_operator_with_memberships_and_the_role_group(workspace, other_workspace, stdin):
    stdin("s3cret-pass-word\n")
    out = run("configure_operator", "dana", "--workspace", "acme", "--workspace", "globex", "--password-stdin")
    assert out["created"] is True and out["is_staff"] is True and out["is_superuser"] is False
    assert out["memberships"] == [
        {"workspace": "acme", "role": "operator"},
        {"workspace": "globex", "role": "operator"},
    ]
    assert out["groups"] == [ROLE_GROUP_NAMES[Role.OPERATOR]]
    user = authenticate(username="dana", password="s3cret-pass-word")
    assert user is not None and user.is_staff and not user.is_superuser
    assert user.has_perm("drafts.change_draft") and not user.has_perm("drafts.delete_draft")
    assert not user.has_perm("auth.view_user")


def test_updates_role_and_removes_memberships(workspace, other_workspace):
    run("configure_operator", "dana", "--workspace", "acme", "--workspace", "globex")
    out = run("configure_operator", "dana", "--workspace", "globex", "--role", "viewer")
    assert out["created"] is False
    assert {m["workspace"]: m["role"] for m in out["memberships"]} == {"acme": "operator", "globex": "viewer"}
    assert sorted(out["groups"]) == sorted(ROLE_GROUP_NAMES.values())
    out = run("configure_operator", "dana", "--workspace", "acme", "--remove")
    assert out["memberships"] == [{"workspace": "globex", "role": "viewer"}]
    assert out["groups"] == [ROLE_GROUP_NAMES[Role.VIEWER]]
    assert out["has_password"] is False  # no --password-stdin: cannot log in until a password is set


@pytest.mark.parametrize(
    ("args", "flag", "says"),
    [
        (["dana", "--workspace", "nope"], "--workspace", "unknown workspace(s): nope"),
        (["dana", "--workspace", "acme", "--workspace", "nope2"], "--workspace", "nope2"),
        (["dana", "--workspace", "acme", "--role", "admin"], "--role", "unknown role 'admin'"),
        (["root", "--workspace", "acme"], "username", "is a superuser"),
        (["dana"], "--workspace", "at least one workspace"),
        (["ghost", "--workspace", "acme", "--remove"], "username", "no user 'ghost'"),
    ],
)
def test_bad_input_names_the_flag_and_changes_nothing(workspace, django_user_model, args, flag, says):
    django_user_model.objects.create_superuser("root", password="pw-0123456789")
    run("configure_operator", "dana", "--workspace", "acme", "--role", "viewer")
    before = db_snapshot()
    groups_before = list(Group.objects.values_list("name", flat=True))
    with pytest.raises(CommandError) as excinfo:
        run("configure_operator", *args)
    message = str(excinfo.value)
    assert "nothing changed" in message and f"{flag}: " in message and says in message
    assert db_snapshot() == before and list(Group.objects.values_list("name", flat=True)) == groups_before


def test_superuser_is_never_changed(workspace, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-0123456789")
    with pytest.raises(CommandError):
        run("configure_operator", "root", "--workspace", "acme", "--role", "viewer")
    root.refresh_from_db()
    assert root.is_superuser and not Membership.objects.filter(user=root).exists()


def test_empty_password_on_stdin_is_refused(workspace, stdin):
    stdin("\n")
    with pytest.raises(CommandError, match="--password-stdin: the password read from stdin is empty"):
        run("configure_operator", "dana", "--workspace", "acme", "--password-stdin")
    assert not Membership.objects.exists()


def test_bad_input_exits_non_zero_in_a_real_process(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=settings.BASE_DIR, env=env, check=True)
    proc = subprocess.run(
        [sys.executable, "manage.py", "configure_operator", "dana", "--workspace", "missing", "--password-stdin"],
        cwd=settings.BASE_DIR,
        env=env,
        input="pw-0123456789\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "--workspace: unknown workspace(s): missing" in proc.stderr
