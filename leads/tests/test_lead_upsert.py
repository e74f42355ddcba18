import threading

import pytest
from django.db import connection

from leads.models import Lead, LeadStatus, Sentiment
from leads.services import LeadIdentity, lead_blacklist, lead_sentiment_set, lead_upsert, phone_normalize


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("555-0000", "US", ""),  # parses, but not a valid number
        ("not a phone", "US", ""),
        ("+999 123", "US", ""),  # invalid country code
        ("", "US", ""),
        ("1" * 80, "US", ""),
    ],
)
def test_phone_normalize_only_returns_valid_e164(raw, region, expected):
    assert phone_normalize(raw=raw, region=region) == expected


def test_phone_normalize_uses_default_region_setting(settings):
    settings.DEFAULT_PHONE_REGION = "GB"
    assert phone_normalize(raw="020 7946 0958") == "+442079460958"


@pytest.mark.django_db
class TestMatching:
    def test_match_order_contact_id_then_lead_id_then_email_then_phone(self, workspace):
        by_contact = Lead.objects.create(workspace=workspace, ghl_contact_id="C1")
        by_eb = Lead.objects.create(workspace=workspace, emailbison_lead_id="E1")
        by_email = Lead.objects.create(workspace=workspace, email="Mixed@Case.com")
        by_phone = Lead.objects.create(workspace=workspace, phone_e164="+14155552671")

        def match(**kw):
            return lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(**kw))

        assert match(phone_raw="415.555.2671")[0] == by_phone
        assert match(email="MIXED@case.COM", phone_raw="(415) 555-2671")[0] == by_email  # email before phone
        assert match(emailbison_lead_id="E1", email="mixed@case.com")[0] == by_eb  # lead id before email
        assert match(ghl_contact_id="C1", emailbison_lead_id="E1")[0] == by_contact  # contact id first
        by_contact.refresh_from_db()
        assert by_contact.emailbison_lead_id == ""  # E1 belongs to another lead: not copied
        assert Lead.objects.count() == 4

    def test_fills_blanks_but_never_overwrites(self, workspace):
        lead = Lead.objects.create(workspace=workspace, email="a@b.co", first_name="Ann")
        found, created = lead_upsert(
            workspace_id=workspace.pk,
            identity=LeadIdentity(email="a@b.co", ghl_contact_id="C9", first_name="Anna", last_name="Lee"),
        )
        lead.refresh_from_db()
        assert (found.pk, created) == (lead.pk, False)
        assert (lead.ghl_contact_id, lead.first_name, lead.last_name) == ("C9", "Ann", "Lee")

    def test_a_lead_of_another_contact_is_not_matched_by_email(self, workspace):
        other = Lead.objects.create(workspace=workspace, ghl_contact_id="C1", email="shared@x.io")
        lead, created = lead_upsert(
            workspace_id=workspace.pk, identity=LeadIdentity(ghl_contact_id="C2", email="shared@x.io")
        )
        assert created and lead.pk != other.pk

    def test_matching_never_crosses_workspaces(self, workspace, other_workspace):
        Lead.objects.create(workspace=other_workspace, ghl_contact_id="C1", email="x@y.io")
        lead, created = lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(ghl_contact_id="C1"))
        assert created and lead.workspace_id == workspace.pk

    def test_invalid_phone_keeps_raw_only(self, workspace):
        lead, _ = lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(phone_raw="12"))
        assert (lead.phone_raw, lead.phone_e164) == ("12", "")

    def test_empty_identity_is_refused(self, workspace):
        with pytest.raises(ValueError):
            lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(first_name="Nobody"))

    def test_blacklist_is_sticky(self, workspace):
        lead = Lead.objects.create(workspace=workspace, email="a@b.co")
        lead_blacklist(lead=lead, reason="EMAIL_BOUNCED")
        lead.refresh_from_db()
        assert lead.is_blacklisted and lead.sentiment == Sentiment.BLACKLIST

        # A later warm reply's classification and a later upsert of the same person leave it.
        for sentiment in (Sentiment.INTERESTED, Sentiment.MEETING_REQUESTED, Sentiment.NEUTRAL):
            assert lead_sentiment_set(lead=lead, sentiment=sentiment) is False
        again, created = lead_upsert(
            workspace_id=workspace.pk, identity=LeadIdentity(email="A@B.co", first_name="Ann", phone_raw="+14155550100")
        )
        assert (again.pk, created) == (lead.pk, False)
        lead.refresh_from_db()
        assert lead.first_name == "Ann"  # the upsert did run: it filled a blank
        assert (lead.status, lead.sentiment) == (LeadStatus.BLACKLISTED, Sentiment.BLACKLIST)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "identity",
    [LeadIdentity(ghl_contact_id="RACE"), LeadIdentity(emailbison_lead_id="RACE"), LeadIdentity(email="r@ce.io")],
)
def test_concurrent_upserts_end_with_one_lead_and_no_error(workspace, identity):
    barrier = threading.Barrier(20)
    results, errors = [], []

    def worker():
        try:
            barrier.wait(timeout=30)
            results.append(lead_upsert(workspace_id=workspace.pk, identity=identity))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert Lead.objects.count() == 1
    assert sum(created for _, created in results) == 1
    assert {lead.pk for lead, _ in results} == {Lead.objects.get().pk}


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["America", "../etc/passwd", "Mars/Olympus", "America/", "EST5EDT/../x"])
def test_invalid_timezones_are_never_stored_on_a_lead(workspace, bad):
    from core.timeparse import safe_zoneinfo

    created, _ = lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(ghl_contact_id="tz-1", timezone=bad))
    assert created.timezone == ""
    # Filling blanks later does not store it either; a valid zone does fill the blank.
    lead, _ = lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(ghl_contact_id="tz-1", timezone=bad))
    lead.refresh_from_db()
    assert lead.timezone == ""
    lead, _ = lead_upsert(
        workspace_id=workspace.pk, identity=LeadIdentity(ghl_contact_id="tz-1", timezone=" Europe/Paris ")
    )
    lead.refresh_from_db()
    assert lead.timezone == "Europe/Paris" and safe_zoneinfo(lead.timezone) is not None
