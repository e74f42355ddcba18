"""The outbound guard of core/http.py: URLs from workspace settings reach only public addresses,
checked on the address actually connected to (names resolved by the guard, redirects included)."""

from __future__ import annotations

import pytest

from core.http import (
    HttpClient,
    OutboundAddressRefused,
    OutboundAllowlist,
    ProviderOutboundRefused,
    address_refusal_reason,
    check_outbound_url,
)
from core.testing.pages import page_server


@pytest.fixture
def local_page():
    with page_server(body=b'{"calendarId": "internal-secret-page"}', content_type="application/json") as page:
        yield page


@pytest.fixture
def closed_allowlist(settings):
    settings.LEADLINE_OUTBOUND_ALLOWLIST = []
    return settings


def _guarded() -> HttpClient:
    return HttpClient(provider="booking-page", outbound_guard=True, connect_timeout_s=1, read_timeout_s=2)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not a public address"),
    ],
)
def test_non_public_addresses_are_refused(address, reason):
    assert reason in address_refusal_reason(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert address_refusal_reason(address) is None


def test_allowlist_takes_hosts_and_networks():
    allow = OutboundAllowlist.parse(["127.0.0.1", "10.0.0.0/8", "Demo.Local", " "])
    assert allow.allows_address("127.0.0.1") and allow.allows_address("10.9.8.7")
    assert allow.allows_address("::ffff:10.0.0.1") and not allow.allows_address("192.168.0.1")
    assert allow.allows_host("demo.local") and not allow.allows_host("other.local")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/widget/bookings/x",
        "http://10.0.0.8/widget/bookings/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/x",
        "https://internal.example.test/widget/bookings/x",  # resolves to 10.x (fake DNS)
        "https://metadata.example.test/",  # resolves to the metadata address
    ],
)
def test_save_time_check_refuses_non_public_targets(closed_allowlist, fake_dns, url):
    fake_dns.add("internal.example.test", "10.20.30.40")
    fake_dns.add("metadata.example.test", "169.254.169.254")
    with pytest.raises(OutboundAddressRefused, match="refused"):
        check_outbound_url(url)


def test_save_time_check_passes_public_and_unresolvable_names(closed_allowlist, fake_dns):
    fake_dns.add("book.example.com", "93.184.216.34")
    check_outbound_url("https://book.example.com/widget/bookings/x")
    check_outbound_url("https://not-resolvable.example.test/x")  # judged again at connect time


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "rebound.example.test"])
def test_fetch_time_refuses_loopback_before_sending_anything(closed_allowlist, fake_dns, local_page, host):
    page = local_page
    fake_dns.add("rebound.example.test", "127.0.0.1")
    with _guarded() as client, pytest.raises(ProviderOutboundRefused) as excinfo:
        client.request("GET", f"http://{host}:{page.port}/widget/bookings/x")
    assert page.hits == []  # nothing reached the server
    assert "loopback" in excinfo.value.message and excinfo.value.code == "outbound_refused"
    assert "internal-secret-page" not in str(excinfo.value)


@pytest.mark.parametrize("address", ["10.0.0.5", "169.254.169.254"])
def test_fetch_time_refuses_private_and_metadata_names(closed_allowlist, fake_dns, address, monkeypatch):
    """A name that was public when saved and resolves to a private address later (DNS rebinding)."""
    import socket

    fake_dns.add("booking.example.test", "93.184.216.34")
    check_outbound_url("https://booking.example.test/page")  # accepted when saved
    fake_dns.add("booking.example.test", address)
    connects = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a) or real(*a, **k))
    with _guarded() as client, pytest.raises(ProviderOutboundRefused, match=address.replace(".", r"\.")):
        client.request("GET", "http://booking.example.test/page")
    assert connects == []


def test_redirects_are_checked_too(settings, fake_dns, local_page):
    page = local_page
    settings.LEADLINE_OUTBOUND_ALLOWLIST = ["public-looking.test"]  # a host entry opens that name only
    fake_dns.add("public-looking.test", "127.0.0.1")
    page.redirects["/redirect"] = f"http://127.0.0.1:{page.port}/internal"
    with _guarded() as client, pytest.raises(ProviderOutboundRefused):
        client.request("GET", f"http://public-looking.test:{page.port}/redirect")
    assert page.hits == ["/redirect"]


def test_allowlist_opens_the_guard(settings, local_page):
    page = local_page
    settings.LEADLINE_OUTBOUND_ALLOWLIST = ["127.0.0.0/8"]
    with _guarded() as client:
        response = client.request("GET", f"http://127.0.0.1:{page.port}/page")
    assert response.status_code == 200 and page.hits == ["/page"]


def test_unguarded_clients_are_unchanged(closed_allowlist, local_page):
    """Provider API clients (env-configured base URLs) do not pass the guard."""
    page = local_page
    with HttpClient(provider="api", connect_timeout_s=1, read_timeout_s=2) as client:
        assert client.request("GET", f"http://127.0.0.1:{page.port}/api").status_code == 200
