"""Scenario 2: LLM faults (incompletes, 500s, 30 s hangs) while warm leads keep arriving.

The fake OpenAI answers a third of first draft attempts incomplete, a fifth of all calls 500,
and hangs 30 s on a scripted run of calls (the worker's per-call timeout is 4 s here). The
webhooks must not notice; every draft must end ready or failed with a reason, none stuck.
A message whose classification itself fails for good gets the fallback tag and no draft, by
design (drafts/services.py ``_classification_failed``): it must then be surfaced as a
``classify_*`` integration error.
"""

from __future__ import annotations

import time

from support import percentile, post_all, report, scalar, sensitive, sql, workspace_counts

from core.testing.demo import ghl_inbound_body

MESSAGES = 30
HANGS = 6
TERMINAL = ("ready", "failed", "skipped")


def test_llm_faults_leave_webhooks_fast_and_no_draft_stuck(system):
    ws = system.workspace("llm-faults", ghl_location_id="LOCLLMFAULTS00000001")
    fake = system.fakes.openai
    jobs = []
    for i in range(MESSAGES):
        text = sensitive(f"Yes please, can we meet this week to talk about the roof? (llm {i})")
        body = ghl_inbound_body(contact_id=f"llmfault{i:012d}", text=text, message_id=f"llmf{i:016d}")
        body["locationId"] = ws["ghl_location_id"]
        jobs.append(("ghl", ws["slug"], ws["secret"], body))
    answered_before = len(fake.records)
    fake.enqueue(*["hang"] * HANGS)
    fake.incomplete_ratio, fake.error_ratio = 0.33, 0.2
    try:
        started = time.monotonic()
        results = post_all(system, jobs, threads=2, rate=5)
        latencies = [t for _, t in results]
        assert [s for s, _ in results] == [200] * MESSAGES

        def states() -> dict[str, int]:
            found = workspace_counts(ws["slug"], "drafts_draft", "status")
            found.pop("superseded", None)
            return found

        def unclassified() -> int:
            return scalar(
                """SELECT count(*) FROM messaging_message m JOIN workspaces_workspace w ON w.id = m.workspace_id
                   WHERE w.slug = %s AND m.classified_at IS NULL""",
                (ws["slug"],),
            )

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            current = states()
            if not unclassified() and all(k in TERMINAL for k in current):
                break
            time.sleep(2)
        settled_s = time.monotonic() - started
    finally:
        fake.incomplete_ratio = fake.error_ratio = 0.0
        fake.script.clear()
    fallbacks = workspace_counts(ws["slug"], "messaging_message", "sentiment")
    warm = fallbacks.pop("Meeting Requested", 0)
    classify_errors = scalar(
        """SELECT coalesce(sum(e.count), 0) FROM workspaces_integrationerror e
           JOIN workspaces_workspace w ON w.id = e.workspace_id WHERE w.slug = %s AND e.code LIKE 'classify%%'""",
        (ws["slug"],),
    )
    failed_without_reason = sql(
        """SELECT count(*) FROM drafts_draft d JOIN workspaces_workspace w ON w.id = d.workspace_id
           WHERE w.slug = %s AND d.status = 'failed' AND coalesce(d.error, '') = ''""",
        (ws["slug"],),
    )[0][0]
    faults: dict[str, int] = {}
    for record in fake.records[answered_before:]:
        faults[record.behaviour] = faults.get(record.behaviour, 0) + 1
    report(
        "2 llm faults",
        messages=MESSAGES,
        llm_answers=faults,
        hangs_30s=f"{HANGS} (recorded when they end)",
        webhook_p99_ms=f"{percentile(latencies, 99) * 1000:.0f}",
        webhook_max_ms=f"{max(latencies) * 1000:.0f}",
        classified_warm=warm,
        classification_fallbacks=fallbacks,
        classify_errors_recorded=classify_errors,
        drafts=current,
        failed_without_reason=failed_without_reason,
        settled_s=f"{settled_s:.1f}",
    )
    assert sum(current.values()) == warm and warm + sum(fallbacks.values()) == MESSAGES
    assert classify_errors >= sum(fallbacks.values())
    assert all(k in TERMINAL for k in current), current
    assert failed_without_reason == 0
    assert current.get("ready", 0) >= MESSAGES // 2  # retries and the fallback model rescue most
    assert percentile(latencies, 99) < 2.0  # the webhook never waits on the LLM
