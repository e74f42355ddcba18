"""Fernet encryption for credentials at rest (MultiFernet for key rotation)."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY is not set. Generate one with: "
            'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY holds a key that is not a valid Fernet key") from exc


def get_fernet() -> MultiFernet:
    return _fernet_for(tuple(k.strip() for k in settings.FIELD_ENCRYPTION_KEYS if k.strip()))


def encrypt_str(plain: str) -> str:
    return get_fernet().encrypt(plain.encode()).decode()


def decrypt_str(token: str) -> str:
    try:
        return get_fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A stored credential cannot be decrypted with FIELD_ENCRYPTION_KEY (wrong or rotated-out key)"
        ) from exc


def rotate_str(token: str) -> str:
    """Re-encrypt a stored token with the primary key."""
    return get_fernet().rotate(token.encode()).decode()
