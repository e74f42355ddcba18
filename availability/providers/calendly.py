"""Calendly: the booking link resolved to an event type first, then the configured event type URI."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from django.conf import settings

from availability.providers import (
    CalendarNotFound,
    FetchPath,
    FetchResult,
    FetchWindow,
    NotConfigured,
    booking_then_config_paths,
)
from core.http import Deadline, HttpClient, ProviderBadResponse, ProviderNotFound, RetryPolicy
from core.timeparse import parse_instant
from ghl.client import split_range

# Older accounts accept at most 7 days per request (newer: 31); 7 always works.
AVAILABLE_TIMES_WINDOW = dt.timedelta(days=7)
EVENT_TYPES_MAX_PAGES = 5


class CalendlyClient:
    def __init__(self, *, token: str, read_timeout_s: float | None = None) -> None:
        self.http = HttpClient(
            provider="calendly",
            base_url=settings.CALENDLY_API_BASE_URL,
            headers={"Authorization": f"Bearer {token}"},
            read_timeout_s=read_timeout_s or settings.AVAILABILITY_FETCH_TIMEOUT_S,
            retry=RetryPolicy(max_tries=2, max_rate_limited_tries=2, retry_timeouts=False),
            secrets=[token],
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CalendlyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def users_me(self, *, deadline: Deadline) -> dict:
        body = self.http.get_json("/users/me", deadline=deadline)
        resource = body.get("resource") if isinstance(body, dict) else None
        if not isinstance(resource, dict) or not resource.get("uri"):
            raise ProviderBadResponse("/users/me answer has no resource.uri", provider="calendly")
        return resource

    def event_types(self, *, user_uri: str, deadline: Deadline) -> list[dict]:
        found: list[dict] = []
        url, params = "/event_types", {"user": user_uri, "count": 100}
        for _ in range(EVENT_TYPES_MAX_PAGES):
            body = self.http.get_json(url, params=params, deadline=deadline)
            collection = body.get("collection") if isinstance(body, dict) else None
            if not isinstance(collection, list):
                raise ProviderBadResponse("/event_types answer has no collection", provider="calendly")
            found.extend(item for item in collection if isinstance(item, dict))
            next_page = ((body.get("pagination") or {}) if isinstance(body, dict) else {}).get("next_page")
            if not next_page:
                break
            url, params = next_page, None
        return found

    def available_times(
        self, *, event_type_uri: str, start: dt.datetime, end: dt.datetime, deadline: Deadline
    ) -> list[dt.datetime]:
        """Available start times (UTC) split into windows the API accepts; never starts in the past."""
        earliest = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        start = max(start, earliest)
        slots: set[dt.datetime] = set()
        for window_start, window_end in split_range(start, end, AVAILABLE_TIMES_WINDOW):
            body = self.http.get_json(
                "/event_type_available_times",
                params={
                    "event_type": event_type_uri,
                    "start_time": _iso(window_start),
                    "end_time": _iso(window_end),
                },
                deadline=deadline,
            )
            collection = body.get("collection") if isinstance(body, dict) else None
            if not isinstance(collection, list):
                raise ProviderBadResponse("available times answer has no collection", provider="calendly")
            for item in collection:
                if not isinstance(item, dict) or item.get("status", "available") != "available":
                    continue
                if item.get("invitees_remaining", 1) in (0, "0"):
                    continue  # fully booked
                parsed = _parse_start(item.get("start_time"))
                if parsed is not None:
                    slots.add(parsed)
        return sorted(slots)


def fetch_paths(*, workspace, cached: dict, window: FetchWindow) -> list[FetchPath]:
    return booking_then_config_paths(
        provider="calendly",
        booking_url=workspace.calendly_booking_url,
        config=workspace.calendly_event_type_uri,
        via_booking_url=lambda deadline: fetch_via_booking_url(
            workspace=workspace, cached=cached, window=window, deadline=deadline
        ),
        via_config=lambda deadline: fetch_via_event_type(workspace=workspace, window=window, deadline=deadline),
    )


def _normalised_path(url: str) -> str:
    return urlsplit(url).path.rstrip("/").lower()


def resolve_booking_url(*, workspace, client: CalendlyClient, cached: dict, deadline: Deadline) -> dict:
    """{event_type_uri, user_uri, timezone} of the workspace's Calendly booking link.

    Cached per link: later refreshes skip ``/users/me`` and ``/event_types``.
    """
    url = workspace.calendly_booking_url
    if cached.get("booking_url") == url and cached.get("event_type_uri"):
        return {k: cached.get(k, "") for k in ("event_type_uri", "user_uri", "timezone")}
    me = client.users_me(deadline=deadline)
    event_types = client.event_types(user_uri=me["uri"], deadline=deadline)
    wanted = _normalised_path(url)
    slug = wanted.rsplit("/", 1)[-1]
    match = next(
        (et for et in event_types if et.get("scheduling_url") and _normalised_path(et["scheduling_url"]) == wanted),
        None,
    ) or next((et for et in event_types if str(et.get("slug", "")).lower() == slug), None)
    if match is None or not match.get("uri"):
        raise CalendarNotFound(f"no Calendly event type of this user matches the booking link path {wanted!r}")
    return {"event_type_uri": match["uri"], "user_uri": me["uri"], "timezone": me.get("timezone", "")}


def fetch_via_booking_url(*, workspace, cached: dict, window: FetchWindow, deadline: Deadline) -> FetchResult:
    if not workspace.calendly_token:
        raise NotConfigured("Calendly booking link needs a Calendly token to resolve")
    with CalendlyClient(token=workspace.calendly_token) as client:
        ids = resolve_booking_url(workspace=workspace, client=client, cached=cached, deadline=deadline)
        slots = _available(client, ids["event_type_uri"], window, deadline)
    return FetchResult(slots=slots, resolved={"calendly": {"booking_url": workspace.calendly_booking_url, **ids}})


def fetch_via_event_type(*, workspace, window: FetchWindow, deadline: Deadline) -> FetchResult:
    if not workspace.calendly_token:
        raise NotConfigured("Calendly event type needs a Calendly token")
    with CalendlyClient(token=workspace.calendly_token) as client:
        slots = _available(client, workspace.calendly_event_type_uri, window, deadline)
    return FetchResult(slots=slots, resolved={"calendly": {"config_event_type_uri": workspace.calendly_event_type_uri}})


def _available(client: CalendlyClient, event_type_uri: str, window: FetchWindow, deadline: Deadline):
    try:
        return client.available_times(
            event_type_uri=event_type_uri, start=window.start, end=window.end, deadline=deadline
        )
    except ProviderNotFound as exc:
        raise CalendarNotFound(f"Calendly event type not found: {exc.message}", status=exc.status) from exc


def _parse_start(raw: object) -> dt.datetime | None:
    """Calendly ``start_time``: aware ISO 8601 text only."""
    return parse_instant(raw, allow_epoch=False) if isinstance(raw, str) else None


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
