"""GoHighLevel (LeadConnector) API v2 client, on the shared resilience layer.

Only what availability needs today (calendars list, free slots, the booking
widget page); contacts and conversations join as more ``<resource>_<verb>``
methods on :class:`GhlClient`, each naming its ``Version`` header.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

from django.conf import settings

from core.http import Deadline, HttpClient, ProviderBadResponse, RetryPolicy, TokenBucket, shared_bucket
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


def rate_limiter_for(location_id: str) -> TokenBucket:
    """The process-wide bucket for one GHL location (the limit is per app per location)."""
    return shared_bucket(f"ghl:{location_id or '-'}", capacity=settings.GHL_REQUESTS_PER_10S, interval_s=10.0)


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
    ) -> None:
        self.token = token
        self.location_id = location_id
        read_timeout_s = read_timeout_s or settings.GHL_FETCH_TIMEOUT_S
        retry = retry or RetryPolicy(max_rate_limited_tries=settings.GHL_MAX_429_RETRIES + 1)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.api = HttpClient(
            provider="ghl",
            base_url=settings.GHL_API_BASE_URL,
            headers=headers,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retry=retry,
            rate_limiter=rate_limiter_for(location_id),
            secrets=[token],
        )
        # The widget endpoints are public: never send the token there.
        self.public = HttpClient(
            provider="ghl-widget",
            base_url=settings.GHL_BACKEND_BASE_URL,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retry=retry,
            secrets=[token],
        )
        # Booking pages are URLs typed into workspace settings: only public addresses.
        self.booking_pages = HttpClient(
            provider="ghl-booking-page",
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retry=retry,
            secrets=[token],
            outbound_guard=True,
        )

    def close(self) -> None:
        self.api.close()
        self.public.close()
        self.booking_pages.close()

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
