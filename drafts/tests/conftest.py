from __future__ import annotations

import pytest

from core.testing.fake_openai import fake_openai_server
from messaging.tests.fixtures import _fresh_webhook_state, admin_client_logged, enqueued  # noqa: F401 - fixtures


@pytest.fixture
def fake_openai(settings):
    """A local fake Responses API; the wrapper points at it. Script it with ``fake.enqueue(...)``."""
    with fake_openai_server(latency_s=0.0, seed=1) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test-fake-0000"
        yield fake


@pytest.fixture
def fast_budgets(settings):
    """Small time budgets so timeout paths finish quickly."""
    settings.OPENAI_DRAFT_TIMEOUT_S = 1.0
    settings.OPENAI_CLASSIFY_TIMEOUT_S = 1.0
    settings.DRAFT_TASK_SOFT_TIME_LIMIT_S = 4
    settings.DRAFT_TASK_TIME_LIMIT_S = 6
    return settings
