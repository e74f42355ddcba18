import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from core.crypto import _fernet_for
from workspaces.models import Workspace

TOKEN = "pit-11111111-2222-3333-4444-555555555555"


def _raw_columns(pk):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT webhook_secret, ghl_token, emailbison_token, calendly_token"
            " FROM workspaces_workspace WHERE id = %s",
            [pk],
        )
        return cursor.fetchone()


@pytest.mark.django_db
def test_credentials_are_encrypted_in_the_raw_column_and_round_trip(workspace):
    workspace.emailbison_token = "eb-token-abcdefghijklmnop"
    workspace.calendly_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXNpZw"
    workspace.save()

    raw = _raw_columns(workspace.pk)
    plain = ("whsec-acme-0123456789abcdef", TOKEN, "eb-token-abcdefghijklmnop", workspace.calendly_token)
    for raw_value, plain_value in zip(raw, plain, strict=True):
        assert raw_value and plain_value not in raw_value
        assert raw_value.startswith("gAAAA")  # a Fernet token

    fresh = Workspace.objects.get(pk=workspace.pk)
    assert (fresh.webhook_secret, fresh.ghl_token, fresh.emailbison_token, fresh.calendly_token) == plain


@pytest.mark.django_db
def test_unset_credentials_stay_empty(workspace):
    assert _raw_columns(workspace.pk)[2] == ""
    assert Workspace.objects.get(pk=workspace.pk).emailbison_token == ""


@pytest.mark.django_db
def test_key_rotation_with_multifernet(workspace, settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    _fernet_for.cache_clear()

    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    assert Workspace.objects.get(pk=workspace.pk).ghl_token == TOKEN  # old ciphertext still readable
    call_command("rotate_encryption_key", stdout=io.StringIO())

    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert Workspace.objects.get(pk=workspace.pk).ghl_token == TOKEN  # now readable with the new key alone
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    with pytest.raises(Exception, match="cannot be decrypted"):
        Workspace.objects.get(pk=workspace.pk)
    _fernet_for.cache_clear()
