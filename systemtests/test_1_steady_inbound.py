"""Scenario 1: steady inbound traffic on both webhooks for several workspaces.

Three workspaces receive SMS (GHL) and email replies (EmailBison), warm and cold, about a
fifth of them delivered twice (providers retry). Every message must be stored once and every
warm message must end with a ready draft.
"""

from __future__ import annotations

import random
import time

from support import percentile, post_all, report, scalar, sensitive, sql

from core.testing.demo import emailbison_body, ghl_inbound_body

WARM = [
    "Yes! Can we meet on Tuesday to look at the roof?",
    "I'm interested, what does it cost? Send me pricing please",
    "Sounds good, I'm interested.",
]
COLD = ["No thanks, not interested.", "I am out of the office until Monday."]
WORKSPACES = 3
PER_CHANNEL = 16  # messages per channel per workspace
DUPLICATE_SHARE = 0.2


def test_every_message_stored_once_and_every_warm_lead_gets_a_ready_draft(system):
    rng = random.Random(1)
    jobs, warm_ids, all_ids = [], set(), set()
    for w in range(WORKSPACES):
        slug = f"steady-{w}"
        ws = system.workspace(slug, ghl_location_id=f"LOCSTEADY{w:011d}", ghl_token=f"pit-steady-{w}-secret-token")
        for i in range(PER_CHANNEL):
            text = sensitive(f"{rng.choice(WARM + COLD)} (ref {slug}-{i})")
            contact = f"steady{w}contact{i:08d}"
            body = ghl_inbound_body(contact_id=contact, text=text, message_id=f"st{w}msg{i:010d}")
            body["locationId"] = ws["ghl_location_id"]
            jobs.append(("ghl", slug, ws["secret"], body))
            all_ids.add(("ghl", f"st{w}msg{i:010d}"))
            if text.split(" (ref")[0] in WARM:
                warm_ids.add(("ghl", f"st{w}msg{i:010d}"))
            text = sensitive(f"{rng.choice(WARM + COLD)} (ref {slug}-e{i})")
            reply_id = 500000 + w * 1000 + i
            lead = {"id": 700000 + w * 1000 + i, "email": f"lead{w}-{i}@steady.example", "first_name": "Lee"}
            reply = {
                "id": reply_id,
                "text_body": text,
                "from_email_address": lead["email"],
                "email_subject": "Re: roof",
            }
            jobs.append(
                ("emailbison", slug, ws["secret"], emailbison_body(event_type="LEAD_REPLIED", lead=lead, reply=reply))
            )
            all_ids.add(("emailbison", str(reply_id)))
            if text.split(" (ref")[0] in WARM:
                warm_ids.add(("emailbison", str(reply_id)))
    duplicates = rng.sample(jobs, int(len(jobs) * DUPLICATE_SHARE))
    jobs = jobs + duplicates
    rng.shuffle(jobs)

    started = time.monotonic()
    results = post_all(system, jobs, threads=4, rate=30)
    posting_s = time.monotonic() - started
    statuses = [s for s, _ in results]
    latencies = [t for _, t in results]
    assert statuses.count(200) == len(jobs), f"non-200 answers: {[s for s in statuses if s != 200]}"

    slugs = tuple(f"steady-{w}" for w in range(WORKSPACES))
    scope = "m.workspace_id IN (SELECT id FROM workspaces_workspace WHERE slug = ANY(%s))"
    stored = scalar(f"SELECT count(*) FROM messaging_message m WHERE {scope} AND direction = 'inbound'", (list(slugs),))
    twice = scalar(
        f"""SELECT count(*) FROM (SELECT coalesce(nullif(ghl_message_id, ''), emailbison_reply_id) AS k, m.workspace_id
            FROM messaging_message m WHERE {scope} AND direction = 'inbound' GROUP BY 1, 2 HAVING count(*) > 1) d""",
        (list(slugs),),
    )
    assert stored == len(all_ids) and twice == 0

    def warm_drafts():
        rows = sql(
            f"""SELECT CASE WHEN m.ghl_message_id <> '' THEN 'ghl' ELSE 'emailbison' END,
                       coalesce(nullif(m.ghl_message_id, ''), m.emailbison_reply_id), d.status
                FROM messaging_message m JOIN drafts_draft d ON d.message_id = m.id
                WHERE {scope} AND d.status NOT IN ('superseded')""",
            (list(slugs),),
        )
        return {(p, k): s for p, k, s in rows}

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        drafts = warm_drafts()
        if all(drafts.get(k) in ("ready", "failed") for k in warm_ids):
            break
        time.sleep(2)
    drafts_s = time.monotonic() - started
    ready = sum(1 for k in warm_ids if drafts.get(k) == "ready")
    cold_with_draft = sum(1 for k, s in drafts.items() if k not in warm_ids and s == "ready")
    report(
        "1 steady inbound",
        workspaces=WORKSPACES,
        webhooks=len(jobs),
        redeliveries=len(duplicates),
        http_200=statuses.count(200),
        p50_ms=f"{percentile(latencies, 50) * 1000:.0f}",
        p99_ms=f"{percentile(latencies, 99) * 1000:.0f}",
        posting_s=f"{posting_s:.1f}",
        messages_stored=f"{stored}/{len(all_ids)}",
        stored_twice=twice,
        warm_ready=f"{ready}/{len(warm_ids)}",
        cold_with_draft=cold_with_draft,
        all_drafts_done_s=f"{drafts_s:.1f}",
    )
    assert ready == len(warm_ids), {k: drafts.get(k) for k in warm_ids if drafts.get(k) != "ready"}
