import threading

import pytest
from django.db import connection

from workspaces.models import IntegrationError
from workspaces.services import integration_error_record, integration_error_resolve


@pytest.mark.django_db
def test_repeats_are_grouped_and_resolve_reopens_a_new_row(workspace):
    first = integration_error_record(workspace=workspace, source="ghl", code="rate_limited", message="429 #1")
    again = integration_error_record(workspace=workspace, source="ghl", code="rate_limited", message="429 #2")
    assert again.pk == first.pk and again.count == 2 and again.message == "429 #2"
    assert again.first_seen == first.first_seen and again.last_seen >= first.last_seen

    assert integration_error_resolve(workspace=workspace, source="ghl") == 1
    reopened = integration_error_record(workspace=workspace, source="ghl", code="rate_limited")
    assert reopened.pk != first.pk and reopened.count == 1
    assert IntegrationError.objects.filter(workspace=workspace).count() == 2


@pytest.mark.django_db
def test_messages_and_context_are_redacted(workspace):
    err = integration_error_record(
        workspace=workspace,
        source="ghl",
        code="auth_failed",
        message="401 Authorization: Bearer pit-11111111-2222-3333-4444-555555555555 and my-own-secret-value",
        context={"headers": {"Authorization": "Bearer abcdefghijkl"}, "body": "Hi I want a quote", "status": 401},
        secrets=["my-own-secret-value"],
    )
    assert "pit-1111" not in err.message and "my-own-secret-value" not in err.message
    assert err.context["headers"]["Authorization"] == "[redacted]"
    assert err.context["body"] == "[body omitted]"
    assert err.context["status"] == 401


@pytest.mark.django_db
def test_resolve_is_scoped_to_workspace_and_codes(workspace, other_workspace):
    integration_error_record(workspace=workspace, source="availability", code="booking_page_timeout")
    integration_error_record(workspace=workspace, source="availability", code="auth_failed")
    integration_error_record(workspace=other_workspace, source="availability", code="booking_page_timeout")
    assert integration_error_resolve(workspace=workspace, source="availability", codes=["booking_page_timeout"]) == 1
    open_codes = set(IntegrationError.objects.filter(resolved_at__isnull=True).values_list("workspace__slug", "code"))
    assert open_codes == {("acme", "auth_failed"), ("globex", "booking_page_timeout")}


@pytest.mark.django_db(transaction=True)
def test_concurrent_records_end_in_one_open_row(workspace):
    n = 20
    barrier = threading.Barrier(n)
    errors = []

    def worker():
        try:
            barrier.wait()
            integration_error_record(workspace=workspace.pk, source="ghl", code="rate_limited", message="429")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = IntegrationError.objects.filter(workspace=workspace, resolved_at__isnull=True)
    assert rows.count() == 1 and rows.get().count == n
