"""The provider fakes answer like the providers (shapes from ../shared/API-NOTES.md and the GHL
vendor specs) and refuse requests the providers would refuse: a client bug shows in tests."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
import requests

from core.testing.fake_calendly import fake_calendly_server
from core.testing.fake_ghl import fake_ghl_server
from core.testing.fake_openai import fake_openai_server
from core.testing.fake_outbox import fake_outbox_server
from core.testing.fakes import fake_stack
from core.testing.processes import BASE_DIR

CAL = "CalendarAAAAAAAAAAA1"
V_CONV = {"Version": "2021-04-15", "Authorization": "Bearer pit-x"}


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def test_ghl_free_slots_are_keyed_by_date_and_the_range_is_checked():
    start = dt.datetime(2030, 3, 4, tzinfo=dt.UTC)
    with fake_ghl_server() as fake:
        fake.add_calendar(CAL, slug="roof")
        url = f"{fake.base_url}/calendars/{CAL}/free-slots"
        ok = requests.get(
            url, params={"startDate": _ms(start), "endDate": _ms(start + dt.timedelta(days=2))}, headers=V_CONV
        )
        too_long = requests.get(
            url, params={"startDate": _ms(start), "endDate": _ms(start + dt.timedelta(days=32))}, headers=V_CONV
        )
        no_version = requests.get(url, params={"startDate": _ms(start), "endDate": _ms(start)})
        calendars = requests.get(f"{fake.base_url}/calendars/", params={"locationId": "L"}, headers=V_CONV)
    assert ok.status_code == 200
    assert ok.json()["2030-03-04"]["slots"] == ["2030-03-04T15:00:00+00:00", "2030-03-04T19:00:00+00:00"]
    assert ok.headers["X-RateLimit-Max"] == "100"
    assert too_long.status_code == 422 and "31 days" in too_long.json()["message"][0]
    assert no_version.status_code == 422 and "Version" in no_version.json()["message"][0]
    assert calendars.json()["calendars"] == [{"id": CAL, "name": "Calendar", "slug": "roof", "widgetSlug": "roof"}]


def test_ghl_send_is_recorded_and_a_bad_body_is_refused():
    with fake_ghl_server() as fake:
        url = f"{fake.base_url}/conversations/messages"
        sent = requests.post(url, json={"type": "SMS", "contactId": "c1", "message": "hi"}, headers=V_CONV)
        bad = requests.post(url, json={"type": "Carrier pigeon", "contactId": "c1"}, headers=V_CONV)
        listed = requests.get(f"{fake.base_url}/_fake/sends").json()
    assert sent.status_code == 201 and sent.json()["messageId"]
    assert bad.status_code == 422 and "type must be one of" in bad.json()["message"][0]
    assert [(s["contactId"], s["message"]) for s in listed] == [("c1", "hi")]


def test_ghl_forced_429s_then_the_window_admits_again():
    with fake_ghl_server(force_429=2, retry_after=1) as fake:
        answers = [
            requests.get(f"{fake.base_url}/calendars/", params={"locationId": "L"}, headers=V_CONV) for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert fake.rate_limited == 2


def test_ghl_hanging_widget_and_booking_page_never_answer_in_time():
    with fake_ghl_server() as fake:
        fake.add_calendar(CAL, slug="stuck", behaviour="hang", page="hang")
        for url in (
            fake.booking_url("stuck"),
            f"{fake.backend_base_url}/calendars/{CAL}/free-slots?startDate=0&endDate=1",
        ):
            with pytest.raises(requests.ReadTimeout):
                requests.get(url, timeout=0.5)


def test_calendly_checks_the_window_and_the_token():
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with fake_calendly_server(max_window_days=7) as fake:
        uri = fake.add_event_type("intro")
        url = f"{fake.base_url}/event_type_available_times"

        def ask(days: int, auth: str = "Bearer t"):
            params = {
                "event_type": uri,
                "start_time": start.isoformat(),
                "end_time": (start + dt.timedelta(days=days)).isoformat(),
            }
            return requests.get(url, params=params, headers={"Authorization": auth})

        ok, too_long, anonymous = ask(3), ask(8), ask(3, auth="")
    assert ok.status_code == 200 and len(ok.json()["collection"]) in (2, 3)
    assert too_long.status_code == 400 and too_long.json()["details"][0]["parameter"] == "end_time"
    assert anonymous.status_code == 401


def test_emailbison_reply_send_needs_a_token_and_the_fields():
    with fake_outbox_server() as fake:
        fake.add_reply(5, lead_id=9, email_subject="Re: hi")
        base = fake.emailbison_base_url + "/api"
        auth = {"Authorization": "Bearer eb"}
        anonymous = requests.get(f"{base}/sender-emails")
        reply = requests.get(f"{base}/replies/5", headers=auth).json()["data"]
        by_lead = requests.get(f"{base}/leads/9/replies", headers=auth).json()["data"]
        missing = requests.post(f"{base}/replies/5/reply", json={"sender_email_id": 1, "message": "x"}, headers=auth)
        good = requests.post(
            f"{base}/replies/5/reply",
            json={"sender_email_id": 1, "to_emails": [{"email_address": "a@b.example"}], "message": "x"},
            headers=auth,
        )
    assert anonymous.status_code == 401
    assert reply["email_subject"] == "Re: hi" and [r["id"] for r in by_lead] == [5]
    assert missing.status_code == 422 and "to emails" in missing.json()["message"]
    assert good.status_code == 200 and len(fake.sends) == 1


def test_openai_drafts_offer_the_prompts_slots_and_faults_come_on_demand():
    instructions = "Reply. Channel: sms.\nIf a meeting fits, offer these times (free):\n- Mon 10:00 AM\n- Tue 1:00 PM\n"
    with fake_openai_server() as fake:
        url = f"{fake.base_url}/responses"
        control = requests.post(fake.base_url.rsplit("/v1", 1)[0] + "/_fake/script", json={"behaviours": ["500"]})
        failed = requests.post(url, json={"model": "m", "instructions": instructions, "input": "when?"})
        ok = requests.post(url, json={"model": "m", "instructions": instructions, "input": "when?"})
        stats = requests.get(fake.base_url.rsplit("/v1", 1)[0] + "/_fake/stats").json()
    assert control.json()["queued"] == 1
    assert failed.status_code == 500
    text = ok.json()["output"][1]["content"][0]["text"]
    assert "Mon 10:00 AM or Tue 1:00 PM" in text
    assert stats["answered"] == {"draft:500": 1, "draft:ok": 1}


def test_the_stack_gives_app_settings_for_every_fake():
    with fake_stack() as stack:
        env = stack.env()
        assert requests.get(f"{env['GHL_API_BASE_URL']}/_fake/sends").json() == []
        assert env["OPENAI_BASE_URL"].endswith("/v1") and env["GHL_BACKEND_BASE_URL"].endswith("/backend")


def test_the_command_plans_ports_and_keys_and_prints_the_settings(tmp_path):
    plan_file = tmp_path / "fakes.json"
    run = [sys.executable, "-m", "core.testing.fakes"]
    subprocess.run([*run, "--plan", str(plan_file)], cwd=BASE_DIR, check=True)
    plan = json.loads(plan_file.read_text())
    assert oct(plan_file.stat().st_mode & 0o777) == "0o600"  # it holds a signing key
    assert set(plan["ports"]) == {"ghl", "emailbison", "calendly", "openai"}
    exports = subprocess.run([*run, "--env", str(plan_file)], cwd=BASE_DIR, check=True, capture_output=True, text=True)
    assert f"export GHL_API_BASE_URL='http://127.0.0.1:{plan['ports']['ghl']}'" in exports.stdout
    assert f"export GHL_WEBHOOK_ED25519_PUBLIC_KEY='{plan['ghl_public_key']}'" in exports.stdout
