import pytest


def pytest_configure(config):
    from core.testing.clock import ENV_VAR, clock_shift_start

    shift = clock_shift_start(children=True)
    if shift is not None:
        config.stash[_SHIFT_KEY] = f"{ENV_VAR}: the clock runs {shift} ahead"


_SHIFT_KEY = pytest.StashKey[str]()


def pytest_report_header(config):
    return config.stash.get(_SHIFT_KEY, None)


@pytest.fixture(autouse=True)
def _no_network_by_default(monkeypatch):
    """Every test runs with outbound HTTP to real providers impossible.

    Provider base URLs point at an unroutable local port unless a test
    overrides them (``responses`` mocks or a local fake server).
    """
    from django.conf import settings

    monkeypatch.setattr(settings, "GHL_API_BASE_URL", "http://127.0.0.1:9/ghl", raising=False)
    monkeypatch.setattr(settings, "GHL_BACKEND_BASE_URL", "http://127.0.0.1:9/ghl-backend", raising=False)
    monkeypatch.setattr(settings, "CALENDLY_API_BASE_URL", "http://127.0.0.1:9/calendly", raising=False)
    monkeypatch.setattr(settings, "OPENAI_BASE_URL", "http://127.0.0.1:9/v1", raising=False)
    monkeypatch.setattr(settings, "OPENAI_API_KEY", "sk-test-not-a-real-key", raising=False)
    # Fake providers listen on 127.0.0.1: open the outbound guard for it, as the demo does
    # (the guard's own tests set the allow-list they need).
    monkeypatch.setattr(settings, "LEADLINE_OUTBOUND_ALLOWLIST", ["127.0.0.1"], raising=False)


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch):
    """The outbound guard resolves names through a fake resolver (``fake_dns.add(name, *ips)``)."""
    import core.http
    from core.testing.dns import FakeResolver

    resolver = FakeResolver()
    monkeypatch.setattr(core.http, "resolve_host", resolver)
    return resolver


@pytest.fixture(autouse=True)
def _rate_limits_per_test(monkeypatch):
    """Each test starts with fresh, per-process rate limiters (a 429 in one test must not make the
    next wait), and so do the processes it starts (workers, gunicorn: no limiter state shared in
    Redis across tests or runs); a test that wants the Redis-shared limiter sets
    ``RATE_LIMIT_REDIS_URL`` itself."""
    from django.conf import settings

    from core.ratelimit import shared_limiters_clear

    monkeypatch.setattr(settings, "RATE_LIMIT_REDIS_URL", "", raising=False)
    monkeypatch.setenv("RATE_LIMIT_REDIS_URL", "")
    shared_limiters_clear()
    yield
    shared_limiters_clear()


@pytest.fixture
def workspace(db):
    from workspaces.services import workspace_configure

    ws, _ = workspace_configure(
        slug="acme",
        changes={
            "name": "Acme Roofing",
            "timezone": "America/New_York",
            "webhook_secret": "whsec-acme-0123456789abcdef",
            "ghl_location_id": "LOC_ACME_123",
            "ghl_token": "pit-11111111-2222-3333-4444-555555555555",
            "persona_name": "Sam",
            "company_name": "Acme Roofing",
        },
    )
    return ws


@pytest.fixture
def other_workspace(db):
    from workspaces.services import workspace_configure

    ws, _ = workspace_configure(
        slug="globex",
        changes={
            "name": "Globex",
            "timezone": "Europe/London",
            "webhook_secret": "whsec-globex-0123456789abcdef",
            "ghl_location_id": "LOC_GLOBEX_456",
            "ghl_token": "pit-99999999-8888-7777-6666-555555555555",
        },
    )
    return ws


@pytest.fixture
def browser():
    """Headless Debian chromium through selenium (core/testing/browser.py)."""
    from core.testing.browser import chromium

    with chromium() as driver:
        yield driver


@pytest.fixture
def redis_client():
    """A client of the test Redis (``TEST_REDIS_URL``); the test is skipped when there is none."""
    import os

    import redis

    client = redis.Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at TEST_REDIS_URL")
    return client


@pytest.fixture(autouse=True)
def _two_call_flow_by_default(monkeypatch):
    """The suite's scripted fakes (``fake.enqueue(...)``) follow the two-call chain: a
    classification call, then draft calls. Tests pin it (here and in the processes they start);
    the one-call path (production's default, ``DRAFT_ONE_CALL``) has its own tests, which turn it
    on (``drafts/tests/test_onecall.py``, the burst end-to-end test)."""
    from django.conf import settings

    monkeypatch.setattr(settings, "DRAFT_ONE_CALL", False, raising=False)
    monkeypatch.setenv("DRAFT_ONE_CALL", "false")
