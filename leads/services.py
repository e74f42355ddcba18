from __future__ import annotations

from django.db import transaction

from leads.models import Lead, LeadStatus, Sentiment


@transaction.atomic
def lead_sentiment_set(*, lead: Lead, sentiment: str) -> Lead:
    """Set a lead's sentiment from a classified inbound message.

    ``Blacklist`` is sticky: the lead's status becomes ``blacklisted`` and no
    later classification lifts it (opt-outs and bounces are final).
    """
    lead = Lead.objects.select_for_update().get(pk=lead.pk, workspace_id=lead.workspace_id)
    if lead.is_blacklisted:
        return lead
    fields = ["sentiment", "updated_at"]
    lead.sentiment = sentiment
    if sentiment == Sentiment.BLACKLIST:
        lead.status = LeadStatus.BLACKLISTED
        fields.append("status")
    lead.save(update_fields=fields)
    return lead
