"""Sentry initialisation: only when SENTRY_DSN is set, never with PII or bodies."""

from __future__ import annotations

from typing import Any

from core.redaction import redact_data, redact_text

# Our own exceptions' texts are written by us (codes, field names, statuses, never a message
# body); any other exception's text may quote data (a message, a lead's address): dropped.
OWN_PACKAGES = ("core", "drafts", "messaging", "leads", "workspaces", "availability", "ghl", "emailbison", "config")
DROPPED_VALUE = "[dropped: the exception's text may quote a message]"


class ReportedError(RuntimeError):
    """An error already sent to Sentry, re-raised with its type name only: the worker log and
    Celery's failure report then carry no text of the original, and Sentry gets no duplicate."""


def _own_module(module: Any) -> bool:
    return isinstance(module, str) and module.split(".", 1)[0] in OWN_PACKAGES


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``before_send``: redact secrets everywhere, drop message bodies and foreign exceptions'
    texts; drop ``ReportedError`` events (the original was sent)."""
    exc_info = (hint or {}).get("exc_info")
    if exc_info and isinstance(exc_info[1], ReportedError):
        return None
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)  # webhook bodies hold message text
        request.pop("cookies", None)
        if "headers" in request:
            request["headers"] = redact_data(request["headers"])
        if isinstance(request.get("query_string"), str):
            request["query_string"] = redact_text(request["query_string"])
            request["query_string"] = _strip_query_secret(request["query_string"])
    for exception in (event.get("exception") or {}).get("values") or []:
        if isinstance(exception.get("value"), str):
            own = _own_module(exception.get("module"))
            exception["value"] = redact_text(exception["value"]) if own else DROPPED_VALUE
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            if "vars" in frame:
                frame["vars"] = redact_data(frame["vars"], drop_bodies=True)
    if isinstance(event.get("logentry"), dict):
        for key in ("message", "formatted"):
            if isinstance(event["logentry"].get(key), str):
                event["logentry"][key] = redact_text(event["logentry"][key])
        event["logentry"].pop("params", None)
    if isinstance(event.get("message"), str):
        event["message"] = redact_text(event["message"])
    for crumb in (event.get("breadcrumbs") or {}).get("values") or []:
        if isinstance(crumb.get("message"), str):
            crumb["message"] = redact_text(crumb["message"])
        if "data" in crumb:
            crumb["data"] = redact_data(crumb["data"], drop_bodies=True)
    if "extra" in event:
        event["extra"] = redact_data(event["extra"], drop_bodies=True)
    return event


def _strip_query_secret(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name = part.split("=", 1)[0].lower()
        parts.append(f"{name}=[redacted]" if name in {"secret", "token", "api_key"} else part)
    return "&".join(parts)


def sentry_init(*, dsn: str, environment: str) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,
        integrations=[DjangoIntegration(), CeleryIntegration()],
    )
