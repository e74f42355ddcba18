"""System checks: a broken GHL webhook key is reported at startup, not on the first signed delivery."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register


@register("security")
def check_ghl_webhook_keys(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from messaging.signatures import RSA_KEY_PATH, _rsa_public_key, ed25519_key_problem

    errors = []
    problem = ed25519_key_problem()
    if problem:
        errors.append(
            Error(
                problem,
                hint="Set it to GHL's Ed25519 public key as PEM, or as base64 of its 32 raw bytes, or leave it empty.",
                id="messaging.E001",
            )
        )
    try:
        _rsa_public_key()
    except Exception as exc:  # noqa: BLE001 - any failure to load the shipped key is the finding
        errors.append(
            Error(f"The GHL RSA webhook key {RSA_KEY_PATH} does not load ({type(exc).__name__}).", id="messaging.E002")
        )
    return errors
