"""Scenario 5: ``sync_all`` on an 80-lead workspace under a tight announced GHL rate limit.

The fake GHL allows 20 requests per 2 s and announces it in ``X-RateLimit-*`` headers. The 80
leads arrive by webhook (one cold SMS each); their contacts hold 5 messages each on the fake.
``manage.py sync_all`` must complete with every lead synced and at most 1 % of its requests
answered 429.
"""

from __future__ import annotations

import datetime as dt
import time

from support import post_all, report, scalar, sql

from core.testing.demo import ghl_inbound_body

LEADS = 80
MESSAGES_PER_CONTACT = 5
LIMIT, INTERVAL_S = 20, 2.0


def test_sync_all_completes_under_a_tight_limit_with_few_429s(system):
    location = "LOCSYNC8000000000001"
    ws = system.workspace("sync-80", ghl_location_id=location, ghl_token="pit-sync80-0000-secret-token")
    ghl = system.fakes.ghl
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    jobs = []
    for i in range(LEADS):
        contact = f"sync80contact{i:07d}"
        ghl.add_contact(
            contact,
            firstName=f"Sync{i}",
            phone=f"+1415666{i:04d}",
            messages=[
                {
                    "id": f"s80m{i:06d}{k:02d}",
                    "direction": "inbound" if k % 2 == 0 else "outbound",
                    "messageType": "TYPE_SMS",
                    "body": f"history {k}",
                    "dateAdded": (earlier + dt.timedelta(minutes=k)).isoformat(),
                }
                for k in range(MESSAGES_PER_CONTACT)
            ],
        )
        body = ghl_inbound_body(contact_id=contact, text="no thanks", message_id=f"s80in{i:010d}")
        body["locationId"] = location
        jobs.append(("ghl", ws["slug"], ws["secret"], body))
    assert [s for s, _ in post_all(system, jobs, threads=4, rate=40)] == [200] * LEADS

    saved = (ghl.limit, ghl.interval_s)
    ghl.limit, ghl.interval_s = LIMIT, INTERVAL_S
    time.sleep(INTERVAL_S)  # an empty window to start from
    first = len(ghl.requests)
    try:
        started = time.monotonic()
        done = system.manage("sync_all", "--workspace", ws["slug"], timeout=600)
        wall = time.monotonic() - started
    finally:
        ghl.limit, ghl.interval_s = saved
    ours = [r for r in ghl.requests[first:] if r.path != "/_fake/sends"]
    requests_made = len(ours)
    rate_limited = sum(1 for r in ours if r.status == 429)
    status, leads_ok, leads_total, run_429 = sql(
        """SELECT r.status, r.leads_ok, r.leads_total, r.rate_limited FROM ghl_syncrun r
           JOIN workspaces_workspace w ON w.id = r.workspace_id WHERE w.slug = %s ORDER BY r.id DESC LIMIT 1""",
        (ws["slug"],),
    )[0]
    messages = scalar(
        """SELECT count(*) FROM messaging_message m JOIN workspaces_workspace w ON w.id = m.workspace_id
           WHERE w.slug = %s""",
        (ws["slug"],),
    )
    bound = ((requests_made - 1) // LIMIT) * INTERVAL_S
    report(
        "5 sync_all under 20/2s",
        leads=f"{leads_ok}/{leads_total}",
        run=status,
        requests=requests_made,
        answered_429=rate_limited,
        ratio_429=f"{100 * rate_limited / max(1, requests_made):.2f}%",
        wall_s=f"{wall:.1f}",
        limit_bound_s=f"{bound:.1f}",
        messages=messages,
        command=done.stdout.strip().splitlines()[-1][:160],
    )
    assert status == "succeeded" and leads_ok == leads_total == LEADS
    assert messages == LEADS * (MESSAGES_PER_CONTACT + 1)
    assert rate_limited <= 0.01 * requests_made
