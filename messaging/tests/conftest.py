from messaging.tests.fixtures import _fresh_webhook_state, admin_client_logged, enqueued  # noqa: F401 - fixtures
