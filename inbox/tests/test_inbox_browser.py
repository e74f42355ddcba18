"""The inbox in a real headless browser (Debian chromium + chromium-driver through selenium): an
operator logs in, opens the inbox, edits a draft, approves and sends it, sees it leave the queue,
and finds the sent message linked from the draft. The send goes through a real Celery worker to
a local fake GHL. Screenshots land in test-artifacts/inbox/ (gitignored)."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from core.testing.browser import needs_chromium, screenshot
from core.testing.clock import midday_zone
from core.testing.fake_outbox import fake_outbox_server
from core.testing.processes import celery_worker, live_database_url, wait_until
from drafts.models import Draft, DraftStatus
from drafts.tests.factories import lead_create, message_create
from workspaces.services import workspace_configure

PASSWORD = "inbox-browser-pass-0123"

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), needs_chromium]


def _shot(driver, name: str):
    return screenshot(driver, "inbox", name)


def test_operator_edits_approves_and_sends_from_the_inbox(live_server, browser, settings):
    broker = os.environ.get("TEST_REDIS_URL") or os.environ["CELERY_BROKER_URL"]
    with fake_outbox_server() as fake:
        settings.GHL_API_BASE_URL = fake.ghl_base_url
        workspace, _ = workspace_configure(
            slug="acme-inbox",
            changes={
                "name": "Acme Roofing",
                "ghl_location_id": "LOCINBOXBROWSER1",
                "ghl_token": "pit-inbox-browser-token",
            },
        )
        drafts = []
        for first, text, reply in (
            ("Dana", "Yes! Can you come Tuesday to look at the roof?", "Hi Dana, Tuesday 10:00 or 14:00 works."),
            ("Eli", "How much for a full replacement?", "Hi Eli, happy to quote: could we call Wednesday?"),
        ):
            lead = lead_create(workspace=workspace, first_name=first, timezone=midday_zone())
            message = message_create(lead=lead, body=text, sentiment="Interested")
            drafts.append(
                Draft.objects.create(
                    workspace=workspace,
                    lead=lead,
                    message=message,
                    channel="sms",
                    status=DraftStatus.READY,
                    content=reply,
                    offered_slots=[{"label": "Tue Dec 1, 10:00 AM"}, {"label": "Tue Dec 1, 2:00 PM"}],
                )
            )
        get_user_model().objects.create_superuser("operator", "op@acme.test", PASSWORD)
        env = {
            "DATABASE_URL": live_database_url(),
            "CELERY_BROKER_URL": broker,
            "GHL_API_BASE_URL": fake.ghl_base_url,
        }
        with celery_worker(env=env, pool="threads", concurrency=2, queues="celery,sends"):
            browser.get(f"{live_server.url}/admin/login/?next=/admin/inbox/")
            browser.find_element(By.NAME, "username").send_keys("operator")
            browser.find_element(By.NAME, "password").send_keys(PASSWORD)
            browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
            # A click returns before the next page has loaded: wait for the page itself.
            WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "inbox-link"))
            assert "Inbox: 2 waiting" in browser.page_source
            _shot(browser, "01-inbox")

            row = browser.find_element(By.ID, f"draft-{drafts[0].pk}")
            box = row.find_element(By.NAME, "content")
            box.clear()
            box.send_keys("Hi Dana, Tuesday 10:00 works for our roofer. See you then!")
            _shot(browser, "02-edited")
            row.find_element(By.CSS_SELECTOR, "button[value=send]").click()
            WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist"))
            assert f'id="draft-{drafts[0].pk}"' not in browser.page_source  # it left the queue
            assert "approved: it is being sent" in browser.page_source
            _shot(browser, "03-after-send")

            sent = wait_until(
                lambda: Draft.objects.filter(pk=drafts[0].pk, status=DraftStatus.SENT).first(), 30, "the send"
            )
        assert [s.body["message"] for s in fake.sends] == ["Hi Dana, Tuesday 10:00 works for our roofer. See you then!"]
        browser.get(f"{live_server.url}/admin/drafts/draft/{sent.pk}/change/")
        link = browser.find_element(By.LINK_TEXT, f"message #{sent.sent_message_id}")
        _shot(browser, "04-draft-sent")
        link.click()
        WebDriverWait(browser, 30).until(lambda d: "/admin/messaging/message/" in d.current_url)
        assert "Hi Dana, Tuesday 10:00 works" in browser.page_source
        _shot(browser, "05-sent-message")
