"""GHL webhook signatures: ``X-GHL-Signature`` (Ed25519) and ``x-wh-signature`` (RSA-SHA256).

Both sign the raw request body and carry a base64 signature. The RSA public
key is GHL's published one (``messaging/keys/``, copied from the vendor
specs); the Ed25519 key comes from ``settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY``
(PEM or base64 of the 32 raw bytes).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from django.conf import settings

from core.timeparse import parse_instant

logger = logging.getLogger(__name__)

RSA_KEY_PATH = Path(__file__).resolve().parent / "keys" / "ghl-webhook-rsa-public-key.pem"
ED25519_HEADER = "X-GHL-Signature"
RSA_HEADER = "x-wh-signature"


class SignatureError(Exception):
    """The delivery's signature, timestamp or id is not acceptable (401)."""


@lru_cache(maxsize=1)
def _rsa_public_key() -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(RSA_KEY_PATH.read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("the GHL x-wh-signature key is not an RSA key")
    return key


ED25519_SETTING = "GHL_WEBHOOK_ED25519_PUBLIC_KEY"


@lru_cache(maxsize=4)
def _ed25519_key_load(configured: str) -> tuple[ed25519.Ed25519PublicKey | None, str]:
    """(key, problem) for the configured value; cached, failures included (parsed once per process).

    An empty setting gives (None, ""). A value that is not an Ed25519 public key
    (bad base64, wrong length, broken PEM, another key type) gives (None,
    "<what is wrong>"), never an exception: see ``messaging.checks``.
    """
    configured = configured.strip()
    if not configured:
        return None, ""
    try:
        if configured.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(configured.encode())
            if not isinstance(key, ed25519.Ed25519PublicKey):
                return None, f"{ED25519_SETTING} is a PEM key but not an Ed25519 one"
            return key, ""
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(configured, validate=True)), ""
    except (binascii.Error, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        reason = "invalid base64" if isinstance(exc, binascii.Error) else type(exc).__name__
        problem = f"{ED25519_SETTING} is not a PEM or base64 (32 raw bytes) Ed25519 public key ({reason})"
        logger.error("%s; signed GHL deliveries fall back to x-wh-signature or are refused", problem)
        return None, problem


def ed25519_key_problem() -> str:
    """What is wrong with the configured Ed25519 key ("" when it is fine or not set)."""
    return _ed25519_key_load(settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY or "")[1]


def _decode_signature(value: str, header: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{header}: not valid base64") from exc


def ghl_signature_present(headers: Any) -> bool:
    return bool(headers.get(ED25519_HEADER) or headers.get(RSA_HEADER))


def ghl_signature_verify(*, raw_body: bytes, headers: Any, payload: Any, now: float | None = None) -> None:
    """Verify a signed GHL delivery; raise ``SignatureError`` naming the problem.

    Ed25519 is preferred when its header is present and a key is configured;
    an Ed25519 header without a configured key falls back to the RSA header,
    and fails closed when there is none. Signed bodies must carry a fresh
    ``timestamp`` (at most ``WEBHOOK_SIGNATURE_MAX_AGE_S`` away from now) and
    a ``webhookId`` (replays are caught by its idempotency key).
    """
    ed_signature = headers.get(ED25519_HEADER) or ""
    rsa_signature = headers.get(RSA_HEADER) or ""
    ed_key, ed_problem = _ed25519_key_load(settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY or "")
    if ed_signature and ed_key is not None:
        try:
            ed_key.verify(_decode_signature(ed_signature, ED25519_HEADER), raw_body)
        except InvalidSignature as exc:
            raise SignatureError(f"{ED25519_HEADER}: signature does not match the body") from exc
    elif rsa_signature:
        try:
            rsa_key = _rsa_public_key()
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            logger.error("the GHL RSA webhook key %s does not load: %s", RSA_KEY_PATH, type(exc).__name__)
            raise SignatureError(f"{RSA_HEADER}: the server cannot check this signature (key unavailable)") from exc
        try:
            rsa_key.verify(_decode_signature(rsa_signature, RSA_HEADER), raw_body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature as exc:
            raise SignatureError(f"{RSA_HEADER}: signature does not match the body") from exc
    elif ed_problem:
        raise SignatureError(f"{ED25519_HEADER}: the server's {ED25519_SETTING} is not a valid Ed25519 key")
    else:
        raise SignatureError(f"{ED25519_HEADER}: no Ed25519 public key configured ({ED25519_SETTING})")

    if not isinstance(payload, dict):
        raise SignatureError("payload: must be a JSON object")
    signed_at = parse_instant(payload.get("timestamp"), naive_as_utc=True)
    if signed_at is None:
        raise SignatureError("timestamp: required on signed webhooks (ISO 8601 or epoch)")
    age = (now if now is not None else time.time()) - signed_at.timestamp()
    if abs(age) > settings.WEBHOOK_SIGNATURE_MAX_AGE_S:
        raise SignatureError(f"timestamp: stale by {int(age)} s (max {settings.WEBHOOK_SIGNATURE_MAX_AGE_S} s)")
    webhook_id = payload.get("webhookId")
    if not isinstance(webhook_id, str) or not webhook_id.strip():
        raise SignatureError("webhookId: required on signed webhooks")
