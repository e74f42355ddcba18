"""Lead rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from core.sql import RowsExist, rows_exist
from leads import services as lead_services
from leads.models import MACHINE_REPLACEABLE_SENTIMENTS, Lead, LeadStatus, Sentiment
from leads.selectors import lead_opted_out
from leads.services import (
    LeadIdentity,
    lead_blacklist,
    lead_rollups_touch,
    lead_sentiment_set,
    lead_upsert,
    phone_normalize,
)

pytestmark = pytest.mark.django_db

_ALWAYS = RowsExist(model=Lead, equal=())  # a condition that holds (any lead exists)
_NEVER = RowsExist(model=Lead, equal=(("id", -1),))


def _lead_is_open(lead: Lead, *, workspace_id: int | None = None) -> bool:
    return not rows_exist(lead_opted_out(lead_id=lead.pk, workspace_id=workspace_id or lead.workspace_id))


def test_the_open_lead_condition_is_false_once_the_lead_opted_out(workspace, other_workspace):
    lead = Lead.objects.create(workspace=workspace, email="open@x.io")
    by_status = Lead.objects.create(workspace=workspace, email="s@x.io", status=LeadStatus.BLACKLISTED)
    by_sentiment = Lead.objects.create(workspace=workspace, email="t@x.io", sentiment=Sentiment.BLACKLIST)

    assert _lead_is_open(lead) is True
    assert _lead_is_open(by_status) is False
    assert _lead_is_open(by_sentiment) is False
    # Another workspace's lead id never decides for this workspace.
    assert _lead_is_open(by_status, workspace_id=other_workspace.pk) is True


def test_blacklisting_a_lead_read_before_another_request_blacklisted_it(workspace):
    lead = Lead.objects.create(workspace=workspace, email="late@x.io")
    read_earlier = Lead.objects.get(pk=lead.pk)
    lead_blacklist(lead=lead, reason="UNSUBSCRIBED")

    result = lead_blacklist(lead=read_earlier, reason="EMAIL_BOUNCED")

    assert (result.status, result.sentiment) == (LeadStatus.BLACKLISTED, Sentiment.BLACKLIST)
    assert result.is_blacklisted


def test_a_classification_sets_the_leads_sentiment_unless_the_condition_holds(workspace):
    lead = Lead.objects.create(workspace=workspace, email="tag@x.io")

    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.INTERESTED) is True
    assert lead.sentiment == Sentiment.INTERESTED and lead.updated_at is not None
    assert Lead.objects.get(pk=lead.pk).sentiment == Sentiment.INTERESTED

    # "Unless" holds: the lead is left alone.
    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.NEUTRAL, unless=_ALWAYS) is False
    assert lead.sentiment == Sentiment.INTERESTED
    assert Lead.objects.get(pk=lead.pk).sentiment == Sentiment.INTERESTED
    # Unless it does not.
    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.NEUTRAL, unless=_NEVER) is True
    assert Lead.objects.get(pk=lead.pk).sentiment == Sentiment.NEUTRAL


def test_a_tag_that_may_only_replace_some_tags_leaves_the_others(workspace):
    lead = Lead.objects.create(workspace=workspace, email="auto@x.io", sentiment=Sentiment.INTERESTED)

    only = MACHINE_REPLACEABLE_SENTIMENTS
    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.OUT_OF_OFFICE, only_replacing=only) is False
    assert Lead.objects.get(pk=lead.pk).sentiment == Sentiment.INTERESTED
    Lead.objects.filter(pk=lead.pk).update(sentiment=Sentiment.NEUTRAL)
    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.OUT_OF_OFFICE, only_replacing=only) is True
    assert Lead.objects.get(pk=lead.pk).sentiment == Sentiment.OUT_OF_OFFICE


def test_an_opt_out_ignores_the_unless_condition_and_is_final(workspace):
    lead = Lead.objects.create(workspace=workspace, email="out@x.io")

    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.BLACKLIST, unless=_ALWAYS) is True
    assert (lead.status, lead.sentiment) == (LeadStatus.BLACKLISTED, Sentiment.BLACKLIST)

    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.INTERESTED) is False
    row = Lead.objects.get(pk=lead.pk)
    assert (row.status, row.sentiment) == (LeadStatus.BLACKLISTED, Sentiment.BLACKLIST)


def test_a_phone_number_is_read_up_to_64_characters():
    spaced = "+1" + " " * 50 + "415 555 2671"
    assert len(spaced) == 64
    assert phone_normalize(raw=spaced, region="US") == "+14155552671"
    assert phone_normalize(raw=spaced.replace("+1 ", "+1  "), region="US") == ""  # 65 characters


def test_filling_blanks_writes_only_that_lead_and_marks_it_updated(workspace):
    lead = Lead.objects.create(workspace=workspace, email="fill@x.io", first_name="Ann")
    other = Lead.objects.create(workspace=workspace, email="other@x.io")
    Lead.objects.filter(pk__in=[lead.pk, other.pk]).update(updated_at=timezone.now() - timedelta(days=1))

    found, created = lead_upsert(
        workspace_id=workspace.pk,
        identity=LeadIdentity(email="fill@x.io", first_name="Anna", last_name="Lee", ghl_contact_id="C-fill"),
    )

    assert (found.pk, created) == (lead.pk, False)
    assert (found.first_name, found.last_name, found.ghl_contact_id) == ("Ann", "Lee", "C-fill")
    row = Lead.objects.get(pk=lead.pk)
    assert (row.first_name, row.last_name, row.ghl_contact_id) == ("Ann", "Lee", "C-fill")
    assert row.updated_at > timezone.now() - timedelta(hours=1)
    untouched = Lead.objects.get(pk=other.pk)
    assert (untouched.last_name, untouched.ghl_contact_id) == ("", "")
    assert untouched.updated_at < timezone.now() - timedelta(hours=1)


def test_a_payload_that_adds_nothing_leaves_the_lead_as_it_was(workspace):
    lead = Lead.objects.create(workspace=workspace, email="same@x.io", first_name="Ann")
    Lead.objects.filter(pk=lead.pk).update(updated_at=timezone.now() - timedelta(days=1))

    found, _ = lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(email="same@x.io", first_name="Anna"))

    assert found.first_name == "Ann"
    assert Lead.objects.get(pk=lead.pk).updated_at < timezone.now() - timedelta(hours=1)


def test_only_the_provider_id_is_filled_when_only_it_is_new(workspace):
    lead = Lead.objects.create(workspace=workspace, email="ids@x.io", first_name="Ann")
    Lead.objects.filter(pk=lead.pk).update(updated_at=timezone.now() - timedelta(days=1))

    found, _ = lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(email="ids@x.io", emailbison_lead_id="E-9"))

    row = Lead.objects.get(pk=lead.pk)
    assert found.emailbison_lead_id == row.emailbison_lead_id == "E-9"
    assert row.updated_at > timezone.now() - timedelta(hours=1)


def test_filling_a_plain_field_marks_the_lead_updated(workspace):
    lead = Lead.objects.create(workspace=workspace, email="plain@x.io")
    Lead.objects.filter(pk=lead.pk).update(updated_at=timezone.now() - timedelta(days=1))

    lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(email="plain@x.io", last_name="Lee"))

    row = Lead.objects.get(pk=lead.pk)
    assert row.last_name == "Lee" and row.updated_at > timezone.now() - timedelta(hours=1)


def test_the_portable_rollup_moves_a_leads_message_times_forward_only(workspace, monkeypatch):
    """``lead_rollups_touch`` off PostgreSQL (the SQLite dev setup) takes the ORM statement."""
    monkeypatch.setattr(lead_services, "connection", SimpleNamespace(vendor="sqlite"))
    lead = Lead.objects.create(workspace=workspace, email="roll@x.io")
    other = Lead.objects.create(workspace=workspace, email="still@x.io")
    now = timezone.now()

    def times() -> tuple:
        row = Lead.objects.get(pk=lead.pk)
        return row.last_inbound_at, row.last_outbound_at, row.last_message_at

    def ago(minutes: int):
        return now - timedelta(minutes=minutes)

    lead_rollups_touch(lead_ids=[lead.pk], workspace_id=lead.workspace_id, direction="inbound", at=ago(5))
    assert times() == (ago(5), None, ago(5))
    lead_rollups_touch(
        lead_ids=[lead.pk], workspace_id=lead.workspace_id, direction="inbound", at=ago(9)
    )  # older: ignored
    assert times() == (ago(5), None, ago(5))
    lead_rollups_touch(lead_ids=[lead.pk], workspace_id=lead.workspace_id, direction="outbound", at=ago(2))
    assert times() == (ago(5), ago(2), ago(2))
    lead_rollups_touch(lead_ids=[lead.pk], workspace_id=lead.workspace_id, direction="inbound", at=ago(1))
    assert times() == (ago(1), ago(2), ago(1))
    untouched = Lead.objects.get(pk=other.pk)
    assert (untouched.last_inbound_at, untouched.last_outbound_at, untouched.last_message_at) == (None, None, None)


def test_a_new_contact_id_with_a_known_phone_is_that_lead(workspace):
    lead = Lead.objects.create(workspace=workspace, phone_e164="+14155552671")

    found, created = lead_upsert(
        workspace_id=workspace.pk, identity=LeadIdentity(ghl_contact_id="C-phone", phone_raw="(415) 555-2671")
    )

    assert (found.pk, created) == (lead.pk, False)
    assert Lead.objects.get(pk=lead.pk).ghl_contact_id == "C-phone"


def test_a_lead_found_by_email_gets_its_phone_filled(workspace):
    lead = Lead.objects.create(workspace=workspace, email="phone@x.io")

    lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(email="phone@x.io", phone_raw="(415) 555-2671"))

    row = Lead.objects.get(pk=lead.pk)
    assert (row.phone_e164, row.phone_raw) == ("+14155552671", "(415) 555-2671")


def test_an_identity_without_an_identifier_is_refused_saying_what_is_missing(workspace):
    with pytest.raises(ValueError, match=r"^lead identity needs a provider id, an email or a phone$"):
        lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(first_name="Nobody"))


def test_a_new_lead_keeps_everything_the_payload_said(workspace):
    lead, created = lead_upsert(
        workspace_id=workspace.pk,
        identity=LeadIdentity(
            ghl_contact_id="C-new", email="New@X.io", phone_raw="(415) 555-2671",
            first_name="Ann", last_name="Lee", timezone="Europe/Paris",
        ),
    )  # fmt: skip

    row = Lead.objects.get(pk=lead.pk)
    assert created
    assert (row.ghl_contact_id, row.email, row.phone_e164, row.phone_raw) == (
        "C-new", "new@x.io", "+14155552671", "(415) 555-2671",
    )  # fmt: skip
    assert (row.first_name, row.last_name, row.timezone) == ("Ann", "Lee", "Europe/Paris")


def test_values_longer_than_their_columns_are_cut_to_fit(workspace):
    email = "a" * 330 + "@x.io"
    lead, _ = lead_upsert(
        workspace_id=workspace.pk,
        identity=LeadIdentity(
            ghl_contact_id="C" * 70, emailbison_lead_id="E" * 70, email=email, phone_raw="1" * 70,
            last_name="L" * 210,
        ),
    )  # fmt: skip

    row = Lead.objects.get(pk=lead.pk)
    assert (row.ghl_contact_id, row.emailbison_lead_id, row.phone_raw) == ("C" * 64, "E" * 64, "1" * 64)
    assert (row.email, row.last_name, row.first_name) == (email[:320], "L" * 200, "")


def test_a_first_name_is_cut_at_200_characters(workspace):
    lead, _ = lead_upsert(workspace_id=workspace.pk, identity=LeadIdentity(email="long@x.io", first_name="F" * 210))

    assert Lead.objects.get(pk=lead.pk).first_name == "F" * 200
