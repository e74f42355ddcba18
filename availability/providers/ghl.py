"""GHL calendars: the booking widget URL first, then the configured calendar id via the API."""

from __future__ import annotations

from django.conf import settings

from availability.providers import (
    CalendarNotFound,
    FetchPath,
    FetchResult,
    FetchWindow,
    NotConfigured,
    booking_then_config_paths,
)
from core.http import Deadline, ProviderError, ProviderNotFound, RetryPolicy
from ghl.client import GhlClient, calendar_for_slug, parse_widget_url

# A page that hung once will hang again: spend the rest of the deadline on the fallback instead.
AVAILABILITY_RETRY = RetryPolicy(max_tries=2, max_rate_limited_tries=2, retry_timeouts=False)


def _client(workspace) -> GhlClient:
    # Availability runs under a per-workspace deadline: fewer, faster attempts than sync.
    return GhlClient(
        token=workspace.ghl_token or "",
        location_id=workspace.ghl_location_id or "",
        read_timeout_s=settings.AVAILABILITY_FETCH_TIMEOUT_S,
        retry=AVAILABILITY_RETRY,
    )


def fetch_paths(*, workspace, cached: dict, window: FetchWindow) -> list[FetchPath]:
    return booking_then_config_paths(
        provider="ghl",
        booking_url=workspace.ghl_booking_url,
        config=workspace.ghl_calendar_id,
        via_booking_url=lambda deadline: fetch_via_booking_url(
            workspace=workspace, cached=cached, window=window, deadline=deadline
        ),
        via_config=lambda deadline: fetch_via_calendar_id(workspace=workspace, window=window, deadline=deadline),
    )


def resolve_booking_url(*, workspace, client: GhlClient, cached: dict, deadline: Deadline) -> tuple[str, str]:
    """(calendar id, how it was found) for the workspace's booking widget URL.

    ``/widget/booking/<id>`` carries the id. ``/widget/bookings/<slug>`` is
    resolved, cheapest first: the id cached by an earlier refresh of the same
    URL, the configured calendar id (the page is then never fetched), the
    calendars list with the workspace token, and last the page's embedded data.
    """
    url = workspace.ghl_booking_url
    parsed = parse_widget_url(url)
    if parsed is None:
        raise CalendarNotFound("booking URL is not a GHL widget URL (/widget/booking/<id> or /widget/bookings/<slug>)")
    kind, value = parsed
    if kind == "id":
        return value, "url"
    if cached.get("booking_url") == url and cached.get("booking_calendar_id"):
        return cached["booking_calendar_id"], "cache"
    if workspace.ghl_calendar_id:
        return workspace.ghl_calendar_id, "calendar_id_hint"
    api_error: ProviderError | None = None
    if workspace.ghl_token and workspace.ghl_location_id:
        try:
            calendar = calendar_for_slug(client.calendars_list(deadline=deadline), value)
        except ProviderError as exc:
            api_error = exc
        else:
            if calendar and calendar.get("id"):
                return str(calendar["id"]), "calendars_api"
    calendar_id = client.booking_page_calendar_id(url=url, deadline=deadline)
    if calendar_id:
        return calendar_id, "page"
    detail = f" (calendars list: {api_error.message})" if api_error else ""
    raise CalendarNotFound(f"no calendar found for booking slug {value!r}{detail}")


def fetch_via_booking_url(*, workspace, cached: dict, window: FetchWindow, deadline: Deadline) -> FetchResult:
    with _client(workspace) as client:
        calendar_id, via = resolve_booking_url(workspace=workspace, client=client, cached=cached, deadline=deadline)
        try:
            slots = client.calendar_free_slots(
                calendar_id=calendar_id,
                start=window.start,
                end=window.end,
                timezone=window.timezone,
                public=True,
                deadline=deadline,
            )
        except ProviderNotFound as exc:
            raise CalendarNotFound(f"calendar {calendar_id} not found: {exc.message}", status=exc.status) from exc
    return FetchResult(
        slots=slots,
        resolved={
            "ghl": {"booking_url": workspace.ghl_booking_url, "booking_calendar_id": calendar_id, "resolved_via": via}
        },
    )


def fetch_via_calendar_id(*, workspace, window: FetchWindow, deadline: Deadline) -> FetchResult:
    if not workspace.ghl_calendar_id:
        raise NotConfigured("no GHL calendar id configured")
    with _client(workspace) as client:
        try:
            slots = client.calendar_free_slots(
                calendar_id=workspace.ghl_calendar_id,
                start=window.start,
                end=window.end,
                timezone=window.timezone,
                # Without a token the widget's public endpoint is the only way in.
                public=not workspace.ghl_token,
                deadline=deadline,
            )
        except ProviderNotFound as exc:
            raise CalendarNotFound(
                f"calendar {workspace.ghl_calendar_id} not found: {exc.message}", status=exc.status
            ) from exc
    return FetchResult(slots=slots, resolved={"ghl": {"calendar_id": workspace.ghl_calendar_id}})
