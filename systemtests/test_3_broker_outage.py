"""Scenario 3: the broker stops for 60 s in the middle of the traffic, then comes back.

A private ``redis-server`` on a free port is this system's broker (the shared Redis on 6379 is
never touched). Warm SMS keep arriving before, during and after the outage. No webhook may
fail, no message may be lost, and every draft must be done after the broker returns (the
sweeper on beat re-enqueues what the webhooks could not).
"""

from __future__ import annotations

import subprocess
import time

from support import ARTIFACTS, percentile, post_all, report, running_system, sensitive, workspace_counts

from core.testing.demo import ghl_inbound_body
from core.testing.processes import free_port, redis_server, stop_process, wait_for_port

BEFORE, DURING, AFTER = 10, 30, 10
OUTAGE_S = 60


def _redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(port)
    return proc


def test_broker_outage_loses_nothing_and_fails_no_webhook(system, fakes, sentry):
    port = free_port()
    with redis_server(port=port) as (broker, first_redis):
        ws = system.workspace("outage", ghl_location_id="LOCOUTAGE00000000001")

        def jobs(start: int, count: int):
            out = []
            for i in range(start, start + count):
                text = sensitive(f"Yes, can we meet on Thursday about the roof? (outage {i})")
                body = ghl_inbound_body(contact_id=f"outage{i:014d}", text=text, message_id=f"out{i:017d}")
                body["locationId"] = ws["ghl_location_id"]
                out.append(("ghl", ws["slug"], ws["secret"], body))
            return out

        with running_system(ARTIFACTS / "broker-outage", fakes=fakes, sentry=sentry, broker=broker) as private:
            results = post_all(private, jobs(0, BEFORE), threads=2, rate=2)
            stop_process(first_redis)  # the broker goes away
            outage_started = time.monotonic()
            results += post_all(private, jobs(BEFORE, DURING), threads=2, rate=DURING / (OUTAGE_S - 5))
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            second_redis = _redis(port)  # back, empty
            recovered = time.monotonic()
            try:
                results += post_all(private, jobs(BEFORE + DURING, AFTER), threads=2, rate=2)
                total = BEFORE + DURING + AFTER

                def ready() -> int:
                    return workspace_counts(ws["slug"], "drafts_draft", "status").get("ready", 0)

                deadline = time.monotonic() + 240
                while time.monotonic() < deadline and ready() < total:
                    time.sleep(3)
                done_after_s = time.monotonic() - recovered
            finally:
                stop_process(second_redis)
    statuses = [s for s, _ in results]
    during = [t for s, t in results[BEFORE : BEFORE + DURING]]
    stored = sum(workspace_counts(ws["slug"], "messaging_message", "direction").values())
    states = workspace_counts(ws["slug"], "drafts_draft", "status")
    report(
        "3 broker outage 60 s",
        webhooks=len(results),
        http_200=statuses.count(200),
        during_outage_p99_ms=f"{percentile(during, 99) * 1000:.0f}",
        messages_stored=f"{stored}/{total}",
        drafts=states,
        all_ready_after_recovery_s=f"{done_after_s:.1f}",
    )
    assert statuses == [200] * total
    assert stored == total
    assert states.get("ready", 0) == total, states
