"""Scenario 7: 1,000 malformed or hostile webhook bodies on both webhooks.

Broken JSON, wrong types, missing and oversized fields, control characters, deep nesting,
invalid UTF-8, bodies over the size cap, a wrong secret. Zero 5xx; zero partial rows: every
lead the run created has the message that created it, and only well-formed deliveries stored
messages.
"""

from __future__ import annotations

import copy
import json
import random

import pytest
from support import post_all, report, scalar, sql

from core.testing.demo import emailbison_body, ghl_inbound_body

BODIES = 1000
HOSTILE_VALUES = [
    None,
    [],
    {},
    "",
    0,
    -1,
    True,
    1.5e300,
    "x" * 100_000,
    "\u0000\u0001\u202e",
    "'; DROP TABLE messaging_message; --",
    "<script>alert(1)</script>",
    "ünïcödé 🚀" * 50,
    {"nested": {"deeper": ["a", {"b": None}]}},
    "2026-02-30T25:61:00Z",
    "+1 (000) 000-0000 ext. 99999999999999999999",
]
RAW_CASES = [
    b"",
    b"null",
    b"42",
    b'"a string"',
    b"[]",
    b"{",
    b'{"type": "InboundMessage", "body": "cut',
    b"\xff\xfe\xfa not utf-8",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"type": NaN, "body": Infinity}',
    b"x" * (1024 * 1024 + 10),  # over WEBHOOK_MAX_BODY_BYTES
]


def _mutate(rng: random.Random, body: dict) -> dict:
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        target = body
        keys = list(target)
        # Sometimes reach into a nested object (EmailBison's event/data/reply/lead).
        while keys and rng.random() < 0.5:
            key = rng.choice(keys)
            if isinstance(target.get(key), dict) and target[key]:
                target = target[key]
                keys = list(target)
            else:
                break
        if not keys:
            continue
        key = rng.choice(keys)
        if rng.random() < 0.3:
            target.pop(key)
        else:
            target[key] = rng.choice(HOSTILE_VALUES)
    return body


@pytest.fixture(scope="module")
def hostile_run(system) -> dict:
    rng = random.Random(7)
    ws = system.workspace("hostile", ghl_location_id="LOCHOSTILE0000000001")
    slug, secret = ws["slug"], ws["secret"]
    jobs = []
    for n in range(BODIES):
        roll = rng.random()
        if roll < 0.12:
            raw = RAW_CASES[n % len(RAW_CASES)]
            jobs.append((rng.choice(["ghl", "emailbison"]), slug, secret, raw))
        elif roll < 0.15:
            jobs.append(("ghl", slug, "wrong-secret-" + "z" * 20, {"type": "InboundMessage"}))
        elif roll < 0.58:
            body = ghl_inbound_body(contact_id=f"hostile{n:013d}", text=f"hostile {n}", message_id=f"hm{n:012d}")
            body["locationId"] = ws["ghl_location_id"]
            jobs.append(("ghl", slug, secret, _mutate(rng, body)))
        else:
            lead = {"id": 880000 + n, "email": f"h{n}@hostile.example", "first_name": "H"}
            reply = {"id": 990000 + n, "text_body": f"hostile {n}", "from_email_address": lead["email"]}
            body = emailbison_body(event_type="LEAD_REPLIED", lead=lead, reply=reply)
            jobs.append(("emailbison", slug, secret, _mutate(rng, body)))
    results = post_all(system, jobs, threads=4, rate=60)
    statuses = [s for s, _ in results]
    by_class: dict[str, int] = {}
    for s in statuses:
        key = f"{s // 100}xx" if s > 0 else "no answer"
        by_class[key] = by_class.get(key, 0) + 1
    workspace_id = scalar("SELECT id FROM workspaces_workspace WHERE slug = %s", (slug,))
    leads = scalar("SELECT count(*) FROM leads_lead WHERE workspace_id = %s", (workspace_id,))
    messages = scalar("SELECT count(*) FROM messaging_message WHERE workspace_id = %s", (workspace_id,))
    orphans = scalar(
        """SELECT count(*) FROM leads_lead l WHERE l.workspace_id = %s
           AND NOT EXISTS (SELECT 1 FROM messaging_message m WHERE m.lead_id = l.id)""",
        (workspace_id,),
    )
    stored_events = dict(
        sql(
            "SELECT status, count(*) FROM messaging_webhookevent WHERE workspace_id = %s GROUP BY status",
            (workspace_id,),
        )
    )
    report(
        "7 hostile bodies",
        bodies=len(jobs),
        answers=json.dumps(by_class, sort_keys=True),
        leads=leads,
        messages=messages,
        leads_without_message=orphans,
        webhook_events=json.dumps(stored_events, sort_keys=True),
    )
    return {"by_class": by_class, "messages": messages, "orphans": orphans}


def test_hostile_bodies_get_4xx_never_5xx(hostile_run):
    by_class = hostile_run["by_class"]
    assert by_class.get("5xx", 0) == 0 and by_class.get("no answer", 0) == 0
    # A 200 stored at most one message; no refused body did.
    assert hostile_run["messages"] <= by_class.get("2xx", 0)


def test_hostile_bodies_leave_no_partial_rows(hostile_run):
    assert hostile_run["orphans"] == 0
