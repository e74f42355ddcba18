"""Design rule: every query on tenant data filters by workspace (no query crosses tenants).

Runs the webhook, sweeper, enqueue and reprocess paths and inspects every SQL
statement that touches a tenant table (including the plain-SQL lead rollup).
"""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from kombu.exceptions import OperationalError

from messaging.models import WebhookEvent
from messaging.services import broker_health, message_sweep_unprocessed, webhook_event_reprocess
from messaging.tests.factories import emailbison, ghl_custom, ghl_inbound, iso_ago, post

pytestmark = pytest.mark.django_db

TENANT_TABLES = ("leads_lead", "messaging_message", "messaging_webhookevent", "drafts_draft")
_TABLE = re.compile(r'"?(' + "|".join(TENANT_TABLES) + r')"?')


def _unscoped(queries) -> list[str]:
    return [q["sql"] for q in queries if _TABLE.search(q["sql"]) and "workspace_id" not in q["sql"]]


def test_every_query_on_tenant_tables_filters_by_workspace(
    workspace, other_workspace, enqueued, django_capture_on_commit_callbacks
):
    client = Client()
    with CaptureQueriesContext(connection) as captured, django_capture_on_commit_callbacks(execute=True):
        marketplace = ghl_inbound()
        post(client, "ghl", marketplace)
        post(client, "ghl", marketplace)  # duplicate
        post(client, "ghl", ghl_custom())
        post(client, "ghl", ghl_custom(date_created=iso_ago(minutes=3, seconds=-30)))  # body-hash duplicate
        post(client, "ghl", ghl_custom(contact_id="", email="new@example.com", message={"body": "other"}))
        replied = emailbison("LEAD_REPLIED")
        post(client, "emailbison", replied)
        post(client, "emailbison", {"event": {**replied["event"], "type": "LEAD_INTERESTED"}, "data": replied["data"]})
        post(client, "emailbison", emailbison("EMAIL_SENT"))
        post(client, "emailbison", emailbison("LEAD_UNSUBSCRIBED"))
        post(client, "ghl", ghl_inbound(contactId=None))  # rejected
        enqueued.fail_with = OperationalError("down")
        post(client, "ghl", ghl_inbound())
        enqueued.fail_with = None
        broker_health.reset()
        event = WebhookEvent.objects.filter(workspace=workspace, status="processed").first()
        webhook_event_reprocess(event_id=event.pk, workspace_id=workspace.pk)
        message_sweep_unprocessed(grace_s=0)
    assert len(captured.captured_queries) > 30
    assert _unscoped(captured.captured_queries) == []
