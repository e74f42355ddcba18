"""Lead rules that the mutation run (docs/testing.md) found unchecked."""

from __future__ import annotations

import pytest
from django.db import connection

from leads.models import Lead, LeadStatus, Sentiment
from leads.services import lead_blacklist, lead_open_sql, lead_sentiment_set, phone_normalize

pytestmark = pytest.mark.django_db


def _lead_is_open(lead: Lead, *, workspace_id: int | None = None) -> bool:
    sql, params = lead_open_sql(lead_id=lead.pk, workspace_id=workspace_id or lead.workspace_id)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)
        return cursor.fetchone()[0]


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
    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.NEUTRAL, unless_sql="TRUE") is False
    assert lead.sentiment == Sentiment.INTERESTED
    assert Lead.objects.get(pk=lead.pk).sentiment == Sentiment.INTERESTED
    # Unless it does not.
    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.NEUTRAL, unless_sql="FALSE") is True
    assert Lead.objects.get(pk=lead.pk).sentiment == Sentiment.NEUTRAL


def test_an_opt_out_ignores_the_unless_condition_and_is_final(workspace):
    lead = Lead.objects.create(workspace=workspace, email="out@x.io")

    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.BLACKLIST, unless_sql="TRUE") is True
    assert (lead.status, lead.sentiment) == (LeadStatus.BLACKLISTED, Sentiment.BLACKLIST)

    assert lead_sentiment_set(lead=lead, sentiment=Sentiment.INTERESTED) is False
    row = Lead.objects.get(pk=lead.pk)
    assert (row.status, row.sentiment) == (LeadStatus.BLACKLISTED, Sentiment.BLACKLIST)


def test_a_phone_number_is_read_up_to_64_characters():
    spaced = "+1" + " " * 50 + "415 555 2671"
    assert len(spaced) == 64
    assert phone_normalize(raw=spaced, region="US") == "+14155552671"
    assert phone_normalize(raw=spaced.replace("+1 ", "+1  "), region="US") == ""  # 65 characters
