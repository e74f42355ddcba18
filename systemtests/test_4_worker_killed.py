"""Scenario 4: the worker is killed with SIGKILL mid-draft and mid-send.

A private system (its own Redis database as broker, a 15 s visibility timeout so that the
killed worker's unacknowledged task comes back soon, task limits that make a killed worker's
work claim expire in ~60 s) with a worker the test kills and
replaces. Mid-draft: the fake OpenAI takes 2 s per answer and the worker dies while a draft is
being written; the draft must still end ready, once. Mid-send: the fake GHL takes 6 s to accept
an SMS and the worker dies inside that call; the provider must have received it exactly once
and the draft must never be sent twice (it ends ``sent`` or ``failed`` as unconfirmed, for an
operator to check).
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import redis
import requests
from support import (
    ARTIFACTS,
    PROXY_HEADERS,
    SYSTEM_REDIS,
    default_worker,
    report,
    running_system,
    scalar,
    sensitive,
    sql,
)

from core.testing.clock import midday_zone
from core.testing.demo import ghl_inbound_body

BROKER = SYSTEM_REDIS.rsplit("/", 1)[0] + "/7"
PASSWORD = sensitive("system-operator-password-0123")


@pytest.fixture(scope="module")
def private(fakes, sentry):
    redis.Redis.from_url(BROKER).flushdb()
    extra = {
        "CELERY_VISIBILITY_TIMEOUT_S": "15",
        "DRAFT_SEND_TIMEOUT_S": "10",  # inside the soft limit (drafts.E004); the GHL call below takes 6 s
        "DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S": "15",
        "DRAFT_SEND_TASK_TIME_LIMIT_S": "20",
        "DRAFT_SEND_LEASE_MARGIN_S": "5",
        # A killed worker's claim on its message lasts the task's hard limit + the longest
        # rate-limit wait + 30 s (drafts/claims.py): short limits here make it ~60 s, so the
        # swept task takes the work over within the wait below.
        "DRAFT_TASK_SOFT_TIME_LIMIT_S": "15",
        "DRAFT_TASK_TIME_LIMIT_S": "20",
        "OPENAI_QUEUE_MAX_WAIT_S": "10",
    }
    with running_system(
        ARTIFACTS / "worker-killed", fakes=fakes, sentry=sentry, broker=BROKER, worker=False, extra_env=extra
    ) as system:
        yield system


def _is_draft_request(body: dict) -> bool:
    """A call that writes the reply: a draft call (no JSON schema) or the one call that tags and
    replies (schema ``tag_and_reply``, production's default); a classification alone asks for
    another schema."""
    text_format = (body.get("text") or {}).get("format") or {}
    return text_format.get("type") != "json_schema" or text_format.get("name") == "tag_and_reply"


def _kill(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _draft(slug: str, message_id: str) -> list[tuple]:
    return sql(
        """SELECT d.id, d.status, d.error FROM drafts_draft d JOIN messaging_message m ON m.id = d.message_id
           JOIN workspaces_workspace w ON w.id = d.workspace_id WHERE w.slug = %s AND m.ghl_message_id = %s
           ORDER BY d.id""",
        (slug, message_id),
    )


def _wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_worker_killed_mid_draft_then_mid_send(private):
    system = private
    # Noon in the workspace's zone: the SMS is inside its send window whatever time the suite runs.
    ws = system.workspace(
        "killed",
        ghl_location_id="LOCKILLED00000000001",
        ghl_token="pit-killed-0000-secret-token",
        timezone=midday_zone(),
    )
    openai, ghl = system.fakes.openai, system.fakes.ghl
    message_id = "killedmsg00000000001"
    contact = "killedcontact0000001"
    ghl.add_contact(contact, firstName="Kim", phone="+14155550199", timezone="America/New_York")
    body = ghl_inbound_body(
        contact_id=contact, text=sensitive("Yes, can we meet tomorrow? (killed)"), message_id=message_id
    )
    body["locationId"] = ws["ghl_location_id"]

    # --- mid-draft --- (the fakes' knobs are restored after the test: conftest.fakes_restored)
    openai.latency_s = 2.0  # under the classify (3 s) and draft (4 s) timeouts: a window to kill in
    answered = len(openai.records)
    started = time.monotonic()
    with default_worker(system.env, system.logs / "worker-1.log") as first:
        assert system.post("ghl", ws["slug"], ws["secret"], body)[0] == 200
        assert _wait(lambda: any(_is_draft_request(r) for r in openai.requests[answered:]) or None, 90)
        _kill(first)  # inside the draft's LLM call
    openai.latency_s = 0.2
    with default_worker(system.env, system.logs / "worker-2.log"):
        drafts = _wait(lambda: [d for d in _draft(ws["slug"], message_id) if d[1] == "ready"] or None, 180)
        draft_s = time.monotonic() - started
        all_drafts = _draft(ws["slug"], message_id)

        # --- mid-send ---
        draft_id = drafts[0][0]
        session = _login(system)
        ghl.latency_s = 6.0
        sends_before = sum(1 for s in ghl.sends if s.get("contactId") == contact)
        page = session.get(f"{system.base_url}/admin/inbox/", headers=PROXY_HEADERS)
        _insecure(session)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    with default_worker(system.env, system.logs / "worker-3.log") as third:
        answer = session.post(
            f"{system.base_url}/admin/inbox/",
            data={"csrfmiddlewaretoken": token, "action": "send", "draft_id": str(draft_id)},
            headers={**PROXY_HEADERS, "Referer": f"https://{system.base_url.split('//')[1]}/admin/inbox/"},
            allow_redirects=False,
        )
        assert answer.status_code == 302, re.sub(r"\s+", " ", answer.text)[-1500:]
        # The claim writes the outbound row as ``sending`` just before the provider call.
        claimed = "SELECT count(*) FROM messaging_message WHERE draft_source_id = %s AND delivery = 'sending'"
        assert _wait(lambda: scalar(claimed, (draft_id,)), 60)
        time.sleep(2.0)  # inside the 6 s provider call
        killed_while_sending = scalar(claimed, (draft_id,)) == 1
        _kill(third)
    ghl.latency_s = 0.0
    with default_worker(system.env, system.logs / "worker-4.log"):
        final = _wait(
            lambda: scalar("SELECT status FROM drafts_draft WHERE id = %s", (draft_id,)) in ("sent", "failed"), 200
        )
        status, error = sql("SELECT status, error FROM drafts_draft WHERE id = %s", (draft_id,))[0]
    time.sleep(7)  # any second call would have arrived by now
    provider_sends = sum(1 for s in ghl.sends if s.get("contactId") == contact) - sends_before
    outbound = scalar(
        "SELECT count(*) FROM messaging_message WHERE draft_source_id = %s AND direction = 'outbound'", (draft_id,)
    )
    report(
        "4 worker SIGKILLed",
        draft_after_kill=f"{[d[1] for d in all_drafts]} in {draft_s:.1f}s",
        killed_while_sending=killed_while_sending,
        send_after_kill=f"{status} ({error or '-'})",
        provider_received=provider_sends,
        outbound_rows=outbound,
    )
    assert [d[1] for d in all_drafts if d[1] != "superseded"] == ["ready"]
    assert killed_while_sending and final
    assert provider_sends == 1 and outbound == 1


def _login(system) -> requests.Session:
    """An operator's admin session (the cookies are Secure: sent by hand over the test's plain HTTP)."""
    system.manage("shell", "-c", _CREATE_OPERATOR)
    session = requests.Session()
    login = session.get(f"{system.base_url}/admin/login/", headers=PROXY_HEADERS)
    _insecure(session)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    answer = session.post(
        f"{system.base_url}/admin/login/?next=/admin/inbox/",
        data={"csrfmiddlewaretoken": token, "username": "sysop", "password": PASSWORD, "next": "/admin/inbox/"},
        headers={**PROXY_HEADERS, "Referer": f"https://{system.base_url.split('//')[1]}/admin/login/"},
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text[:300]
    _insecure(session)
    return session


def _insecure(session: requests.Session) -> None:
    for cookie in session.cookies:
        cookie.secure = False


_CREATE_OPERATOR = (
    "from django.contrib.auth import get_user_model; U = get_user_model(); "
    "U.objects.filter(username='sysop').exists() or "
    f"U.objects.create_superuser('sysop', 'sysop@example.com', '{PASSWORD}')"
)
