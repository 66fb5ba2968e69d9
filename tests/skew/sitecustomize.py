"""Loaded by a test server process to run its wall clock QM_TEST_CLOCK_SKEW_S seconds off."""

import os
import time

_skew = float(os.environ.get("QM_TEST_CLOCK_SKEW_S", "0"))
if _skew:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _skew  # type: ignore[assignment]
    time.time_ns = lambda: _time_ns() + int(_skew * 1e9)  # type: ignore[assignment]
