"""Hypothesis fuzz of both endpoints: no input yields a 5xx or a partial row."""

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leads.models import Lead
from messaging.models import Message, WebhookEvent
from messaging.tests.factories import emailbison, ghl_custom, ghl_inbound, post

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.large_base_example],
)

# Values that broke naive parsers: digits int() refuses (superscripts, > 4300 digits), non-ASCII
# decimal digits, huge numbers, near-ISO dates. Dates, ids and timestamps all get these.
tricky_strings = (
    st.text(alphabet=st.characters(categories=("Nd", "No")), min_size=1, max_size=20)
    | st.from_regex(r"\d{4400}", fullmatch=True)
    | st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})?", fullmatch=True
    )
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**15, max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | tricky_strings
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _mutate(base: dict, path: list[str], value):
    """Set (or delete, when value is the sentinel) a nested key of a copy of ``base``."""
    doc = json.loads(json.dumps(base))
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is _DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()

GHL_PATHS = [
    ["type"], ["locationId"], ["contactId"], ["messageId"], ["body"], ["messageType"], ["direction"],
    ["dateAdded"], ["subject"], ["from"], ["to"], ["webhookId"], ["timestamp"], ["attachments"],
]  # fmt: skip
CUSTOM_PATHS = [
    ["contact_id"], ["email"], ["phone"], ["first_name"], ["full_name"], ["location"], ["location", "id"],
    ["message"], ["message", "type"], ["message", "body"], ["message", "direction"], ["date_created"], ["tags"],
]  # fmt: skip
# A workflow body spelled with the other aliases of the tolerant reading (docs/webhooks.md).
WORKFLOW_PATHS = [
    ["type"], ["locationId"], ["contactId"], ["contact"], ["contact", "id"], ["contact", "phone"], ["message"],
    ["messageBody"], ["messageType"], ["channel"], ["dateAdded"], ["message", "timestamp"], ["direction"],
    ["messageId"],
]  # fmt: skip


def ghl_workflow() -> dict:
    return {
        "type": "InboundMessage",
        "locationId": "LOC_ACME_123",
        "contact": {"id": "wf-fuzz", "phone": "+14155550199", "email": "fuzz@example.com"},
        "messageBody": "Is Friday possible?",
        "messageType": "SMS",
        "dateAdded": "2026-01-01T10:00:00Z",
    }


EB_PATHS = [
    ["event"], ["event", "type"], ["data"], ["data", "reply"], ["data", "reply", "id"],
    ["data", "reply", "text_body"], ["data", "reply", "html_body"], ["data", "reply", "date_received"],
    ["data", "reply", "interested"], ["data", "reply", "from_email_address"], ["data", "lead"],
    ["data", "lead", "id"], ["data", "lead", "email"], ["data", "scheduled_email"],
]  # fmt: skip
EB_TYPES = ["LEAD_REPLIED", "LEAD_INTERESTED", "UNTRACKED_REPLY_RECEIVED", "EMAIL_SENT", "EMAIL_BOUNCED",
            "LEAD_UNSUBSCRIBED", "EMAIL_OPENED"]  # fmt: skip


def _counts():
    return Lead.objects.count(), Message.objects.count(), WebhookEvent.objects.count()


def _check(response, before):
    assert response.status_code < 500
    leads, messages, events = _counts()
    if response.status_code == 200:
        data = response.json()
        assert data["status"] in {"created", "duplicate", "ignored"}
        assert events == before[2] + 1
        if data["message_id"] is not None:
            assert Message.objects.filter(pk=data["message_id"], lead_id=data["lead_id"]).exists()
    else:
        assert response.status_code in {400, 403, 413}, response.content
        assert "error" in response.json()
        # No partial rows: at most the rejected WebhookEvent.
        assert (leads, messages) == before[:2]
        assert events - before[2] in (0, 1)
        assert not WebhookEvent.objects.exclude(status__in=["rejected", "processed", "duplicate", "ignored"]).exists()


@FUZZ
@given(
    base=st.sampled_from(["marketplace", "custom", "workflow"]),
    path_index=st.integers(min_value=0, max_value=20),
    value=json_values | st.just(_DELETE),
)
def test_fuzz_ghl_fields(workspace, enqueued, base, path_index, value):
    paths, build = {
        "marketplace": (GHL_PATHS, ghl_inbound),
        "custom": (CUSTOM_PATHS, ghl_custom),
        "workflow": (WORKFLOW_PATHS, ghl_workflow),
    }[base]
    payload = _mutate(build(), paths[path_index % len(paths)], value)
    before = _counts()
    _check(post(Client(), "ghl", payload), before)


@FUZZ
@given(
    event_type=st.sampled_from(EB_TYPES),
    path_index=st.integers(min_value=0, max_value=20),
    value=json_values | st.just(_DELETE),
)
def test_fuzz_emailbison_fields(workspace, enqueued, event_type, path_index, value):
    payload = _mutate(emailbison(event_type), EB_PATHS[path_index % len(EB_PATHS)], value)
    before = _counts()
    _check(post(Client(), "emailbison", payload), before)


@FUZZ
@given(provider=st.sampled_from(["ghl", "emailbison"]), document=json_values)
def test_fuzz_arbitrary_json_documents(workspace, enqueued, provider, document):
    before = _counts()
    _check(post(Client(), provider, document), before)


@FUZZ
@given(provider=st.sampled_from(["ghl", "emailbison"]), raw=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(workspace, enqueued, provider, raw):
    before = _counts()
    _check(post(Client(), provider, raw), before)


date_values = (
    st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.integers(min_value=10**15, max_value=10**40)
    | tricky_strings
)
DATE_TARGETS = [
    ("ghl", ghl_inbound, ["dateAdded"]),
    ("ghl", ghl_custom, ["date_created"]),
    ("emailbison", lambda: emailbison("LEAD_REPLIED"), ["data", "reply", "date_received"]),
    ("emailbison", lambda: emailbison("EMAIL_SENT"), ["data", "scheduled_email", "sent_at"]),
]


@FUZZ
@given(target=st.sampled_from(DATE_TARGETS), value=date_values)
def test_fuzz_date_fields(workspace, enqueued, target, value):
    provider, build, path = target
    payload = _mutate(build(), path, value)
    before = _counts()
    response = post(Client(), provider, json.dumps(payload, allow_nan=True))
    _check(response, before)
