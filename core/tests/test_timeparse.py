import datetime as dt

import pytest

from core.timeparse import parse_instant, safe_zoneinfo

UTC = dt.UTC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-04-21T11:31:45.750Z", dt.datetime(2021, 4, 21, 11, 31, 45, 750000, tzinfo=UTC)),
        ("2026-12-01T10:00:00-05:00", dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)),
        (1764000000, dt.datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        (1764000000000, dt.datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        ("1764000000000", dt.datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
    ],
)
def test_parses_iso_and_epoch(raw, expected):
    assert parse_instant(raw) == expected


@pytest.mark.parametrize(
    "junk", ["²", "1" * 4400, "", "   ", "not a date", float("nan"), float("inf"), 10**30, True, [], {}, "2026-13-45"]
)
def test_junk_gives_none_never_raises(junk):
    assert parse_instant(junk) is None


def test_naive_iso_is_ambiguous_unless_asked():
    assert parse_instant("2026-12-01 10:00:00") is None
    assert parse_instant("2026-12-01 10:00:00", naive_as_utc=True) == dt.datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_epoch_can_be_refused():
    assert parse_instant(1764000000, allow_epoch=False) is None


@pytest.mark.parametrize("name", ["America", "../etc/passwd", "Mars/Olympus", "", None, "America/"])
def test_safe_zoneinfo_refuses_malformed_names(name):
    assert safe_zoneinfo(name) is None


def test_safe_zoneinfo_accepts_real_zones():
    assert str(safe_zoneinfo("America/New_York")) == "America/New_York"
