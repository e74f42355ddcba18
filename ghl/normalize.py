"""Input normalisation before anything is sent to GHL (pure functions, no I/O).

- a contact id must look like a GHL id (``ghl.client.contact_id_clean``);
- a phone is sent only as valid E.164 (``phonenumbers``; the ``00``
  international prefix is read as ``+``; numbers without a country code take
  ``DEFAULT_PHONE_REGION``);
- an email is lower-cased and validated.

Each returns the clean value, or ``""`` with the reason, so the caller can
leave the field out and record why.
"""

from __future__ import annotations

import re

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

_INTERNATIONAL_00 = re.compile(r"^\s*00[\s.-]*(?=[1-9])")


def phone_to_e164(raw: str, *, region: str | None = None) -> tuple[str, str]:
    """``(e164, "")`` for a valid number, else ``("", reason)``; ``("", "")`` when nothing was given."""
    text = (raw or "").strip()
    if not text:
        return "", ""
    if len(text) > 64:
        return "", "phone number too long"
    text = _INTERNATIONAL_00.sub("+", text)
    try:
        number = phonenumbers.parse(text, region or settings.DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException as exc:
        reason = {
            phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "invalid country calling code",
            phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
            phonenumbers.NumberParseException.TOO_SHORT_NSN: "phone number too short",
            phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "phone number too short",
            phonenumbers.NumberParseException.TOO_LONG: "phone number too long",
        }.get(exc.error_type, "not a phone number")
        return "", reason
    if not phonenumbers.is_valid_number(number):
        return "", "not a valid phone number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""


def email_clean(raw: str) -> tuple[str, str]:
    """``(lower-cased email, "")``, else ``("", reason)``; ``("", "")`` when nothing was given."""
    text = (raw or "").strip().lower()
    if not text:
        return "", ""
    if len(text) > 320:
        return "", "email address too long"
    try:
        validate_email(text)
    except ValidationError:
        return "", "not a valid email address"
    return text, ""
