"""Webhook endpoints: authenticate → validate → parse → ingest (django-anymail style).

Nothing slow runs here: one transaction of a few small queries, then the
classify+draft task is enqueued after commit (or left to the sweeper).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from django.conf import settings
from rest_framework import serializers as drf_serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.redaction import REDACTED, redact_data
from messaging.models import WebhookEvent
from messaging.selectors import MAX_ERROR_LENGTH, WebhookWorkspace, webhook_workspace_get
from messaging.serializers import (
    GHL_CUSTOM_WEBHOOK,
    GHL_FOREIGN_LOCATION_ERROR,
    Delivery,
    MalformedBody,
    emailbison_delivery_parse,
    ghl_delivery_parse,
    ghl_location_foreign,
    ghl_location_ids_peek,
    ghl_location_problem,
    ghl_payload_shape,
    validation_error_text,
    webhook_json_load,
)
from messaging.services import webhook_delivery_ingest, webhook_event_log
from messaging.signatures import (
    ED25519_HEADER,
    RSA_HEADER,
    SignatureError,
    ghl_signature_present,
    ghl_signature_verify,
)

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Webhook-Secret"
# Never stored with a WebhookEvent.
DROPPED_HEADERS = frozenset({"x-webhook-secret", "authorization", "proxy-authorization", "cookie"})


# --- Refusals that are never stored ---------------------------------------------------------

_refusals: Counter[str] = Counter()
_refusal_logged_at: dict[str, float] = {}
_refusal_lock = threading.Lock()
REFUSAL_LOG_EVERY_S = 1.0


def webhook_refusal_counts() -> dict[str, int]:
    """Refusals (unknown workspace, bad secret, tenant mismatch, too large) counted by this process."""
    with _refusal_lock:
        return dict(_refusals)


def _refusal_note(*, reason: str, provider: str, slug: str, request: Request) -> None:
    """Count and log (rate-limited, never the body or the secret) a refused request."""
    now = time.monotonic()
    key = f"{provider}:{reason}"
    with _refusal_lock:
        _refusals[key] += 1
        total = _refusals[key]
        due = now - _refusal_logged_at.get(key, 0.0) >= REFUSAL_LOG_EVERY_S
        if due:
            _refusal_logged_at[key] = now
    if due:
        logger.warning(
            "webhook refused: provider=%s reason=%s slug=%r remote=%s total_in_process=%d",
            provider,
            reason,
            slug[:60],
            request.META.get("REMOTE_ADDR", "?"),
            total,
        )


# --- Body handling -----------------------------------------------------------------------------


def _read_body(django_request: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of the body, also for chunked uploads.

    Django bounds its stream by ``Content-Length`` (so an absent one reads as
    empty); a chunked body is read from the server's own input instead.
    """
    meta = django_request.META
    if not meta.get("CONTENT_LENGTH") and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return meta["wsgi.input"].read(limit)
    return django_request.read(limit)


def _storable_headers(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED_HEADERS}
    return redact_data(headers)


def _mask_secret_in(body: Any, secret: str, raw: bytes) -> Any:
    """The workspace secret pasted into a payload field is never stored."""
    if secret and secret.encode() in raw:
        return json.loads(json.dumps(body).replace(json.dumps(secret)[1:-1], REDACTED))
    return body


# --- Views -------------------------------------------------------------------------------------


class _JsonOnly(BaseContentNegotiation):
    """Answer JSON whatever the provider puts in Accept."""

    def select_parser(self, request, parsers):
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    reason: str
    store: bool
    # False for signature refusals: stored for the record, never re-applied by admin.
    reprocessable: bool = True


class WebhookView(APIView):
    """Shared pipeline; subclasses set ``provider``, ``parse`` and optionally ``check_delivery``."""

    provider: ClassVar[str]
    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()
    parser_classes = ()
    renderer_classes = (JSONRenderer,)
    content_negotiation_class = _JsonOnly

    @staticmethod
    def parse(payload: Any) -> Delivery:
        raise NotImplementedError

    def check_delivery(
        self, *, workspace: WebhookWorkspace, raw: bytes, payload: Any, request: Request
    ) -> Refusal | None:
        return None

    def _refuse(self, *, status: int, error: str, reason: str, slug: str, request: Request) -> Response:
        _refusal_note(reason=reason, provider=self.provider, slug=slug, request=request)
        return Response({"error": error}, status=status)

    def post(self, request: Request, slug: str) -> Response:
        django_request = request._request
        cap = settings.WEBHOOK_MAX_BODY_BYTES
        try:
            declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > cap:
            return self._refuse(
                status=413, error=f"body: larger than {cap} bytes", reason="too_large", slug=slug, request=request
            )

        workspace = webhook_workspace_get(slug=slug) if len(slug) <= 50 else None
        if workspace is None:
            return self._refuse(
                status=404, error="workspace: unknown", reason="unknown_workspace", slug=slug, request=request
            )
        given = django_request.headers.get(SECRET_HEADER) or django_request.GET.get("secret") or ""
        if not workspace.webhook_secret or not hmac.compare_digest(
            given.encode("utf-8", "replace"), workspace.webhook_secret.encode()
        ):
            return self._refuse(
                status=401,
                error=f"{SECRET_HEADER}: missing or wrong webhook secret",
                reason="bad_secret",
                slug=slug,
                request=request,
            )

        raw = _read_body(django_request, cap + 1)
        if len(raw) > cap:
            return self._refuse(
                status=413, error=f"body: larger than {cap} bytes", reason="too_large", slug=slug, request=request
            )
        headers = _storable_headers(request)
        try:
            payload = webhook_json_load(raw)
        except MalformedBody as exc:
            webhook_event_log(
                workspace_id=workspace.id, provider=self.provider, event_type="", body=None, headers=headers,
                status=WebhookEvent.Status.REJECTED, error=str(exc),
            )  # fmt: skip
            return Response({"error": str(exc)}, status=400)
        event_type = _peek_event_type(payload)
        body = _mask_secret_in(payload, workspace.webhook_secret, raw)

        refusal = self.check_delivery(workspace=workspace, raw=raw, payload=payload, request=request)
        if refusal is not None:
            if refusal.store:
                webhook_event_log(
                    workspace_id=workspace.id, provider=self.provider, event_type=event_type, body=body,
                    headers=headers, status=WebhookEvent.Status.REJECTED, error=refusal.error,
                    reprocessable=refusal.reprocessable,
                )  # fmt: skip
                return Response({"error": refusal.error}, status=refusal.status)
            return self._refuse(
                status=refusal.status, error=refusal.error, reason=refusal.reason, slug=slug, request=request
            )

        try:
            delivery = self.parse(payload)
        except drf_serializers.ValidationError as exc:
            error = validation_error_text(exc.detail)[:MAX_ERROR_LENGTH]
            webhook_event_log(
                workspace_id=workspace.id, provider=self.provider, event_type=event_type, body=body, headers=headers,
                status=WebhookEvent.Status.REJECTED, error=error,
            )  # fmt: skip
            return Response({"error": error}, status=400)

        try:
            result = webhook_delivery_ingest(
                workspace_id=workspace.id, provider=self.provider, delivery=delivery, body=body, headers=headers
            )
        except Exception as exc:
            webhook_event_log(
                workspace_id=workspace.id, provider=self.provider, event_type=event_type, body=body, headers=headers,
                status=WebhookEvent.Status.FAILED, error=type(exc).__name__,
            )  # fmt: skip
            raise
        return Response(result.as_response(), status=200)


def _peek_event_type(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    value = payload.get("type")
    if isinstance(payload.get("event"), dict):
        value = payload["event"].get("type")
    elif value is None and isinstance(payload.get("message"), dict):
        value = "CustomWebhook"
    return value[:64] if isinstance(value, str) else ""


class GhlWebhookView(WebhookView):
    provider = WebhookEvent.Provider.GHL
    parse = staticmethod(ghl_delivery_parse)

    def check_delivery(
        self, *, workspace: WebhookWorkspace, raw: bytes, payload: Any, request: Request
    ) -> Refusal | None:
        locations = ghl_location_ids_peek(payload)
        if ghl_location_foreign(location_ids=locations, workspace_location_id=workspace.ghl_location_id):
            # Another tenant's data with this tenant's secret: nothing is written.
            return Refusal(403, GHL_FOREIGN_LOCATION_ERROR, "tenant_mismatch", store=False)
        shape = ghl_payload_shape(payload)
        if workspace.verify_ghl_signatures:
            headers = request._request.headers
            try:
                if ghl_signature_present(headers):
                    ghl_signature_verify(raw_body=raw, headers=headers, payload=payload)
                elif shape != GHL_CUSTOM_WEBHOOK:
                    # Only the workflow Custom Webhook is unsigned; a marketplace
                    # event without signature headers is not taken on trust.
                    raise SignatureError(f"{ED25519_HEADER}: required (or {RSA_HEADER}) on marketplace events")
            except SignatureError as exc:
                return Refusal(401, str(exc), "bad_signature", store=True, reprocessable=False)
        problem = ghl_location_problem(
            shape=shape,
            location_id=locations[0] if locations else "",
            workspace_location_id=workspace.ghl_location_id,
            payload=payload,
        )
        if problem:
            return Refusal(400, problem, "missing_location", store=True)
        return None


class EmailBisonWebhookView(WebhookView):
    provider = WebhookEvent.Provider.EMAILBISON
    parse = staticmethod(emailbison_delivery_parse)
