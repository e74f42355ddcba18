import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from django.test import Client

from messaging import signatures
from messaging.models import Message, WebhookEvent
from messaging.tests.factories import ghl_inbound, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def ed_key(settings):
    private = ed25519.Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = public_pem.decode()
    return private


@pytest.fixture
def rsa_key(monkeypatch):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    monkeypatch.setattr(signatures, "_rsa_public_key", lambda: private.public_key())
    return private


@pytest.fixture
def verifying(workspace):
    workspace.verify_ghl_signatures = True
    workspace.save()
    return workspace


def _signed_body(**overrides) -> bytes:
    payload = ghl_inbound(
        timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"), webhookId="wh-" + str(id(overrides))
    )
    payload.update(overrides)
    return json.dumps(payload).encode()


def _ed_sign(key, raw: bytes) -> str:
    return base64.b64encode(key.sign(raw)).decode()


def _rsa_sign(key, raw: bytes) -> str:
    return base64.b64encode(key.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()


def test_valid_ed25519_signature_is_accepted(verifying, ed_key, enqueued):
    raw = _signed_body()
    response = post(Client(), "ghl", raw, **{"X-GHL-Signature": _ed_sign(ed_key, raw)})
    assert response.status_code == 200 and response.json()["status"] == "created"


def test_ed25519_key_as_raw_base64_works(verifying, settings, enqueued):
    private = ed25519.Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = base64.b64encode(raw_public).decode()
    raw = _signed_body()
    assert post(Client(), "ghl", raw, **{"X-GHL-Signature": _ed_sign(private, raw)}).status_code == 200


def test_tampered_body_is_401_and_logged_as_rejected(verifying, ed_key, enqueued):
    raw = _signed_body()
    tampered = raw.replace(b"roof", b"ruff")
    response = post(Client(), "ghl", tampered, **{"X-GHL-Signature": _ed_sign(ed_key, raw)})
    assert response.status_code == 401
    assert response.json()["error"].startswith("X-GHL-Signature")
    assert Message.objects.count() == 0
    assert WebhookEvent.objects.get().status == "rejected"


def test_valid_rsa_signature_is_accepted_and_bad_one_refused(verifying, rsa_key, enqueued):
    raw = _signed_body()
    assert post(Client(), "ghl", raw, **{"x-wh-signature": _rsa_sign(rsa_key, raw)}).status_code == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw2 = _signed_body(messageId="another")
    response = post(Client(), "ghl", raw2, **{"x-wh-signature": _rsa_sign(other, raw2)})
    assert response.status_code == 401 and response.json()["error"].startswith("x-wh-signature")


def test_shipped_ghl_rsa_key_loads_and_refuses_a_forged_signature(verifying, enqueued):
    assert signatures._rsa_public_key().key_size >= 2048
    raw = _signed_body()
    forged = base64.b64encode(b"\x00" * 512).decode()
    assert post(Client(), "ghl", raw, **{"x-wh-signature": forged}).status_code == 401


def test_stale_timestamp_is_refused(verifying, ed_key, enqueued):
    old = (datetime.now(UTC) - timedelta(minutes=6)).isoformat()
    raw = _signed_body(timestamp=old)
    response = post(Client(), "ghl", raw, **{"X-GHL-Signature": _ed_sign(ed_key, raw)})
    assert response.status_code == 401 and response.json()["error"].startswith("timestamp")
    assert Message.objects.count() == 0


def test_epoch_millisecond_timestamps_are_understood(verifying, ed_key, enqueued):
    raw = _signed_body(timestamp=int(datetime.now(UTC).timestamp() * 1000))
    assert post(Client(), "ghl", raw, **{"X-GHL-Signature": _ed_sign(ed_key, raw)}).status_code == 200


def test_replayed_webhook_id_is_not_processed_again(verifying, ed_key, enqueued):
    raw = _signed_body(webhookId="wh-replay")
    first = post(Client(), "ghl", raw, **{"X-GHL-Signature": _ed_sign(ed_key, raw)}).json()
    # Same webhookId, different message id: a replay must not create anything.
    raw2 = _signed_body(webhookId="wh-replay", messageId="msg-replayed", body="different")
    second = post(Client(), "ghl", raw2, **{"X-GHL-Signature": _ed_sign(ed_key, raw2)}).json()
    assert first["status"] == "created"
    assert second == {**first, "status": "duplicate"}
    assert Message.objects.count() == 1


def test_signature_header_without_configured_ed25519_key_fails_closed(verifying, settings, enqueued):
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = ""
    raw = _signed_body()
    response = post(Client(), "ghl", raw, **{"X-GHL-Signature": base64.b64encode(b"x" * 64).decode()})
    assert response.status_code == 401


def test_signatures_ignored_when_verification_is_off(workspace, enqueued):
    raw = _signed_body()
    response = post(Client(), "ghl", raw, **{"X-GHL-Signature": base64.b64encode(b"garbage").decode()})
    assert response.status_code == 200


@pytest.mark.parametrize("junk", ["²", "1" * 4400, "١٧٦٤٠٠٠٠٠٠"])
def test_junk_signed_timestamps_are_401_not_500(verifying, ed_key, enqueued, junk):
    raw = _signed_body(timestamp=junk)
    response = post(Client(), "ghl", raw, **{"X-GHL-Signature": _ed_sign(ed_key, raw)})
    assert response.status_code == 401 and response.json()["error"].startswith("timestamp")
    assert Message.objects.count() == 0


def _rsa_public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


BAD_ED25519_KEYS = [
    "not base64 at all!!",  # binascii.Error
    base64.b64encode(b"short").decode(),  # ValueError: wrong length
    "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",  # ValueError from the PEM loader
]


@pytest.mark.parametrize("bad_key", [*BAD_ED25519_KEYS, "rsa-pem"])
def test_misconfigured_ed25519_key_answers_401_not_500(verifying, settings, enqueued, bad_key):
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = _rsa_public_pem() if bad_key == "rsa-pem" else bad_key
    raw = _signed_body()
    response = post(Client(), "ghl", raw, **{"X-GHL-Signature": base64.b64encode(b"x" * 64).decode()})
    assert response.status_code == 401
    assert "GHL_WEBHOOK_ED25519_PUBLIC_KEY" in response.json()["error"]
    assert Message.objects.count() == 0


def test_misconfigured_ed25519_key_falls_back_to_rsa_and_is_loaded_once(verifying, settings, rsa_key, enqueued):
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = BAD_ED25519_KEYS[0] + " once"
    signatures._ed25519_key_load.cache_clear()
    for n in range(2):
        raw = _signed_body(messageId=f"fallback-{n}")
        headers = {"X-GHL-Signature": base64.b64encode(b"x" * 64).decode(), "x-wh-signature": _rsa_sign(rsa_key, raw)}
        assert post(Client(), "ghl", raw, **headers).status_code == 200
    info = signatures._ed25519_key_load.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # the failure is cached, not re-parsed per request


@pytest.mark.parametrize("bad_key", BAD_ED25519_KEYS)
def test_system_check_reports_a_bad_ed25519_key(settings, bad_key):
    from django.core import checks

    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = bad_key
    errors = [e for e in checks.run_checks() if e.id == "messaging.E001"]
    assert len(errors) == 1 and "GHL_WEBHOOK_ED25519_PUBLIC_KEY" in errors[0].msg
    assert bad_key not in errors[0].msg  # the setting's value is not echoed


def test_system_check_accepts_a_good_or_absent_key(settings, ed_key):
    from django.core import checks

    assert not [e for e in checks.run_checks() if e.id.startswith("messaging.")]
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = ""
    assert not [e for e in checks.run_checks() if e.id.startswith("messaging.")]


def test_unsigned_marketplace_delivery_is_refused_when_verification_is_on(verifying, ed_key, enqueued):
    response = post(Client(), "ghl", ghl_inbound())
    assert response.status_code == 401 and response.json()["error"].startswith("X-GHL-Signature")
    event = WebhookEvent.objects.get()
    assert (event.status, event.reprocessable) == ("rejected", False)
    assert Message.objects.count() == 0 and enqueued.calls == []


def test_unsigned_custom_webhook_still_passes_when_verification_is_on(verifying, ed_key, enqueued):
    from messaging.tests.factories import ghl_custom

    response = post(Client(), "ghl", ghl_custom())
    assert response.status_code == 200 and response.json()["status"] == "created"
