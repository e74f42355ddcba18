# Loaded by Python processes that tests start while LEADLINE_TEST_CLOCK_SHIFT is set
# (core/testing/clock.py puts this folder on their PYTHONPATH): the same moved calendar.
import os

if os.environ.get("LEADLINE_TEST_CLOCK_SHIFT"):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from core.testing.clock import clock_shift_start

    clock_shift_start()
