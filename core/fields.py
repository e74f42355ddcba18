from __future__ import annotations

from django.db import models

from core.crypto import decrypt_str, encrypt_str


class EncryptedTextField(models.TextField):
    """A text field stored Fernet-encrypted; Python code sees plain text.

    Empty values stay empty (no ciphertext for "not configured"), so
    ``bool(workspace.ghl_token)`` tells whether a credential is set.
    """

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        return decrypt_str(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt_str(value)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        return name, "core.fields.EncryptedTextField", args, kwargs
