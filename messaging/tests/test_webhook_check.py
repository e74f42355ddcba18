"""The operators' dry run of a GHL body: the admin page and ``manage.py webhook_check``.

Both show the reading (lead match, channel, text, time, dedupe key) or the precise refusal,
and write nothing: every table keeps its row count, no statement writes, nothing is enqueued.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from messaging.tests.factories import ghl_inbound, iso_ago, post
from workspaces.models import Membership

pytestmark = pytest.mark.django_db

WORKFLOW_BODY = {
    "type": "InboundMessage",
    "locationId": "LOC_ACME_123",
    "contact": {"id": "dry-1", "phone": "+1 415 555 0177", "firstName": "Dee"},
    "message": "Can we talk tomorrow at 10?",
    "dateAdded": "2026-01-02T03:04:05Z",
}
AMBIGUOUS_BODY = {"locationId": "LOC_ACME_123", "contactId": "abc", "contact_id": "xyz", "body": "hi", "phone": "1"}
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|TRUNCATE|CREATE|ALTER|DROP)\b", re.IGNORECASE)


def _row_counts() -> dict[str, int]:
    with connection.cursor() as cursor:
        counts = {}
        for name in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(name)}")
            counts[name] = cursor.fetchone()[0]
        return counts


@contextmanager
def writes_nothing(enqueued, django_capture_on_commit_callbacks):
    before = _row_counts()
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks() as callbacks:
        yield
    writes = [query["sql"] for query in queries.captured_queries if WRITES.match(query["sql"])]
    assert writes == [], writes
    assert _row_counts() == before
    assert callbacks == [] and enqueued.calls == []


def _url(workspace) -> str:
    return reverse("admin:workspaces_workspace_tool", args=[workspace.pk, "webhook-check"])


def test_workspace_change_page_links_to_the_dry_run(admin_client_logged, workspace):
    page = admin_client_logged.get(reverse("admin:workspaces_workspace_change", args=[workspace.pk]))
    assert page.status_code == 200 and _url(workspace) in page.content.decode()
    form = admin_client_logged.get(_url(workspace))
    assert form.status_code == 200 and 'name="body"' in form.content.decode()


def test_dry_run_page_shows_the_reading_and_writes_nothing(
    admin_client_logged, workspace, enqueued, django_capture_on_commit_callbacks
):
    with writes_nothing(enqueued, django_capture_on_commit_callbacks):
        response = admin_client_logged.post(_url(workspace), {"body": json.dumps(WORKFLOW_BODY)})
    assert response.status_code == 200
    rows = dict(response.context["preview"].rows)
    assert response.context["preview"].outcome == "created"
    assert rows["lead"].startswith("new lead")
    assert rows["contact id"] == "dry-1   (from contact.id)"
    assert rows["phone"] == "+14155550177   (from contact.phone)"
    assert rows["channel"] == "sms   (default: sms, the body gives a phone)"
    assert rows["text"] == "Can we talk tomorrow at 10?   (from message)"
    assert rows["time"] == "2026-01-02T03:04:05+00:00   (from dateAdded)"
    assert rows["dedupe key"].startswith("body hash ") and "within ±60 s" in rows["dedupe key"]
    html = response.content.decode()
    assert "Would answer 200 created" in html and "Can we talk tomorrow at 10?" in html


def test_dry_run_page_shows_the_precise_refusal_and_writes_nothing(
    admin_client_logged, workspace, enqueued, django_capture_on_commit_callbacks
):
    with writes_nothing(enqueued, django_capture_on_commit_callbacks):
        response = admin_client_logged.post(_url(workspace), {"body": json.dumps(AMBIGUOUS_BODY)})
        malformed = admin_client_logged.post(_url(workspace), {"body": '{"type": "InboundMessage",'})
    error = "two different contact ids: contactId='abc', contact_id='xyz'; found keys: locationId, contactId"
    assert response.context["preview"].error.startswith(error)
    assert escape(error) in response.content.decode()
    assert (response.context["preview"].status, response.context["preview"].outcome) == (400, "refused")
    assert malformed.context["preview"].error == "body: malformed JSON at line 1 column 27"


def test_dry_run_names_the_other_problems_behind_a_missing_location(
    admin_client_logged, workspace, enqueued, django_capture_on_commit_callbacks
):
    body = {"contactId": "a", "contact": {"id": "b"}, "body": "{{message.body}}"}
    with writes_nothing(enqueued, django_capture_on_commit_callbacks):
        preview = admin_client_logged.post(_url(workspace), {"body": json.dumps(body)}).context["preview"]
    assert preview.error.startswith("no location id: looked for locationId, location.id")
    assert preview.notes[-1] == (
        "with a location, the body would still be refused: two different contact ids: contactId='a', "
        "contact.id='b'; no message text: looked for body, message, message.body, messageBody; "
        "no channel: looked for messageType, message.type, channel (SMS is assumed only when a phone is given); "
        "found keys: contactId, contact.id, body; blank or unrendered merge fields: body"
    )


def test_dry_run_matches_the_existing_lead_and_sees_the_duplicate(
    admin_client_logged, workspace, enqueued, django_capture_on_commit_callbacks
):
    body = ghl_inbound(contactId="known-1", messageId="m-known", dateAdded=iso_ago(minutes=1))
    stored = post(Client(), "ghl", body).json()
    enqueued.calls.clear()
    with writes_nothing(enqueued, django_capture_on_commit_callbacks):
        response = admin_client_logged.post(_url(workspace), {"body": json.dumps(body)})
    preview = response.context["preview"]
    rows = dict(preview.rows)
    assert preview.outcome == "duplicate" and rows["duplicate of"] == f"message #{stored['message_id']}"
    assert (
        rows["lead"].startswith(f"existing lead #{stored['lead_id']} ") and "matched by GHL contact id" in rows["lead"]
    )
    assert rows["dedupe key"] == "GHL message id m-known (unique in the workspace)"
    assert rows["idempotency key"] == "message:m-known"
    assert rows["shape"] == "marketplace event (strict)"


def test_dry_run_page_needs_the_change_permission_on_workspaces(django_user_model, workspace):
    staff = django_user_model.objects.create_user("staff", "s@example.com", "pw-123456789", is_staff=True)
    client = Client()
    client.force_login(staff)
    # Not a member of the workspace: it does not exist for this user (tenant scoping).
    assert client.get(_url(workspace)).status_code == 404
    Membership.objects.create(user=staff, workspace=workspace, role="operator")
    assert client.get(_url(workspace)).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="change_workspace"))
    assert client.get(_url(workspace)).status_code == 200
    anonymous = Client().get(_url(workspace))
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_dry_run_page_of_an_unknown_workspace_or_tool(admin_client_logged, workspace):
    def url(workspace_id, tool):
        return reverse("admin:workspaces_workspace_tool", args=[workspace_id, tool])

    assert admin_client_logged.get(url(workspace.pk + 1000, "webhook-check")).status_code == 302  # "does not exist"
    assert admin_client_logged.get(url(workspace.pk, "nope")).status_code == 404


def test_webhook_check_command_prints_the_reading_and_writes_nothing(
    workspace, enqueued, django_capture_on_commit_callbacks
):
    out = io.StringIO()
    with writes_nothing(enqueued, django_capture_on_commit_callbacks):
        call_command("webhook_check", "acme", stdin=io.StringIO(json.dumps(WORKFLOW_BODY)), stdout=out)
    text = out.getvalue()
    assert "would answer: 200 created" in text
    assert re.search(r"text\s+Can we talk tomorrow at 10\?   \(from message\)", text)
    assert re.search(r"lead\s+new lead", text) and re.search(r"dedupe key\s+body hash", text)


def test_webhook_check_command_refusal_exits_non_zero_and_writes_nothing(
    workspace, enqueued, django_capture_on_commit_callbacks
):
    out = io.StringIO()
    body = {"locationId": "LOC_ACME_123", "contactId": "{{contact.id}}", "body": "hi"}
    with writes_nothing(enqueued, django_capture_on_commit_callbacks), pytest.raises(CommandError) as refused:
        call_command("webhook_check", "acme", "--json", stdin=io.StringIO(json.dumps(body)), stdout=out)
    assert refused.value.returncode == 1
    result = json.loads(out.getvalue())
    assert (result["status"], result["outcome"]) == (400, "refused")
    assert result["error"].startswith("no contact: looked for contactId, contact_id, contact.id, contact.contactId")
    assert "blank or unrendered merge fields: contactId" in result["error"]
    assert str(refused.value).endswith(result["error"])


def test_webhook_check_command_unknown_workspace(db):
    with pytest.raises(CommandError, match="no workspace 'nope'"):
        call_command("webhook_check", "nope", stdin=io.StringIO("{}"))
