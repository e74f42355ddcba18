"""Redaction of secrets from anything that leaves the process as text.

Used by the logging filter, the Sentry ``before_send`` scrubber, the HTTP
resilience layer (errors it raises) and ``integration_error_record``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization headers and bearer tokens in any text.
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9\-._~+/=:]{8,}"), r"\1 " + REDACTED),
    # GHL private integration tokens.
    (re.compile(r"\bpit-[0-9a-fA-F\-]{8,}"), REDACTED),
    # OpenAI style keys and other common API key shapes.
    (re.compile(r"\bsk-[A-Za-z0-9\-_]{8,}"), REDACTED),
    # Credentials inside URLs: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # Laravel Sanctum style tokens (EmailBison): "<id>|<40 chars>".
    (re.compile(r"\b\d+\|[A-Za-z0-9]{40,}"), REDACTED),
    # JWTs (GHL OAuth tokens, Calendly personal access tokens).
    (re.compile(r"\beyJ[A-Za-z0-9\-_]{8,}\.[A-Za-z0-9\-_]{8,}\.[A-Za-z0-9\-_]{4,}"), REDACTED),
    # key=value / "key": "value" pairs whose name says secret.
    (
        re.compile(
            r"""(?i)(["']?(?:api[_-]?key|access[_-]?token|refresh[_-]?token|token|secret|webhook[_-]?secret|"""
            r"""password|authorization|x-webhook-secret|client[_-]?secret)["']?\s*[:=]\s*["']?)([^"'\s&,;}]{4,})"""
        ),
        r"\1" + REDACTED,
    ),
]

SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "x_webhook_secret",
        "cookie",
        "set_cookie",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "refresh_token",
        "secret",
        "webhook_secret",
        "password",
        "ghl_token",
        "emailbison_token",
        "calendly_token",
        "client_secret",
    }
)

# Keys whose values are message content: never logged or sent to Sentry.
BODY_KEYS = frozenset({"body", "text_body", "html_body", "message", "content", "input", "instructions", "output_text"})


def redact_text(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every known secret shape (and ``extra_secrets``) replaced."""
    if not text:
        return text
    for secret in extra_secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_data(value: Any, *, drop_bodies: bool = False, _depth: int = 0) -> Any:
    """Deep-copy JSON-like data with sensitive keys masked and text redacted."""
    if _depth > 20:
        return REDACTED
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            lowered = str(key).lower().replace("-", "_")
            if lowered in SENSITIVE_KEYS or lowered.endswith(("_token", "_secret", "_key", "apikey", "_signature")):
                out[key] = REDACTED
            elif drop_bodies and lowered in BODY_KEYS and item not in (None, ""):
                out[key] = "[body omitted]"
            else:
                out[key] = redact_data(item, drop_bodies=drop_bodies, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_data(item, drop_bodies=drop_bodies, _depth=_depth + 1) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def mask_secret(value: str | None) -> str:
    """Show at most the last 4 characters of a secret (and nothing of short ones)."""
    if not value:
        return ""
    if len(value) <= 8:
        return "****"
    return "****" + value[-4:]


class RedactingFilter(logging.Filter):
    """Logging filter that rewrites every record's message without secrets.

    The message is rendered once (``getMessage``) and replaced, so secrets in
    arguments are caught too; exception text is redacted by formatting it here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not kill logging
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
