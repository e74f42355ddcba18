"""URLs from workspace settings: refused on save (admin form, configure_workspace) when they point at
loopback, private, link-local or metadata addresses, refused again at fetch time; changing the
EmailBison base URL needs its token again."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from availability.services import availability_refresh
from core.http import ProviderOutboundRefused
from core.testing.pages import page_server
from ghl.client import GhlClient
from workspaces.models import IntegrationError, Workspace
from workspaces.tests.test_admin import _change_form_data

pytestmark = pytest.mark.django_db

BAD_URLS = [
    ("http://127.0.0.1:8080/widget/bookings/demo", "loopback"),
    ("http://10.0.0.7/widget/bookings/demo", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("https://book.internal.test/widget/bookings/demo", "private"),  # the name resolves to 10.x
    ("https://meta.internal.test/widget/bookings/demo", "cloud metadata"),  # ... to 169.254.169.254
]


@pytest.fixture(autouse=True)
def closed_guard(settings, fake_dns):
    settings.LEADLINE_OUTBOUND_ALLOWLIST = []
    fake_dns.add("book.internal.test", "10.1.2.3")
    fake_dns.add("meta.internal.test", "169.254.169.254")
    fake_dns.add("book.example.com", "93.184.216.34")
    fake_dns.add("eb.example.com", "93.184.216.35")
    fake_dns.add("eb-other.example.com", "93.184.216.36")


@pytest.fixture
def booking_page():
    """A booking widget page on 127.0.0.1 whose embedded calendar id would be read if fetched."""
    with page_server(body=b'<script>window.__cfg = {"calendarId": "AbCdEfGhIjKlMnOpQrSt"}</script>') as page:
        yield page


def configure(*args):
    call_command("configure_workspace", *args, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
@pytest.mark.parametrize("flag", ["--ghl-booking-url", "--calendly-booking-url", "--emailbison-base-url"])
def test_configure_workspace_refuses_internal_urls(workspace, url, reason, flag):
    before = list(Workspace.objects.values())
    with pytest.raises(CommandError) as excinfo:
        configure("acme", f"{flag}={url}")
    assert f"{flag}: " in str(excinfo.value) and reason in str(excinfo.value) and "refused" in str(excinfo.value)
    assert list(Workspace.objects.values()) == before


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_admin_form_refuses_internal_booking_urls(admin_client, workspace, url, reason):
    change = reverse("admin:workspaces_workspace_change", args=[workspace.pk])
    response = admin_client.post(change, _change_form_data(workspace, ghl_booking_url=url))
    assert response.status_code == 200  # the form again, with the error on the field
    errors = response.context["adminform"].form.errors
    assert reason in " ".join(errors["ghl_booking_url"])
    assert Workspace.objects.get(pk=workspace.pk).ghl_booking_url == ""


def test_public_booking_url_is_accepted(admin_client, workspace):
    change = reverse("admin:workspaces_workspace_change", args=[workspace.pk])
    url = "https://book.example.com/widget/bookings/demo"
    response = admin_client.post(change, _change_form_data(workspace, ghl_booking_url=url))
    assert response.status_code == 302
    assert Workspace.objects.get(pk=workspace.pk).ghl_booking_url == url


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.9", "169.254.169.254"])
def test_fetch_time_refuses_a_booking_page_that_resolves_inside(workspace, fake_dns, booking_page, address):
    """Saved while public, the name later points inside: the fetch is refused, nothing is sent."""
    page = booking_page
    fake_dns.add("book.example.com", "93.184.216.34")
    url = f"http://book.example.com:{page.port}/widget/bookings/demo"
    configure("acme", f"--ghl-booking-url={url}", "--booking-provider=ghl")
    fake_dns.add("book.example.com", address)
    Workspace.objects.filter(pk=workspace.pk).update(ghl_token="", ghl_calendar_id="")
    workspace.refresh_from_db()

    availability_refresh(workspace=workspace, force=True)

    assert page.hits == []
    error = IntegrationError.objects.get(workspace=workspace, resolved_at__isnull=True)
    assert "refused" in error.message and address in error.message
    assert "AbCdEfGhIjKlMnOpQrSt" not in error.message


def test_fetch_time_guard_on_the_ghl_booking_page_client(booking_page, fake_dns, settings):
    """The same page is fetched when the allow-list opens 127.0.0.1 (so the refusal above is the guard)."""
    page = booking_page
    url = f"http://127.0.0.1:{page.port}/widget/bookings/demo"
    with GhlClient() as client:
        with pytest.raises(ProviderOutboundRefused):
            client.booking_page_calendar_id(url=url)
        assert page.hits == []
        settings.LEADLINE_OUTBOUND_ALLOWLIST = ["127.0.0.1"]
        assert client.booking_page_calendar_id(url=url) == "AbCdEfGhIjKlMnOpQrSt"
    assert page.hits == ["/widget/bookings/demo"]


def test_changing_the_emailbison_url_needs_the_token_again(workspace):
    configure("acme", "--emailbison-base-url=https://eb.example.com", "--emailbison-token=eb-token-0001-aaaa")
    with pytest.raises(CommandError) as excinfo:
        configure("acme", "--emailbison-base-url=https://eb-other.example.com")
    assert "--emailbison-token: enter the emailbison token again" in str(excinfo.value)
    fresh = Workspace.objects.get(pk=workspace.pk)
    assert fresh.emailbison_base_url == "https://eb.example.com" and fresh.emailbison_token == "eb-token-0001-aaaa"
    configure("acme", "--emailbison-base-url=https://eb-other.example.com", "--emailbison-token=eb-token-0002-bbbb")
    fresh = Workspace.objects.get(pk=workspace.pk)
    assert fresh.emailbison_base_url == "https://eb-other.example.com" and fresh.emailbison_token.endswith("bbbb")
    configure("acme", "--emailbison-base-url=https://eb-other.example.com")  # unchanged URL: no token needed


def test_admin_form_emailbison_url_change_needs_the_token(admin_client, workspace):
    Workspace.objects.filter(pk=workspace.pk).update(
        emailbison_base_url="https://eb.example.com", emailbison_token="eb-token-0001-aaaa"
    )
    workspace.refresh_from_db()
    change = reverse("admin:workspaces_workspace_change", args=[workspace.pk])
    data = _change_form_data(workspace, emailbison_base_url="https://eb-other.example.com")
    response = admin_client.post(change, data)
    assert response.status_code == 200
    assert "enter the emailbison token again" in " ".join(response.context["adminform"].form.errors["emailbison_token"])
    assert Workspace.objects.get(pk=workspace.pk).emailbison_base_url == "https://eb.example.com"
    response = admin_client.post(change, {**data, "emailbison_token": "eb-token-0002-bbbb"})
    assert response.status_code == 302
    fresh = Workspace.objects.get(pk=workspace.pk)
    assert (fresh.emailbison_base_url, fresh.emailbison_token) == ("https://eb-other.example.com", "eb-token-0002-bbbb")
