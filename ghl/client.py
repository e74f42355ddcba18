"""GoHighLevel (LeadConnector) API v2 client, on the shared resilience layer.

Calendars (availability), contacts (get, search, upsert), conversations
(search, messages list, send): ``<resource>_<verb>`` methods on
:class:`GhlClient`, each sending the ``Version`` its spec allows
(``ghl/tests/specs/``). Every request of a location passes one rate limiter
(``core.ratelimit``: shared through Redis by every process and host, or per
process without Redis). Errors are typed (:class:`GhlError` subclasses) and
redacted: no token, phone number or email address in a message.

This module imports nothing from the apps above it (leads, messaging...):
callers turn its plain values into their rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings

from core.http import (
    Deadline,
    HttpClient,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderHTTPError,
    ProviderNotFound,
    ProviderRateLimited,
    RetryPolicy,
)
from core.ratelimit import LocalWindowLimiter, RedisWindowLimiter, shared_limiter
from core.timeparse import parse_instant

CALENDARS_API_VERSION = "2021-04-15"
CONTACTS_API_VERSION = "2021-07-28"
CONVERSATIONS_API_VERSION = "2021-04-15"
FREE_SLOTS_MAX_RANGE = dt.timedelta(days=31)

CALENDAR_ID_RE = re.compile(r"^[A-Za-z0-9]{20}$")
_WIDGET_ID_RE = re.compile(r"/widget/booking/([A-Za-z0-9]{20})(?:/|$)")
_WIDGET_SLUG_RE = re.compile(r"/widget/bookings/([^/?#]+)")
_DATE_KEY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Calendar ids embedded in a booking page (JSON state, script config or an iframe src).
_EMBEDDED_ID_RES = (
    re.compile(r"""["']?calendar_?[Ii]d["']?\s*[:=]\s*["']([A-Za-z0-9]{20})["']"""),
    re.compile(r"/widget/booking/([A-Za-z0-9]{20})\b"),
)


CONTACT_ID_RE = re.compile(r"^[A-Za-z0-9]{15,64}$")
# "Too many open point-in-time contexts" (search endpoints): GHL needs a long pause, not a quick retry.
PIT_CONTEXT_RE = re.compile(r"point[\s_-]*in[\s_-]*time|\bpit\b[^.]*context", re.IGNORECASE)
PIT_CONTEXT_BACKOFF_S = 30.0
MESSAGES_PAGE_LIMIT = 100
MESSAGES_MAX_PAGES = 50
_EMAIL_TEXT_RE = re.compile(r"[^\s@<>\"']+@[^\s@<>\"']+\.[A-Za-z]{2,}")
_PHONE_TEXT_RE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


def rate_limiter_for(location_id: str) -> LocalWindowLimiter | RedisWindowLimiter:
    """The limiter of one GHL location (GHL's limit is per app per location): shared through
    ``RATE_LIMIT_REDIS_URL`` by every process and host, per process when that is empty."""
    return shared_limiter(
        f"ghl:{location_id or '-'}",
        limit=settings.GHL_REQUESTS_PER_10S,
        interval_s=10.0,
        redis_url=settings.RATE_LIMIT_REDIS_URL,
    )


# --- typed errors ---------------------------------------------------------------------


def redact_pii(text: str) -> str:
    """Email addresses and phone numbers out of an error text (GHL echoes the input)."""
    return _PHONE_TEXT_RE.sub("[phone]", _EMAIL_TEXT_RE.sub("[email]", text or ""))


class GhlError(ProviderError):
    """Base of GHL's typed errors. ``kind`` names the type (what the sync groups IntegrationErrors
    by); ``code`` stays the HTTP layer's generic code that other callers already rely on."""

    kind = "ghl_error"


class GhlAuthError(GhlError, ProviderAuthError):
    kind = "auth_failed"


class GhlForbiddenLocation(GhlError, ProviderAuthError):
    """403 "The token does not have access to this location."."""

    kind = "forbidden_location"


class GhlNotFound(GhlError, ProviderNotFound):
    kind = "not_found"


class GhlInvalidInput(GhlError, ProviderHTTPError):
    """400/422: GHL refused the input (bad contact id, phone, email...)."""

    kind = "invalid_input"


class GhlRateLimited(GhlError, ProviderRateLimited):
    kind = "rate_limited"


class GhlPitContextError(GhlError, ProviderRateLimited):
    """Too many open point-in-time search contexts: retried after at least 30 s."""

    kind = "pit_context"


class GhlServerError(GhlError, ProviderHTTPError):
    kind = "server_error"


def error_kind(exc: ProviderError) -> str:
    """The GHL error type of ``exc`` (its layer code for errors that are not GHL answers)."""
    return exc.kind if isinstance(exc, GhlError) else exc.code


def _typed(cls: type[GhlError], error: ProviderError, *, retry_after: float | None = None) -> GhlError:
    typed = cls(
        redact_pii(error.message),
        provider=error.provider,
        status=error.status,
        method=error.method,
        path=error.path,
        retry_after=retry_after if retry_after is not None else error.retry_after,
        attempts=error.attempts,
    )
    return typed


def classify_error(response: requests.Response, error: ProviderError) -> ProviderError:
    """The HTTP layer's hook: GHL's answer as a typed, PII-free :class:`GhlError`."""
    status = error.status or 0
    if PIT_CONTEXT_RE.search(error.message or ""):
        return _typed(GhlPitContextError, error, retry_after=max(PIT_CONTEXT_BACKOFF_S, error.retry_after or 0.0))
    if status == 429:
        return _typed(GhlRateLimited, error)
    if status == 401:
        return _typed(GhlAuthError, error)
    if status == 403:
        location = "location" in (error.message or "").lower()
        return _typed(GhlForbiddenLocation if location else GhlAuthError, error)
    if status == 404:
        return _typed(GhlNotFound, error)
    if status in (400, 422):
        return _typed(GhlInvalidInput, error)
    if status >= 500:
        return _typed(GhlServerError, error)
    return _typed(GhlError, error)


# --- plain values --------------------------------------------------------------------


@dataclass(frozen=True)
class GhlContact:
    id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""
    timezone: str = ""
    sms_dnd: bool = False


@dataclass(frozen=True)
class GhlConversation:
    id: str
    contact_id: str = ""
    type: str = ""


@dataclass(frozen=True)
class GhlMessage:
    """One conversation message; ``sent_at`` is the message's own ``dateAdded`` (None if absent)."""

    id: str
    conversation_id: str
    direction: str  # inbound | outbound
    channel: str  # sms | email | "" (calls, activities...: not messages Leadline keeps)
    body: str
    subject: str
    sent_at: dt.datetime | None


@dataclass(frozen=True)
class ContactUpsert:
    """What Leadline sends to ``POST /contacts/upsert`` (already normalised: E.164 phone, lower-case email)."""

    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""
    source: str = "leadline"


@dataclass(frozen=True)
class UpsertResult:
    contact_id: str
    created: bool


class GhlClient:
    """Authenticated calls on ``GHL_API_BASE_URL``; public widget calls on ``GHL_BACKEND_BASE_URL``."""

    def __init__(
        self,
        *,
        token: str = "",
        location_id: str = "",
        read_timeout_s: float | None = None,
        connect_timeout_s: float = 3.05,
        retry: RetryPolicy | None = None,
        max_connections: int = 10,
    ) -> None:
        """``max_connections``: keep-alive connections to the API kept for threads sharing the
        client (a batch of sends, ``drafts.sending``)."""
        self.token = token
        self.location_id = location_id
        read_timeout_s = read_timeout_s or settings.GHL_FETCH_TIMEOUT_S
        retry = retry or RetryPolicy(max_rate_limited_tries=settings.GHL_MAX_429_RETRIES + 1)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.limiter = rate_limiter_for(location_id)
        self.api = HttpClient(
            provider="ghl",
            base_url=settings.GHL_API_BASE_URL,
            headers=headers,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retry=retry,
            rate_limiter=self.limiter,
            secrets=[token],
            classify_error=classify_error,
            max_connections=max_connections,
        )
        self._token = token
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._retry = retry

    # The widget and booking-page clients are built on first use: a send or a sync never needs
    # them, and each is a requests session of its own.

    @functools.cached_property
    def public(self) -> HttpClient:
        """The widget endpoints: public, so the token is never sent there."""
        return HttpClient(
            provider="ghl-widget",
            base_url=settings.GHL_BACKEND_BASE_URL,
            connect_timeout_s=self._connect_timeout_s,
            read_timeout_s=self._read_timeout_s,
            retry=self._retry,
            secrets=[self._token],
        )

    @functools.cached_property
    def booking_pages(self) -> HttpClient:
        """Booking pages are URLs typed into workspace settings: only public addresses."""
        return HttpClient(
            provider="ghl-booking-page",
            connect_timeout_s=self._connect_timeout_s,
            read_timeout_s=self._read_timeout_s,
            retry=self._retry,
            secrets=[self._token],
            outbound_guard=True,
        )

    def _built(self) -> list[HttpClient]:
        return [self.api, *(self.__dict__[name] for name in ("public", "booking_pages") if name in self.__dict__)]

    def close(self) -> None:
        for http in self._built():
            http.close()

    def __enter__(self) -> GhlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calendars ---

    def calendars_list(self, *, deadline: Deadline | float | None = None) -> list[dict]:
        """``GET /calendars/?locationId=`` → the location's calendars (id, name, slug, widgetSlug...)."""
        body = self.api.get_json(
            "/calendars/",
            params={"locationId": self.location_id},
            headers={"Version": CALENDARS_API_VERSION},
            deadline=deadline,
        )
        calendars = body.get("calendars") if isinstance(body, dict) else None
        if not isinstance(calendars, list):
            raise ProviderBadResponse("calendars list answer has no 'calendars' array", provider="ghl")
        return [c for c in calendars if isinstance(c, dict)]

    def calendar_free_slots(
        self,
        *,
        calendar_id: str,
        start: dt.datetime,
        end: dt.datetime,
        timezone: str,
        public: bool = False,
        deadline: Deadline | float | None = None,
    ) -> list[dt.datetime]:
        """Free slot starts (UTC, sorted) of a calendar between ``start`` and ``end``.

        ``public=True`` uses the unauthenticated widget endpoint on the backend
        host. Ranges longer than 31 days are split into several requests.
        """
        deadline = Deadline.coerce(deadline)
        http = self.public if public else self.api
        path = f"/calendars/{quote(calendar_id, safe='')}/free-slots"
        found: set[dt.datetime] = set()
        for window_start, window_end in split_range(start, end, FREE_SLOTS_MAX_RANGE):
            body = http.get_json(
                path,
                params={
                    "startDate": _epoch_ms(window_start),
                    "endDate": _epoch_ms(window_end),
                    "timezone": timezone,
                },
                headers={"Version": CALENDARS_API_VERSION},
                deadline=deadline,
            )
            found.update(parse_free_slots(body))
        return sorted(s for s in found if start <= s <= end)

    # --- conversations: send ---

    def message_send(
        self,
        *,
        contact_id: str,
        message_type: str = "SMS",
        message: str = "",
        subject: str = "",
        html: str = "",
        reply_message_id: str = "",
        deadline: Deadline | float | None = None,
    ) -> dict:
        """``POST /conversations/messages``: send an SMS or an email to a contact.

        A write: never retried blindly (only a connect timeout or a 429, which GHL certainly
        did not process). Answers ``{conversationId, messageId, msg}``.
        """
        body: dict[str, str] = {"type": message_type, "contactId": contact_id}
        if message:
            body["message"] = message
        if subject:
            body["subject"] = subject
        if html:
            body["html"] = html
        if reply_message_id:
            body["replyMessageId"] = reply_message_id
        response = self.api.request(
            "POST",
            "/conversations/messages",
            json=body,
            headers={"Version": CONVERSATIONS_API_VERSION},
            deadline=deadline,
            idempotent=False,
        )
        answer = self.api.json_of(response)
        if not isinstance(answer, dict) or not (answer.get("messageId") or answer.get("conversationId")):
            raise ProviderBadResponse("message send answer has no messageId", provider="ghl")
        return answer

    # --- booking widget page ---

    def booking_page_calendar_id(self, *, url: str, deadline: Deadline | float | None = None) -> str | None:
        """Fetch a booking widget page and return the calendar id embedded in it, if any."""
        response = self.booking_pages.request(
            "GET", url, headers={"Accept": "text/html,application/json"}, deadline=deadline, rate_limited=False
        )
        return calendar_id_from_page(response.content.decode("utf-8", errors="replace"))

    @property
    def requests_sent(self) -> int:
        return sum(http.requests_sent for http in self._built() if http.provider != "ghl-booking-page")

    @property
    def rate_limited_answers(self) -> int:
        return sum(http.rate_limited_answers for http in self._built() if http.provider != "ghl-booking-page")

    # --- contacts (Version 2021-07-28) ---

    def contact_get(self, *, contact_id: str, deadline: Deadline | float | None = None) -> GhlContact:
        """``GET /contacts/{contactId}``. An id that cannot be a GHL id is refused before any call."""
        contact_id = _checked_contact_id(contact_id)
        body = self.api.get_json(
            f"/contacts/{quote(contact_id, safe='')}",
            headers={"Version": CONTACTS_API_VERSION},
            deadline=deadline,
        )
        contact = body.get("contact") if isinstance(body, dict) else None
        if not isinstance(contact, dict):
            raise ProviderBadResponse("contact answer has no 'contact' object", provider="ghl")
        return parse_contact(contact)

    def contacts_search(
        self, *, query: str, page_limit: int = 20, deadline: Deadline | float | None = None
    ) -> list[GhlContact]:
        """``POST /contacts/search`` (a read: retried like a GET; "pit context" errors wait 30 s)."""
        response = self.api.request(
            "POST",
            "/contacts/search",
            json={"locationId": self.location_id, "query": query, "pageLimit": page_limit},
            headers={"Version": CONTACTS_API_VERSION},
            deadline=deadline,
            idempotent=True,
        )
        body = self.api.json_of(response)
        contacts = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(contacts, list):
            raise ProviderBadResponse("contacts search answer has no 'contacts' array", provider="ghl")
        return [parse_contact(c) for c in contacts if isinstance(c, dict) and c.get("id")]

    def contact_upsert(self, *, contact: ContactUpsert, deadline: Deadline | float | None = None) -> UpsertResult:
        """``POST /contacts/upsert``: a write, never retried blindly (only after a 429 or a connect
        timeout, when GHL certainly did not process it)."""
        body: dict[str, Any] = {"locationId": self.location_id}
        for key, value in (
            ("firstName", contact.first_name),
            ("lastName", contact.last_name),
            ("email", contact.email),
            ("phone", contact.phone),
            ("source", contact.source),
        ):
            if value:
                body[key] = value
        response = self.api.request(
            "POST", "/contacts/upsert", json=body, headers={"Version": CONTACTS_API_VERSION}, deadline=deadline
        )
        answer = self.api.json_of(response)
        found = answer.get("contact") if isinstance(answer, dict) else None
        contact_id = found.get("id") if isinstance(found, dict) else None
        if not isinstance(contact_id, str) or not CONTACT_ID_RE.fullmatch(contact_id):
            raise ProviderBadResponse("upsert answer has no valid 'contact.id'", provider="ghl")
        return UpsertResult(contact_id=contact_id, created=bool(answer.get("new")))

    # --- conversations (Version 2021-04-15) ---

    def conversations_search(
        self, *, contact_id: str = "", limit: int = 20, deadline: Deadline | float | None = None
    ) -> list[GhlConversation]:
        """``GET /conversations/search?locationId[&contactId]``: the contact's conversations (the
        location's latest without a contact: the sync's credentials check)."""
        params: dict[str, Any] = {"locationId": self.location_id, "limit": limit}
        if contact_id:
            params["contactId"] = _checked_contact_id(contact_id)
        body = self.api.get_json(
            "/conversations/search",
            params=params,
            headers={"Version": CONVERSATIONS_API_VERSION},
            deadline=deadline,
        )
        conversations = body.get("conversations") if isinstance(body, dict) else None
        if not isinstance(conversations, list):
            raise ProviderBadResponse("conversations search answer has no 'conversations' array", provider="ghl")
        return [
            GhlConversation(id=str(c["id"]), contact_id=str(c.get("contactId") or ""), type=str(c.get("type") or ""))
            for c in conversations
            if isinstance(c, dict) and c.get("id")
        ]

    def conversation_messages_pages(
        self,
        *,
        conversation_id: str,
        limit: int = MESSAGES_PAGE_LIMIT,
        max_pages: int = MESSAGES_MAX_PAGES,
        deadline: Deadline | float | None = None,
    ) -> Iterator[list[GhlMessage]]:
        """``GET /conversations/{id}/messages``, one page at a time (newest first), following
        ``nextPage``/``lastMessageId``. Both answer shapes are accepted. The caller may stop early
        (an incremental sync stops at the first page it already knows)."""
        last_message_id = ""
        for _ in range(max_pages):
            params: dict[str, Any] = {"limit": limit}
            if last_message_id:
                params["lastMessageId"] = last_message_id
            body = self.api.get_json(
                f"/conversations/{quote(conversation_id, safe='')}/messages",
                params=params,
                headers={"Version": CONVERSATIONS_API_VERSION},
                deadline=deadline,
            )
            page = parse_messages_page(body, conversation_id=conversation_id)
            yield page.messages
            if not page.next_page or not page.last_message_id or page.last_message_id == last_message_id:
                return
            last_message_id = page.last_message_id


# --- parsing helpers (pure) --------------------------------------------------------


def parse_widget_url(url: str) -> tuple[str, str] | None:
    """``("id", <calendarId>)`` or ``("slug", <slug>)`` from a booking widget URL; None otherwise.

    Only the path is matched: white-label domains serve the same paths.
    """
    path = urlsplit(url).path
    if match := _WIDGET_ID_RE.search(path):
        return "id", match.group(1)
    if match := _WIDGET_SLUG_RE.search(path):
        return "slug", match.group(1)
    return None


def calendar_id_from_page(html: str) -> str | None:
    for pattern in _EMBEDDED_ID_RES:
        if match := pattern.search(html):
            return match.group(1)
    return None


def calendar_for_slug(calendars: list[dict], slug: str) -> dict | None:
    wanted = slug.strip().lower()
    for calendar in calendars:
        for key in ("widgetSlug", "slug"):
            value = calendar.get(key)
            if isinstance(value, str) and value.strip().lower() == wanted:
                return calendar
    return None


def parse_free_slots(body: object) -> list[dt.datetime]:
    """Slot starts (UTC) from a free-slots answer in either known shape.

    ``{"2026-12-01": {"slots": ["2026-12-01T10:00:00-05:00", ...]}, "traceId": "..."}``
    or the same with slot objects ``{"startTime": ...}``. Non-date keys are skipped.
    """
    if not isinstance(body, dict):
        raise ProviderBadResponse("free-slots answer is not an object", provider="ghl")
    slots: list[dt.datetime] = []
    for key, day in body.items():
        if not _DATE_KEY_RE.match(str(key)) or not isinstance(day, dict):
            continue
        for item in day.get("slots") or []:
            raw = (item.get("startTime") or item.get("start")) if isinstance(item, dict) else item
            parsed = _parse_instant(raw)
            if parsed is not None:
                slots.append(parsed)
    return sorted(set(slots))


def _checked_contact_id(raw: str) -> str:
    contact_id = contact_id_clean(raw)
    if contact_id is None:
        raise GhlInvalidInput("not a GHL contact id (refused before sending)", provider="ghl")
    return contact_id


def contact_id_clean(raw: object) -> str | None:
    """The trimmed id when it can be a GHL contact id (``^[A-Za-z0-9]{15,64}$``), else None."""
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    return value if CONTACT_ID_RE.fullmatch(value) else None


def _sms_dnd(contact: dict) -> bool:
    if contact.get("dnd") is True:
        return True
    settings_ = contact.get("dndSettings")
    sms = settings_.get("SMS") if isinstance(settings_, dict) else None
    status = sms.get("status") if isinstance(sms, dict) else None
    return str(status or "").lower() in ("active", "permanent")


def _text(value: object, limit: int) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def parse_contact(contact: dict) -> GhlContact:
    return GhlContact(
        id=_text(contact.get("id"), 64),
        first_name=_text(contact.get("firstName"), 200),
        last_name=_text(contact.get("lastName"), 200),
        email=_text(contact.get("email"), 320),
        phone=_text(contact.get("phone"), 64),
        timezone=_text(contact.get("timezone"), 64),
        sms_dnd=_sms_dnd(contact),
    )


_CHANNELS = {"TYPE_SMS": "sms", "SMS": "sms", "TYPE_EMAIL": "email", "EMAIL": "email"}


@dataclass(frozen=True)
class MessagesPage:
    messages: list[GhlMessage]
    next_page: bool
    last_message_id: str


def parse_messages_page(body: object, *, conversation_id: str) -> MessagesPage:
    """A messages-list answer in either shape: ``{messages: {messages: [...], nextPage, lastMessageId}}``
    (older) or ``{messages: [...], nextPage, lastMessageId}`` (newer)."""
    if not isinstance(body, dict):
        raise ProviderBadResponse("messages answer is not an object", provider="ghl")
    holder: dict = body
    items = body.get("messages")
    if isinstance(items, dict):
        holder, items = items, items.get("messages")
    if not isinstance(items, list):
        raise ProviderBadResponse("messages answer has no 'messages' array", provider="ghl")
    messages = []
    for item in items:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        kind = str(item.get("messageType") or item.get("type") or "").upper()
        direction = str(item.get("direction") or "").lower()
        messages.append(
            GhlMessage(
                id=_text(item.get("id"), 64),
                conversation_id=_text(item.get("conversationId"), 64) or conversation_id,
                direction=direction if direction in ("inbound", "outbound") else "",
                channel=_CHANNELS.get(kind, ""),
                body=item.get("body") if isinstance(item.get("body"), str) else "",
                subject=_text(item.get("subject"), 998),
                sent_at=parse_instant(item.get("dateAdded")) if item.get("dateAdded") else None,
            )
        )
    last = holder.get("lastMessageId")
    return MessagesPage(
        messages=messages,
        next_page=holder.get("nextPage") is True,
        last_message_id=last if isinstance(last, str) else "",
    )


def split_range(start: dt.datetime, end: dt.datetime, size: dt.timedelta) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    cursor = start
    while cursor < end:
        window_end = min(cursor + size, end)
        yield cursor, window_end
        cursor = window_end


def _parse_instant(raw: object) -> dt.datetime | None:
    """A free-slots start: epoch seconds/milliseconds as a JSON number, or aware ISO 8601 text.

    An ISO instant without offset is ambiguous: skipped rather than guessed.
    Junk (huge numbers, NaN) gives None instead of raising.
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return parse_instant(raw)
    return parse_instant(raw, allow_epoch=False) if isinstance(raw, str) else None


def _epoch_ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)
