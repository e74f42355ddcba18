"""Design rule: every statement on tenant data is scoped to one workspace (no query crosses tenants).

Runs every writing path of ingestion (webhooks of both providers, duplicates, the
body-hash duplicate, blacklisting, the ``LEAD_INTERESTED`` upgrade, rejections, a
broker failure and the outage after it, the sweeper's recovery, reprocessing) for
two workspaces, and parses every SQL statement that touches a tenant table: each
SELECT, UPDATE and DELETE (subqueries included) must constrain ``workspace_id`` in
its WHERE clause to the workspace being served, as a condition every matching row
must meet (a top-level conjunct; an ``OR`` branch or a ``NOT`` does not count); each
INSERT must write that workspace's id. Naming the column elsewhere (every full-row
SELECT lists it) proves nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlparse
from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError
from sqlparse import tokens as T

from drafts.models import Draft, DraftStatus
from drafts.services.sweeper import message_sweep_unprocessed
from leads.models import Lead, LeadStatus, Sentiment
from messaging.models import Message, WebhookEvent
from messaging.services import webhook_event_reprocess
from messaging.tests.factories import emailbison, ghl_custom, ghl_inbound, iso_ago, post
from workspaces.models import IntegrationError

pytestmark = pytest.mark.django_db

GLOBEX_SECRET = "whsec-globex-0123456789abcdef"


def tenant_tables() -> frozenset[str]:
    """Every table with a ``workspace_id`` column, from the models' ``_meta``."""
    found = set()
    for model in apps.get_models(include_auto_created=True):
        for f in model._meta.concrete_fields:
            if f.column == "workspace_id":
                found.add(model._meta.db_table)
    return frozenset(found)


TENANT_TABLES = tenant_tables()


# --- A small SQL reader (on sqlparse's tokens) ----------------------------------------------------


@dataclass
class _Tok:
    kind: str  # "kw", "name", "lit", "op", "open", "close", "comma", "null", "other"
    value: str
    depth: int  # parenthesis depth the token sits at ("(" and ")" at the outer depth)


def _tokens(sql: str) -> list[_Tok]:
    out: list[_Tok] = []
    depth = 0
    for tok in sqlparse.parse(sql)[0].flatten():
        ttype, value = tok.ttype, tok.value
        if ttype in T.Whitespace or ttype in T.Newline or ttype in T.Comment:
            continue
        if value == "(":
            out.append(_Tok("open", value, depth))
            depth += 1
            continue
        if value == ")":
            depth -= 1
            out.append(_Tok("close", value, depth))
            continue
        if value == ",":
            kind = "comma"
        elif ttype in T.Keyword and value.upper() == "NULL":
            kind = "null"
        elif ttype in T.Keyword:
            kind = "kw"
            value = " ".join(value.upper().split())
        elif ttype in T.Name or ttype in T.Literal.String.Symbol:
            kind = "name"
            value = value.strip('"')
        elif ttype in T.Literal:
            kind = "lit"
        elif ttype in T.Operator:
            kind = "op"
        else:
            kind = "other"
        out.append(_Tok(kind, value, depth))
    return out


_WHERE_ENDS = {
    "ORDER BY",
    "GROUP BY",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "RETURNING",
    "FOR",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WINDOW",
}
_TABLE_INTRODUCERS = {"FROM", "JOIN", "UPDATE", "INTO"}


@dataclass
class Problem:
    sql: str
    reason: str


@dataclass
class Scopes:
    """The workspace ids each statement of a run was scoped to, and the statements that were not."""

    problems: list[Problem] = field(default_factory=list)
    workspace_ids: set[int] = field(default_factory=set)
    checked: int = 0


def _block_end(toks: list[_Tok], start: int) -> int:
    depth = toks[start].depth
    for i in range(start + 1, len(toks)):
        if toks[i].depth < depth:
            return i
    return len(toks)


def _matching_close(toks: list[_Tok], open_at: int) -> int:
    depth = toks[open_at].depth
    return next(i for i in range(open_at + 1, len(toks)) if toks[i].kind == "close" and toks[i].depth == depth)


def _split_top(toks: list[_Tok], words: set[str]) -> list[list[_Tok]]:
    if not toks:
        return [[]]
    depth = toks[0].depth
    parts: list[list[_Tok]] = [[]]
    for tok in toks:
        if tok.depth == depth and tok.kind == "kw" and tok.value in words:
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def _literal_ids(toks: list[_Tok]) -> set[int] | None:
    """The integers of ``1`` or ``(1, 2)``; None when anything else (a column, NULL, an expression)."""
    if len(toks) == 1 and toks[0].kind == "lit":
        try:
            return {int(toks[0].value.strip("'"))}
        except ValueError:
            return None
    if len(toks) >= 3 and toks[0].kind == "open" and toks[-1].kind == "close":
        inner = [t for t in toks[1:-1] if t.kind != "comma"]
        ids: set[int] = set()
        for tok in inner:
            got = _literal_ids([tok])
            if got is None:
                return None
            ids |= got
        return ids or None
    return None


def _is_workspace_column(toks: list[_Tok]) -> bool:
    """``workspace_id``, ``"t"."workspace_id"`` or ``alias.workspace_id``."""
    names = [t for t in toks if t.kind == "name"]
    dots = [t for t in toks if t.kind not in ("name",)]
    return bool(names) and names[-1].value == "workspace_id" and all(t.value == "." for t in dots) and len(names) <= 2


def _conjunct_ids(toks: list[_Tok]) -> set[int] | None:
    """Workspace ids a single condition restricts the rows to, or None if it does not."""
    if not toks:
        return None
    if toks[0].kind == "open" and toks[-1].kind == "close" and _matching_close(toks, 0) == len(toks) - 1:
        return _condition_ids(toks[1:-1])
    depth = toks[0].depth
    for i, tok in enumerate(toks):
        if tok.depth != depth:
            continue
        if (tok.kind == "op" and tok.value == "=") or (tok.kind == "kw" and tok.value == "IN"):
            left, right = toks[:i], toks[i + 1 :]
            if _is_workspace_column(left):
                return _literal_ids(right)
            if tok.value == "=" and _is_workspace_column(right):
                return _literal_ids(left)
            return None
    return None


def _condition_ids(toks: list[_Tok]) -> set[int] | None:
    """Workspace ids a WHERE condition restricts every matching row to, or None."""
    branches = _split_top(toks, {"OR"})
    found: set[int] = set()
    for branch in branches:
        ids = None
        for conjunct in _split_top(branch, {"AND"}):
            got = _conjunct_ids(conjunct)
            if got is not None:
                ids = got if ids is None else ids & got
        if ids is None:
            return None
        found |= ids
    return found


def _block_tables(toks: list[_Tok], start: int, end: int) -> set[str]:
    depth = toks[start].depth
    tables = set()
    for i in range(start, end - 1):
        tok = toks[i]
        if tok.depth == depth and tok.kind == "kw" and (tok.value in _TABLE_INTRODUCERS or tok.value.endswith(" JOIN")):
            following = toks[i + 1]
            if following.kind == "name" and following.value in TENANT_TABLES:
                tables.add(following.value)
    return tables


def _check_block(toks: list[_Tok], start: int, scopes: Scopes, sql: str) -> None:
    """Check the SELECT/UPDATE/DELETE that starts at ``toks[start]`` (its own level only)."""
    end = _block_end(toks, start)
    tables = _block_tables(toks, start, end)
    if not tables:
        return
    scopes.checked += 1
    depth = toks[start].depth
    where_at = next(
        (i for i in range(start, end) if toks[i].depth == depth and toks[i].kind == "kw" and toks[i].value == "WHERE"),
        None,
    )
    if where_at is None:
        scopes.problems.append(Problem(sql, f"no WHERE clause on {sorted(tables)}"))
        return
    stop = next(
        (
            i
            for i in range(where_at + 1, end)
            if toks[i].depth == depth and toks[i].kind == "kw" and toks[i].value in _WHERE_ENDS
        ),
        end,
    )
    ids = _condition_ids(toks[where_at + 1 : stop])
    if ids is None:
        scopes.problems.append(Problem(sql, f"WHERE does not restrict workspace_id on {sorted(tables)}"))
        return
    scopes.workspace_ids |= ids


def _check_insert(toks: list[_Tok], start: int, scopes: Scopes, sql: str) -> None:
    table_tok, columns_open = toks[start + 2], start + 3
    if table_tok.kind != "name" or table_tok.value not in TENANT_TABLES:
        return
    scopes.checked += 1
    columns_close = _matching_close(toks, columns_open)
    columns = [t.value for t in toks[columns_open + 1 : columns_close] if t.kind == "name"]
    if "workspace_id" not in columns:
        scopes.problems.append(Problem(sql, f"INSERT into {table_tok.value} without workspace_id"))
        return
    index = columns.index("workspace_id")
    values_at = next((i for i in range(columns_close, len(toks)) if toks[i].value.upper() == "VALUES"), None)
    if values_at is None:
        scopes.problems.append(Problem(sql, "INSERT without VALUES"))
        return
    i = values_at + 1
    while i < len(toks) and toks[i].kind == "open":
        close = _matching_close(toks, i)
        row = [[]]
        for tok in toks[i + 1 : close]:
            if tok.kind == "comma" and tok.depth == toks[i].depth + 1:
                row.append([])
            else:
                row[-1].append(tok)
        ids = _literal_ids(row[index]) if index < len(row) else None
        if ids is None:
            scopes.problems.append(Problem(sql, f"INSERT into {table_tok.value} with no workspace id value"))
            return
        scopes.workspace_ids |= ids
        i = close + 1
        if i < len(toks) and toks[i].kind == "comma":
            i += 1


def statement_scopes(sql: str) -> Scopes:
    """The workspace ids the statement ``sql`` is restricted to, and the parts that are not restricted."""
    scopes = Scopes()
    toks = _tokens(sql)
    for i, tok in enumerate(toks):
        if tok.kind != "kw":
            continue
        if tok.value in ("SELECT", "UPDATE", "DELETE"):
            _check_block(toks, i, scopes, sql)
        elif tok.value == "INSERT" and i + 3 < len(toks) and toks[i + 1].value == "INTO":
            _check_insert(toks, i, scopes, sql)
    return scopes


# --- The reader itself can tell scoped from unscoped ----------------------------------------------

_FULL_ROW = 'SELECT "leads_lead"."id", "leads_lead"."workspace_id", "leads_lead"."email" FROM "leads_lead"'


@pytest.mark.parametrize(
    ("sql", "ids"),
    [
        (f"""{_FULL_ROW} WHERE ("leads_lead"."workspace_id" = 1 AND "leads_lead"."email" = 'a@b.c') LIMIT 1""", {1}),
        ("UPDATE leads_lead SET last_message_at = now() WHERE id = 5 AND workspace_id = 2", {2}),
        ('DELETE FROM "drafts_draft" WHERE "drafts_draft"."workspace_id" IN (3) AND id = 4', {3}),
        ("""INSERT INTO "messaging_message" ("lead_id", "workspace_id", "body") VALUES (1, 7, 'a, b')""", {7}),
        (
            'SELECT 1 FROM "messaging_message" WHERE "messaging_message"."workspace_id" = 1 AND EXISTS '
            '(SELECT 1 FROM "drafts_draft" U0 WHERE U0."workspace_id" = 1 AND U0."message_id" = 9)',
            {1},
        ),
        ('SELECT "workspaces_workspace"."id" FROM "workspaces_workspace" WHERE "slug" = \'acme\'', set()),
    ],
)
def test_the_reader_accepts_scoped_statements(sql, ids):
    scopes = statement_scopes(sql)
    assert scopes.problems == []
    assert scopes.workspace_ids == ids


@pytest.mark.parametrize(
    "sql",
    [
        f"""{_FULL_ROW} WHERE "leads_lead"."email" = 'a@b.c' LIMIT 1""",  # lists workspace_id, filters nothing
        f"{_FULL_ROW} ORDER BY workspace_id",
        f"{_FULL_ROW} WHERE id = 1 OR workspace_id = 1",
        f"{_FULL_ROW} WHERE NOT workspace_id = 1",
        f"{_FULL_ROW} WHERE workspace_id = lead_id",
        f"{_FULL_ROW} WHERE workspace_id IS NOT NULL",
        "UPDATE leads_lead SET workspace_id = 1 WHERE id = 5",
        'UPDATE "messaging_message" SET "work_enqueued_at" = NULL WHERE "messaging_message"."id" = 3',
        'DELETE FROM "drafts_draft" WHERE "drafts_draft"."id" IN (3)',
        """INSERT INTO "messaging_message" ("lead_id", "body") VALUES (1, 'workspace_id')""",
        """INSERT INTO "messaging_message" ("workspace_id", "body") VALUES (NULL, 'x')""",
        # The outer query is scoped, its subquery on another tenant table is not.
        'SELECT 1 FROM "messaging_message" WHERE "messaging_message"."workspace_id" = 1 AND EXISTS '
        '(SELECT 1 FROM "drafts_draft" U0 WHERE U0."message_id" = 9)',
    ],
)
def test_the_reader_refuses_unscoped_statements(sql):
    assert statement_scopes(sql).problems


def test_tenant_tables_come_from_the_models():
    assert {"leads_lead", "messaging_message", "messaging_webhookevent", "drafts_draft"} <= TENANT_TABLES
    assert "workspaces_integrationerror" in TENANT_TABLES
    assert "workspaces_workspace" not in TENANT_TABLES


# --- Every ingestion path, statement by statement ---------------------------------------------


class Recorder:
    """Runs steps for one workspace each; keeps every statement and the workspace it served."""

    def __init__(self, capture_on_commit) -> None:
        self.capture_on_commit = capture_on_commit
        self.statements: list[tuple[frozenset[int], str]] = []

    @contextmanager
    def step(self, *workspace_ids: int) -> Iterator[None]:
        # On-commit callbacks (enqueueing, the broker's failure handling) run at the end of
        # the step, inside the capture and with the step's conditions still in place.
        with CaptureQueriesContext(connection) as captured, self.capture_on_commit(execute=True):
            yield
        self.statements += [(frozenset(workspace_ids), q["sql"]) for q in captured.captured_queries]

    def report(self) -> tuple[int, list[str], set[str]]:
        checked, problems, tables = 0, [], set()
        for serving, sql in self.statements:
            scopes = statement_scopes(sql)
            checked += scopes.checked
            problems += [f"{p.reason}: {p.sql[:300]}" for p in scopes.problems]
            if scopes.workspace_ids - serving:
                problems.append(f"scoped to {scopes.workspace_ids}, serving {set(serving)}: {sql[:300]}")
            mentioned = {t for t in TENANT_TABLES if t in sql}
            if mentioned and not scopes.checked:
                problems.append(f"not understood by the reader: {sql[:300]}")
            tables |= mentioned
        return checked, problems, tables


def _write_verbs(statements: list[tuple[frozenset[int], str]]) -> set[tuple[str, str]]:
    found = set()
    for _, sql in statements:
        head = sql.split(None, 3)
        verb = head[0].upper()
        if verb in ("INSERT", "UPDATE", "DELETE"):
            target = head[2] if verb in ("INSERT", "DELETE") else head[1]
            found.add((verb, target.strip('"')))
    return found


def test_every_statement_on_tenant_tables_is_scoped_to_the_workspace_served(
    workspace, other_workspace, enqueued, django_capture_on_commit_callbacks
):
    client = Client()
    run = Recorder(django_capture_on_commit_callbacks)
    acme, globex = workspace.pk, other_workspace.pk

    with run.step(acme):
        marketplace = ghl_inbound()
        first_id = post(client, "ghl", marketplace).json()["message_id"]
    with run.step(acme):
        assert post(client, "ghl", marketplace).json()["status"] == "duplicate"  # a replayed delivery
    with run.step(acme):
        assert post(client, "ghl", ghl_custom()).json()["status"] == "created"
    with run.step(acme):  # no provider message id: the same body 30 s later is the same message
        later = ghl_custom(date_created=iso_ago(minutes=3, seconds=-30))
        assert post(client, "ghl", later).json()["status"] == "duplicate"
    with run.step(acme):  # a lead known by email only
        custom = ghl_custom(contact_id="", email="new@example.com", message={"body": "other", "direction": "inbound"})
        assert post(client, "ghl", custom).json()["status"] == "created"
    with run.step(globex):
        other = ghl_inbound(locationId="LOC_GLOBEX_456")
        assert post(client, "ghl", other, slug="globex", secret=GLOBEX_SECRET).json()["status"] == "created"

    # EmailBison: a reply, classified Neutral, then flagged interested by the provider.
    replied = emailbison("LEAD_REPLIED")
    with run.step(acme):
        reply_id = post(client, "emailbison", replied).json()["message_id"]
    Message.objects.filter(pk=reply_id).update(sentiment=Sentiment.NEUTRAL, classified_at=timezone.now())
    with run.step(acme):
        interested = {"event": {**replied["event"], "type": "LEAD_INTERESTED"}, "data": replied["data"]}
        assert post(client, "emailbison", interested).json()["status"] == "duplicate"
    assert Message.objects.get(pk=reply_id).sentiment == Sentiment.INTERESTED
    with run.step(acme):
        assert post(client, "emailbison", emailbison("EMAIL_SENT")).json()["status"] == "created"
    # The lead opts out while a draft awaits review: it is skipped.
    reply = Message.objects.get(pk=reply_id)
    draft = Draft.objects.create(
        workspace=workspace, lead=reply.lead, message=reply, channel=reply.channel, status=DraftStatus.READY
    )
    with run.step(acme):
        unsubscribed = emailbison("LEAD_UNSUBSCRIBED", lead=replied["data"]["lead"])
        assert post(client, "emailbison", unsubscribed).json()["status"] == "created"
    assert Lead.objects.get(pk=reply.lead_id).status == LeadStatus.BLACKLISTED
    assert Draft.objects.get(pk=draft.pk).status == DraftStatus.SKIPPED
    with run.step(acme):
        bounced = emailbison("EMAIL_BOUNCED", lead=replied["data"]["lead"])
        assert post(client, "emailbison", bounced).json()["status"] == "duplicate"  # already blacklisted
    with run.step(acme):
        assert post(client, "ghl", ghl_inbound(contactId=None)).status_code == 400  # rejected, logged
    rejected = WebhookEvent.objects.get(workspace=workspace, status=WebhookEvent.Status.REJECTED)

    # The broker refuses: the failure is recorded and the message's mark cleared (on commit,
    # while the broker is still failing), then the outage skips the broker entirely.
    enqueued.fail_with = OperationalError("down")
    with run.step(acme):
        refused = post(client, "ghl", ghl_inbound()).json()["message_id"]
    enqueued.fail_with = None
    with run.step(acme):  # within BROKER_RETRY_AFTER_S: not even tried, the mark is cleared
        skipped = post(client, "ghl", ghl_inbound()).json()["message_id"]
    assert list(Message.objects.filter(pk__in=[refused, skipped]).values_list("work_enqueued_at", flat=True)) == [
        None,
        None,
    ]
    assert IntegrationError.objects.filter(workspace=workspace, source=IntegrationError.Source.BROKER).exists()
    assert refused not in enqueued.calls and skipped not in enqueued.calls

    # The sweeper hands both over once the broker is back (and resolves the broker error);
    # an open draft whose task was lost is handed over too.
    lost = Message.objects.get(pk=first_id)
    Draft.objects.create(workspace=workspace, lead=lost.lead, message=lost, channel=lost.channel)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Draft.objects.filter(message=lost).update(updated_at=an_hour_ago, created_at=an_hour_ago)
    Message.objects.filter(pk=lost.pk).update(work_enqueued_at=an_hour_ago)
    with run.step(acme, globex):  # the sweeper serves every workspace, one after the other
        swept = message_sweep_unprocessed(now=timezone.now() + timedelta(seconds=1), grace_s=0)
    assert enqueued.calls[-3:] == [refused, skipped, first_id]
    assert swept == 3

    with run.step(acme):
        processed = WebhookEvent.objects.get(workspace=workspace, message_id=refused, status="processed")
        assert webhook_event_reprocess(event_id=processed.pk, workspace_id=acme).status == "duplicate"
    with run.step(acme):
        assert webhook_event_reprocess(event_id=rejected.pk, workspace_id=acme).status == "ignored"

    checked, problems, tables = run.report()
    assert problems == []
    assert checked > 80
    assert {"leads_lead", "messaging_message", "messaging_webhookevent", "drafts_draft"} <= tables
    assert "workspaces_integrationerror" in tables
    writes = _write_verbs(run.statements)
    for write in [
        ("INSERT", "leads_lead"),
        ("UPDATE", "leads_lead"),
        ("INSERT", "messaging_message"),
        ("UPDATE", "messaging_message"),
        ("INSERT", "messaging_webhookevent"),
        ("UPDATE", "messaging_webhookevent"),
        ("UPDATE", "drafts_draft"),
        ("INSERT", "workspaces_integrationerror"),
        ("UPDATE", "workspaces_integrationerror"),
    ]:
        assert write in writes, f"no {write} ran: a path is not exercised"
