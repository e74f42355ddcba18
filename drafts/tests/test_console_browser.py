"""One headless-browser pass over the real console: an operator of A logs in on a live server and
sees only A's data. Debian's chromium + chromium-driver through selenium (no browser download);
screenshots land in test-artifacts/console/ (gitignored) for a person to look at."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from core.testing.browser import needs_chromium, screenshot
from drafts.models import Draft
from drafts.tests.factories import lead_create, message_create
from workspaces.models import Workspace

PASSWORD = "op-a-browser-pass-0123"

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), needs_chromium]


def _two_tenants():
    a = Workspace.objects.create(slug="acme-browser", name="Acme Browser Co")
    b = Workspace.objects.create(slug="globex-secret", name="Globex Secret Ltd")
    seen = {}
    for workspace, who in ((a, "Alice Acmeson"), (b, "Boris Globexov")):
        first, last = who.split()
        lead = lead_create(workspace=workspace, first_name=first, last_name=last, email=f"{first.lower()}@example.com")
        message = message_create(lead=lead, body=f"Hi, this is {first}, call me")
        draft = Draft.objects.create(
            workspace=workspace, lead=lead, message=message, channel="sms", status="ready", content=f"Reply to {first}"
        )
        seen[workspace.slug] = (lead, draft)
    call_command("configure_operator", "op-a", "--workspace", a.slug, stdout=io.StringIO())
    user = get_user_model().objects.get(username="op-a")
    user.set_password(PASSWORD)
    user.save()
    return a, b, seen


def _shot(driver, name: str):
    return screenshot(driver, "console", name)


def test_operator_of_a_sees_only_a_in_a_real_browser(live_server, browser):
    a, b, seen = _two_tenants()
    b_lead, b_draft = seen[b.slug]
    forbidden = ("globex-secret", "Globex Secret", "Boris", "Globexov")

    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("op-a")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # A click returns before the next page has loaded: wait for the logged-in page itself.
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "logout-form"))
    assert "Log out" in browser.page_source or "logout" in browser.page_source
    _shot(browser, "01-index")

    pages = {
        "02-leads": "/admin/leads/lead/",
        "03-drafts": "/admin/drafts/draft/",
        "04-workspaces": "/admin/workspaces/workspace/",
        "05-messages": "/admin/messaging/message/",
        "06-audit": "/admin/workspaces/auditevent/",
    }
    for name, path in pages.items():
        browser.get(f"{live_server.url}{path}")
        source = browser.page_source
        _shot(browser, name)
        assert not [f for f in forbidden if f in source], (path, [f for f in forbidden if f in source])
    browser.get(f"{live_server.url}/admin/leads/lead/")
    assert "Alice" in browser.page_source  # A's own lead is listed
    browser.get(f"{live_server.url}/admin/drafts/draft/")
    assert "acme-browser" in browser.page_source

    browser.get(f"{live_server.url}/admin/leads/lead/{b_lead.pk}/change/")
    _shot(browser, "07-b-lead-404")
    assert "Not Found" in browser.page_source or "404" in browser.page_source
    assert "Boris" not in browser.page_source
    browser.get(f"{live_server.url}/admin/drafts/draft/{b_draft.pk}/change/")
    assert "Boris" not in browser.page_source and "Reply to Boris" not in browser.page_source
