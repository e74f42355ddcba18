"""Fixtures of the messaging tests; the drafts tests that feed webhooks use them too
(both conftest files import them)."""

import threading

import pytest

GHL_SECRET = "whsec-acme-0123456789abcdef"
EB_SECRET = GHL_SECRET


class EnqueueRecorder:
    """Stands in for the inbound work task's ``apply_async`` (``classify_and_draft``, registered
    by drafts): records message ids, thread-safe."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()
        self.fail_with: BaseException | None = None

    def __call__(self, args=None, kwargs=None, **options):
        if self.fail_with is not None:
            raise self.fail_with
        with self.lock:
            self.calls.append(args[0])


@pytest.fixture(autouse=True)
def _fresh_webhook_state():
    from messaging.selectors import webhook_workspace_cache_clear
    from messaging.services import broker_health

    webhook_workspace_cache_clear()
    broker_health.reset()
    yield
    webhook_workspace_cache_clear()
    broker_health.reset()


@pytest.fixture
def enqueued(monkeypatch):
    from messaging.services import inbound_work_task

    recorder = EnqueueRecorder()
    monkeypatch.setattr(inbound_work_task(), "apply_async", recorder)
    return recorder


@pytest.fixture
def admin_client_logged(django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-123456789")
    client = Client()
    client.force_login(user)
    return client
