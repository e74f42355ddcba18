"""One tolerant parser for the instants providers send (ISO 8601 or epoch)."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from typing import Any

_MAX_EPOCH_DIGITS = 16  # epoch milliseconds have 13; anything longer is junk


def parse_instant(value: Any, *, allow_epoch: bool = True, naive_as_utc: bool = False) -> dt.datetime | None:
    """An aware UTC datetime from ISO 8601 text or epoch seconds/milliseconds, else None.

    Never raises on junk (Unicode digits, huge numbers, NaN, bad dates).
    ``naive_as_utc``: read an ISO value without offset as UTC; otherwise it is
    ambiguous and gives None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _from_epoch(value) if allow_epoch else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return _from_epoch(int(text)) if allow_epoch and len(text) <= _MAX_EPOCH_DIGITS else None
    if "T" not in text and " " in text:
        text = text.replace(" ", "T", 1)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if not naive_as_utc:
            return None
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None


def _from_epoch(number: float) -> dt.datetime | None:
    if not math.isfinite(number):
        return None
    seconds = number / 1000 if abs(number) > 1e11 else number
    try:
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def safe_zoneinfo(name: str | None) -> zoneinfo.ZoneInfo | None:
    """The IANA zone called ``name``, or None for empty/unknown/malformed names.

    ``ZoneInfo`` raises more than ZoneInfoNotFoundError: "America" is a
    directory (IsADirectoryError), "../x" a ValueError.
    """
    if not name or not isinstance(name, str):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None
