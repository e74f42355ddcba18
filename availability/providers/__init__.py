"""Availability providers: each turns a workspace's booking config into fetch paths.

A *fetch path* is one way to get the workspace's free slots (its booking URL,
or its auto-booking calendar config through the provider API). The refresh
service tries a workspace's paths in order until one succeeds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from core.http import Deadline, ProviderError

PATH_BOOKING_URL = "booking_url"
PATH_CALENDAR_CONFIG = "calendar_config"


class CalendarNotFound(ProviderError):
    """The booking URL / config does not lead to a calendar or event type."""

    code = "calendar_not_found"


class NotConfigured(ProviderError):
    """The workspace lacks what this path needs (URL, id, token)."""

    code = "not_configured"


@dataclass(frozen=True)
class FetchWindow:
    start: dt.datetime
    end: dt.datetime
    timezone: str


@dataclass
class FetchResult:
    slots: list[dt.datetime]
    resolved: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FetchPath:
    provider: str  # "ghl" | "calendly"
    name: str  # PATH_BOOKING_URL | PATH_CALENDAR_CONFIG
    fetch: Callable[[Deadline], FetchResult]


def booking_then_config_paths(
    *,
    provider: str,
    booking_url: str,
    config: str,
    via_booking_url: Callable[[Deadline], FetchResult],
    via_config: Callable[[Deadline], FetchResult],
) -> list[FetchPath]:
    """The fallback order every provider shares: its booking URL path, then its calendar config path.

    A path is included only when the workspace has what it starts from
    (``booking_url`` / ``config``: the GHL calendar id or Calendly event type URI).
    """
    paths = []
    if booking_url:
        paths.append(FetchPath(provider=provider, name=PATH_BOOKING_URL, fetch=via_booking_url))
    if config:
        paths.append(FetchPath(provider=provider, name=PATH_CALENDAR_CONFIG, fetch=via_config))
    return paths


def fetch_paths(*, workspace, cached: dict, window: FetchWindow) -> list[FetchPath]:
    """The workspace's fetch paths in fallback order (may be empty when nothing is configured)."""
    from availability.providers import calendly, ghl

    if workspace.booking_provider == "calendly":
        return calendly.fetch_paths(workspace=workspace, cached=cached.get("calendly") or {}, window=window)
    if workspace.booking_provider == "ghl":
        return ghl.fetch_paths(workspace=workspace, cached=cached.get("ghl") or {}, window=window)
    return []
