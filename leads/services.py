from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import phonenumbers
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest, Lower
from django.utils import timezone

from core.sql import RowsExist, qn, table, update_rows
from core.timeparse import safe_zoneinfo
from leads.models import Lead, LeadStatus, Sentiment


def lead_sentiment_set(
    *,
    lead: Lead,
    sentiment: str,
    only_replacing: Collection[str] = (),
    unless: RowsExist | None = None,
) -> bool:
    """Set a lead's sentiment from a classified inbound message: one conditional UPDATE.

    ``Blacklist`` is sticky: the lead's status becomes ``blacklisted`` and no
    later classification lifts it (opt-outs and bounces are final); the rule is
    in the statement itself, so no lock is needed. ``only_replacing``: change
    only a lead whose sentiment is one of these. ``unless``: a condition under
    which the lead is left alone (e.g. ``messaging.selectors.newer_inbound``:
    "a newer inbound message exists"), checked in the same statement.
    ``Blacklist`` ignores both. Returns whether the row changed; then ``lead``
    carries the values written.
    """
    now = timezone.now()
    changes: dict[str, Any] = {"sentiment": sentiment, "updated_at": now}
    blacklist = sentiment == Sentiment.BLACKLIST
    if blacklist:
        changes["status"] = LeadStatus.BLACKLISTED
    status, current = (qn(Lead._meta.get_field(name).column) for name in ("status", "sentiment"))
    where = f"id = %s AND workspace_id = %s AND {status} <> %s AND {current} <> %s"
    params: list[Any] = [lead.pk, lead.workspace_id, LeadStatus.BLACKLISTED, Sentiment.BLACKLIST]
    if only_replacing and not blacklist:
        where += f" AND {current} IN ({', '.join(['%s'] * len(only_replacing))})"
        params += list(only_replacing)
    if unless is not None and not blacklist:
        unless_sql, unless_params = unless.sql()
        where += f" AND NOT {unless_sql}"
        params += unless_params
    if not update_rows(Lead, changes, where, params):
        return False
    for key, value in changes.items():
        setattr(lead, key, value)
    return True


# --- Phone normalisation -------------------------------------------------------


def phone_normalize(*, raw: str, region: str | None = None) -> str:
    """Return ``raw`` as valid E.164, or "" when it is not a valid phone number.

    Junk that parses but is not a real number (``is_valid_number`` false) is
    refused too: nothing but valid E.164 ever reaches ``Lead.phone_e164``.
    """
    raw = (raw or "").strip()
    if not raw or len(raw) > 64:
        return ""
    try:
        number = phonenumbers.parse(raw, region or settings.DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_valid_number(number):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --- Lead matching and upsert ------------------------------------------------------


@dataclass(frozen=True)
class LeadIdentity:
    """What a payload tells about a lead. Blank strings mean "not given"."""

    ghl_contact_id: str = ""
    emailbison_lead_id: str = ""
    email: str = ""
    phone_raw: str = ""
    first_name: str = ""
    last_name: str = ""
    timezone: str = ""

    def normalised(self) -> LeadIdentity:
        return LeadIdentity(
            ghl_contact_id=(self.ghl_contact_id or "").strip()[:64],
            emailbison_lead_id=(self.emailbison_lead_id or "").strip()[:64],
            email=(self.email or "").strip().lower()[:320],
            phone_raw=(self.phone_raw or "").strip()[:64],
            first_name=(self.first_name or "").strip()[:200],
            last_name=(self.last_name or "").strip()[:200],
            timezone=_valid_timezone(self.timezone),
        )

    @property
    def is_empty(self) -> bool:
        return not (self.ghl_contact_id or self.emailbison_lead_id or self.email or self.phone_raw)


def _valid_timezone(name: str) -> str:
    """An IANA zone name ``ZoneInfo`` accepts, else "" ("America" is a directory, not a zone)."""
    name = (name or "").strip()[:64]
    return name if safe_zoneinfo(name) is not None else ""


def _first(queryset) -> Lead | None:
    """The row of a unique lookup, without the model's default ORDER BY (no sort to plan)."""
    rows = list(queryset.order_by()[:1])
    return rows[0] if rows else None


def lead_match(*, workspace_id: int, identity: LeadIdentity, phone_e164: str = "") -> Lead | None:
    """Find the workspace's lead for ``identity``.

    Order: GHL contact id, EmailBison lead id, email (case-insensitive), E.164
    phone. The first identifier that finds a lead wins; a lead whose provider
    id differs from the payload's is never matched by email or phone (it is
    another contact of that provider).
    """
    leads = Lead.objects.filter(workspace_id=workspace_id)
    if identity.ghl_contact_id:
        lead = _first(leads.filter(ghl_contact_id=identity.ghl_contact_id))
        if lead is not None:
            return lead
    if identity.emailbison_lead_id:
        lead = _first(leads.filter(emailbison_lead_id=identity.emailbison_lead_id))
        if lead is not None:
            return lead
    compatible = leads
    if identity.ghl_contact_id:
        compatible = compatible.filter(ghl_contact_id__in=["", identity.ghl_contact_id])
    if identity.emailbison_lead_id:
        compatible = compatible.filter(emailbison_lead_id__in=["", identity.emailbison_lead_id])
    if identity.email:
        lead = compatible.annotate(email_lower=Lower("email")).filter(email_lower=identity.email).order_by("id").first()
        if lead is not None:
            return lead
    if phone_e164:
        lead = compatible.filter(phone_e164=phone_e164).order_by("id").first()
        if lead is not None:
            return lead
    return None


def _lead_fill_blanks(*, lead: Lead, identity: LeadIdentity, phone_e164: str) -> None:
    """Fill the lead's empty fields from the payload (never overwrite known values)."""
    candidates = {
        "ghl_contact_id": identity.ghl_contact_id,
        "emailbison_lead_id": identity.emailbison_lead_id,
        "email": identity.email,
        "phone_e164": phone_e164,
        "phone_raw": identity.phone_raw,
        "first_name": identity.first_name,
        "last_name": identity.last_name,
        "timezone": identity.timezone,
    }
    changes = {field: value for field, value in candidates.items() if value and not getattr(lead, field)}
    if not changes:
        return
    provider_ids = {k: changes.pop(k) for k in ("ghl_contact_id", "emailbison_lead_id") if k in changes}
    if changes:
        # Only where still blank: a concurrent writer may have filled it first.
        for field, value in changes.items():
            Lead.objects.filter(pk=lead.pk, workspace_id=lead.workspace_id, **{field: ""}).update(
                **{field: value}, updated_at=timezone.now()
            )
            setattr(lead, field, value)
    for field, value in provider_ids.items():
        # Another lead may hold this provider id by now (concurrent creation):
        # then this lead simply keeps its blank id; uniqueness stays in the DB.
        try:
            with transaction.atomic():
                updated = Lead.objects.filter(pk=lead.pk, workspace_id=lead.workspace_id, **{field: ""}).update(
                    **{field: value}, updated_at=timezone.now()
                )
        except IntegrityError:
            continue
        if updated:
            setattr(lead, field, value)


def advisory_xact_lock(key: str) -> None:
    """Serialise writers on ``key`` until the transaction ends (PostgreSQL only).

    SQLite (the embedded dev setup) already serialises writers with
    ``BEGIN IMMEDIATE``.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_lock_id(key)])


def advisory_lock_id(key: str) -> int:
    """A PostgreSQL advisory lock key (a signed bigint) for the string ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def lead_discard_new(*, lead: Lead) -> None:
    """Delete a lead this transaction has just created and nothing refers to yet (its delivery
    turned out to repeat another lead's message): no lead is left without a message."""
    Lead.objects.filter(pk=lead.pk, workspace_id=lead.workspace_id).delete()


# No savepoint of its own: it runs inside the webhook transaction, and the
# only error it expects (the insert race) is caught in its inner atomic().
@transaction.atomic(savepoint=False)
def lead_upsert(*, workspace_id: int, identity: LeadIdentity) -> tuple[Lead, bool]:
    """Find or create the workspace's lead for ``identity``; returns (lead, created).

    Race-free: the insert runs in an inner ``atomic()``; when a concurrent
    request created the same lead first, the unique constraint on the
    provider id raises ``IntegrityError`` and the winner's row is re-read.
    Leads known only by email/phone (no provider id, so no unique constraint
    to lean on) are serialised with a transaction-scoped advisory lock.
    """
    identity = identity.normalised()
    if identity.is_empty:
        raise ValueError("lead identity needs a provider id, an email or a phone")
    phone_e164 = phone_normalize(raw=identity.phone_raw) if identity.phone_raw else ""
    lead = lead_match(workspace_id=workspace_id, identity=identity, phone_e164=phone_e164)
    if lead is not None:
        _lead_fill_blanks(lead=lead, identity=identity, phone_e164=phone_e164)
        return lead, False

    if not (identity.ghl_contact_id or identity.emailbison_lead_id):
        advisory_xact_lock(f"lead:{workspace_id}:{identity.email}:{phone_e164 or identity.phone_raw}")
        lead = lead_match(workspace_id=workspace_id, identity=identity, phone_e164=phone_e164)
        if lead is not None:
            _lead_fill_blanks(lead=lead, identity=identity, phone_e164=phone_e164)
            return lead, False

    new_lead = Lead(
        workspace_id=workspace_id,
        ghl_contact_id=identity.ghl_contact_id,
        emailbison_lead_id=identity.emailbison_lead_id,
        email=identity.email,
        phone_e164=phone_e164,
        phone_raw=identity.phone_raw,
        first_name=identity.first_name,
        last_name=identity.last_name,
        timezone=identity.timezone,
    )
    try:
        with transaction.atomic():
            new_lead.save(force_insert=True)
        return new_lead, True
    except IntegrityError:
        pass
    # Lost the race: the winner committed its row before our insert failed.
    lead = lead_match(workspace_id=workspace_id, identity=identity, phone_e164=phone_e164)
    if lead is None:
        raise RuntimeError("lead insert conflicted but no matching lead was found")
    _lead_fill_blanks(lead=lead, identity=identity, phone_e164=phone_e164)
    return lead, False


@functools.cache
def _rollup_sql(field: str, *, leads: int) -> str:
    column, last = (qn(Lead._meta.get_field(name).column) for name in (field, "last_message_at"))
    ids = "id = %s" if leads == 1 else f"id IN ({', '.join(['%s'] * leads)})"
    return (
        f"UPDATE {table(Lead)} SET {column} = GREATEST(COALESCE({column}, %s), %s),"  # noqa: S608 (names from _meta)
        f" {last} = GREATEST(COALESCE({last}, %s), %s) WHERE {ids} AND workspace_id = %s"
    )


def lead_rollups_touch(*, lead_ids: Iterable[int], workspace_id: int, direction: str, at: datetime) -> None:
    """Move the last inbound/outbound/message times of each of ``lead_ids`` forward to ``at``
    (never back).

    One statement, safe under concurrent messages for the same lead. On
    PostgreSQL it is plain SQL: it runs on every webhook and the ORM's
    expression compilation costs more than the query itself.
    """
    ids = sorted(set(lead_ids))
    if not ids:
        return
    field = "last_inbound_at" if direction == "inbound" else "last_outbound_at"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_rollup_sql(field, leads=len(ids)), [at, at, at, at, *ids, workspace_id])
        return
    Lead.objects.filter(pk__in=ids, workspace_id=workspace_id).update(
        **{
            field: Greatest(Coalesce(F(field), Value(at)), Value(at)),
            "last_message_at": Greatest(Coalesce(F("last_message_at"), Value(at)), Value(at)),
        }
    )


def lead_blacklist(*, lead: Lead, reason: str) -> Lead:
    """Opt-out or bounce: the lead becomes ``Blacklist`` for good (no drafts, any channel)."""
    del reason  # kept on the WebhookEvent; the lead only records the outcome
    if not lead_sentiment_set(lead=lead, sentiment=Sentiment.BLACKLIST):
        # Only a lead that is blacklisted already is left unchanged.
        lead.status, lead.sentiment = LeadStatus.BLACKLISTED, Sentiment.BLACKLIST
    return lead


def lead_sms_dnd_set(*, lead_id: int, workspace_id: int, dnd: bool) -> None:
    """The contact's SMS Do-Not-Disturb as GHL reports it (a send refused for DND, a sync)."""
    Lead.objects.filter(pk=lead_id, workspace_id=workspace_id).update(sms_dnd=dnd, updated_at=timezone.now())
