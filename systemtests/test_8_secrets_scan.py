"""Scenario 8 (runs last): every token, secret and message body the earlier scenarios used is
searched for in every process log, every error record and every Sentry event: zero hits.

Message text is stored where operators read it (messages, drafts, the webhook event log's
bodies); it must not leak into logs, error records or error reports.
"""

from __future__ import annotations

import json

from support import ARTIFACTS, SENSITIVE, report, sql

ERROR_RECORDS = [
    ("workspaces_integrationerror", "message || ' ' || context::text"),
    ("drafts_draft", "coalesce(error, '')"),
    ("messaging_webhookevent", "coalesce(error, '') || ' ' || headers::text"),
    ("ghl_syncrun", "errors::text"),
]


def test_no_secret_or_message_body_in_logs_errors_or_sentry(system):
    # A known error report, so the Sentry path is exercised even when the earlier scenarios raised none:
    # a sync with a token the fake GHL refuses (403) carries the token in its request headers.
    ghl = system.fakes.ghl
    token = "pit-forbidden-0000-secret-token-scan"
    SENSITIVE.add(token)
    ws = system.workspace("scan-403", ghl_location_id="LOCSCAN4030000000001", ghl_token=token)
    ghl.forbidden = True
    try:
        system.manage("sync_all", "--workspace", ws["slug"], check=False)
    finally:
        ghl.forbidden = False

    needles = sorted(v for v in SENSITIVE if len(v) >= 8)
    hits: list[str] = []
    logs = sorted(p for p in ARTIFACTS.rglob("*") if p.is_file() and p.name != "figures.txt")
    for path in logs:
        text = path.read_text(errors="replace")
        hits += [f"{path.name}: {n[:24]}…" for n in needles if n in text]
    rows = 0
    for table, expression in ERROR_RECORDS:
        for (text,) in sql(f"SELECT {expression} FROM {table}"):
            rows += 1
            hits += [f"{table}: {n[:24]}…" for n in needles if n in (text or "")]
    envelopes = [e.decode("utf-8", "replace") for e in system.sentry.envelopes]
    for envelope in envelopes:
        hits += [f"sentry: {n[:24]}…" for n in needles if n in envelope or json.dumps(n)[1:-1] in envelope]
    report(
        "8 secrets scan",
        needles=len(needles),
        log_files=len(logs),
        log_mb=f"{sum(p.stat().st_size for p in logs) / 1e6:.1f}",
        error_rows=rows,
        sentry_envelopes=len(envelopes),
        hits=len(hits),
    )
    assert len(needles) >= 5 and logs and rows
    assert envelopes, "no Sentry event reached the fake DSN: the scan would prove nothing"
    assert hits == [], hits[:20]
