"""Run the test suite (and every process it starts) with the calendar moved.

``LEADLINE_TEST_CLOCK_SHIFT=30d scripts/test`` moves the wall clock (``time.time``,
``datetime.now``) of the pytest process, and of every Python process it starts
(gunicorn, Celery workers, ``scripts/dev``), by that many days (``h`` hours also
understood), with time still ticking. It proves that no test depends on the day it
runs. Monotonic clocks are left alone, so timeouts and deadlines behave as usual.
PostgreSQL keeps the real clock: code that compares the database's ``now()`` with
Python's clock breaks under a shift, which is the point (one clock per comparison).

Children get the same shift through ``clockshift/sitecustomize.py``, put on their
``PYTHONPATH``. (Debian's ``faketime`` cannot be used for this: under libfaketime
Python 3.11's ``time.sleep`` fails with EINVAL and thread timers never fire.)
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ENV_VAR = "LEADLINE_TEST_CLOCK_SHIFT"
_SITE_DIR = Path(__file__).resolve().parent / "clockshift"
_SHIFT = re.compile(r"^\s*(-?\d+)\s*([dh])\s*$")
_traveller = None


def clock_shift() -> timedelta | None:
    raw = os.environ.get(ENV_VAR, "")
    if not raw:
        return None
    match = _SHIFT.match(raw)
    if match is None:
        raise ValueError(f"{ENV_VAR}={raw!r}: expected a whole number of days or hours, e.g. 30d or 12h")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(days=amount) if unit == "d" else timedelta(hours=amount)


def clock_shift_start(*, children: bool = False) -> timedelta | None:
    """Start the shift in this process (idempotent); ``children``: also in the ones it starts."""
    global _traveller
    shift = clock_shift()
    if shift is None or _traveller is not None:
        return shift
    import time_machine

    _traveller = time_machine.travel(datetime.now(UTC) + shift, tick=True)
    coordinates = _traveller.start()
    # The travel starts ticking a moment after its destination was computed (a cold import can
    # take 0.1 s): correct that, so every process runs exactly ``shift`` ahead of the real clock
    # and clocks of different processes agree (a worker's timestamps vs the test's).
    real_now = time_machine.escape_hatch.time.time()
    coordinates.shift(shift.total_seconds() - (time.time() - real_now))
    if children:
        paths = [str(_SITE_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return shift


def midday_zone() -> str:
    """An IANA fixed-offset zone where it is about noon right now: a lead there is inside any
    daytime SMS send window whatever time the test runs (tests not about quiet hours use it)."""
    offset = 12 - datetime.now(UTC).hour  # -11 .. 12
    if offset == 0:
        return "Etc/UTC"
    return f"Etc/GMT-{offset}" if offset > 0 else f"Etc/GMT+{-offset}"  # Etc/ signs are inverted
