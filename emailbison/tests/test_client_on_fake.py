"""The EmailBison client against the repository's fake (``core/testing/fake_outbox.py``), which
refuses a send without the fields the API requires."""

from __future__ import annotations

from core.testing.fake_outbox import fake_outbox_server
from emailbison.client import EmailBisonClient


def test_senders_and_a_reply_in_thread_pass_the_fakes_checks(settings):
    settings.LEADLINE_OUTBOUND_ALLOWLIST = ["127.0.0.1"]
    with (
        fake_outbox_server(senders=2) as fake,
        EmailBisonClient(base_url=fake.emailbison_base_url, token="eb-token") as client,
    ):
        senders = client.sender_emails_list(deadline=10)
        sent = client.reply_send(
            reply_id=77, sender_email_id=senders[0].sender_id, to_email="lead@example.com", message="Hi"
        )
    assert len(senders) == 2
    assert sent.reply_id
    assert fake.sends[0].body["to_emails"] == [{"name": "", "email_address": "lead@example.com"}]
