import io
import logging

import pytest

from core.redaction import RedactingFilter, mask_secret, redact_data, redact_text
from core.sentry import scrub_event

PIT = "pit-11111111-2222-3333-4444-555555555555"
SK = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {PIT}", PIT),
        ("headers={'Authorization': 'Bearer eyJhbGciOi.eyJzdWIiOiJ4In0.sig'}", "eyJhbGciOi.eyJzdWIiOiJ4In0.sig"),
        (f"calling GHL with token {PIT}", PIT),
        (f"openai key={SK}", SK),
        ("POST /webhooks/ghl/acme/?secret=whsec-acme-0123456789abcdef", "whsec-acme-0123456789abcdef"),
        ('{"webhook_secret": "whsec-acme-0123456789abcdef"}', "whsec-acme-0123456789abcdef"),
        ("X-Webhook-Secret: whsec-acme-0123456789abcdef", "whsec-acme-0123456789abcdef"),
        ("api_key=abcd1234efgh5678", "abcd1234efgh5678"),
        ("broker redis://:s3cretpass@127.0.0.1:6379/0 down", "s3cretpass"),
        ("db postgres://app:hunter2hunter2@db:5432/x", "hunter2hunter2"),
        ("EmailBison 401 for 12|AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD"),
    ],
)
def test_redact_text_removes_known_secret_shapes(text, secret):
    assert secret not in redact_text(text)


def test_redact_text_keeps_ordinary_text():
    assert redact_text("lead 42 replied at 10:00, status 429") == "lead 42 replied at 10:00, status 429"


def test_redact_data_masks_hyphenated_header_names():
    headers = {"X-Api-Key": "k-123456789", "x-access-token": "t-123456789", "X-Webhook-Secret": "s", "Accept": "json"}
    assert redact_data(headers) == {
        "X-Api-Key": "[redacted]",
        "x-access-token": "[redacted]",
        "X-Webhook-Secret": "[redacted]",
        "Accept": "json",
    }


def test_redact_data_masks_keys_and_drops_bodies():
    data = {"ghl_token": PIT, "nested": [{"Authorization": "x"}], "body": "call me", "count": 3}
    out = redact_data(data, drop_bodies=True)
    assert out == {
        "ghl_token": "[redacted]",
        "nested": [{"Authorization": "[redacted]"}],
        "body": "[body omitted]",
        "count": 3,
    }


def test_mask_secret_shows_at_most_last_four():
    assert mask_secret(PIT) == "****5555"
    assert mask_secret("short") == "****"
    assert mask_secret("") == ""


def test_the_configured_log_handler_redacts_messages_args_and_tracebacks():
    """Goes through the real LOGGING config: the root handler carries the filter."""
    root = logging.getLogger()
    handler = next(h for h in root.handlers if any(isinstance(f, RedactingFilter) for f in h.filters))
    stream = io.StringIO()
    old_stream = handler.setStream(stream)
    try:
        log = logging.getLogger("leadline.test")
        log.warning("GHL said 401 for %s", f"Bearer {PIT}")
        try:
            raise RuntimeError(f"boom with {SK}")
        except RuntimeError:
            log.exception("failed calling openai")
    finally:
        handler.setStream(old_stream)
    output = stream.getvalue()
    assert "GHL said 401" in output and "failed calling openai" in output
    assert PIT not in output and SK not in output


def test_sentry_scrubber_removes_secrets_and_bodies():
    event = {
        "request": {
            "data": '{"body": "I want a quote"}',
            "headers": {"X-Webhook-Secret": "whsec-acme-0123456789abcdef", "User-Agent": "GHL"},
            "query_string": "secret=whsec-acme-0123456789abcdef&x=1",
        },
        "exception": {
            "values": [
                {
                    "value": f"401 Bearer {PIT}",
                    "stacktrace": {"frames": [{"vars": {"token": PIT, "body": "I want a quote", "n": 1}}]},
                }
            ]
        },
        "logentry": {"message": f"key {SK}", "params": ["I want a quote"]},
        "breadcrumbs": {"values": [{"message": f"Bearer {PIT}", "data": {"body": "I want a quote"}}]},
        "extra": {"message": "I want a quote"},
    }
    text = repr(scrub_event(event))
    for leaked in (PIT, SK, "whsec-acme-0123456789abcdef", "I want a quote"):
        assert leaked not in text
    assert event["request"]["headers"]["User-Agent"] == "GHL"


def test_sentry_scrubber_drops_foreign_exception_texts_and_reported_errors():
    from core.sentry import DROPPED_VALUE, ReportedError

    event = {
        "exception": {
            "values": [
                {"type": "KeyError", "module": None, "value": "'lead wrote: call me at 5'"},
                {"type": "UniqueViolation", "module": "psycopg.errors", "value": "Key (email)=(dana@acme.io)"},
                {"type": "LLMError", "module": "drafts.llm", "value": f"timeout: key {SK}"},
            ]
        }
    }
    values = scrub_event(event)["exception"]["values"]
    assert [v["value"] for v in values[:2]] == [DROPPED_VALUE, DROPPED_VALUE]
    assert values[2]["value"].startswith("timeout: key") and SK not in values[2]["value"]

    reported = ReportedError("classify_and_draft(1) failed: KeyError")
    assert scrub_event({"exception": {"values": []}}, {"exc_info": (ReportedError, reported, None)}) is None


def test_sentry_is_initialised_only_when_dsn_is_set(tmp_path):
    import os
    import subprocess
    import sys

    from django.conf import settings

    probe = (
        "import django; django.setup(); import sentry_sdk; c = sentry_sdk.get_client();"
        "print(c.is_active(), c.options.get('send_default_pii'),"
        " c.options.get('before_send').__name__ if c.is_active() else '-')"
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    env.pop("SENTRY_DSN", None)
    off = subprocess.run(
        [sys.executable, "-c", probe], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert off.stdout.split()[0] == "False", off.stderr
    env["SENTRY_DSN"] = "http://public@127.0.0.1:9/1"
    on = subprocess.run(
        [sys.executable, "-c", probe], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert on.stdout.split() == ["True", "False", "scrub_event"], on.stderr
