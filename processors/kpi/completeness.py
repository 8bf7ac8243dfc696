"""Data completeness per bound sensor: readings received / readings expected, one day.

Expected readings: the day's length in the tenant's zone (23, 24 or 25 hours) divided by
the sensor's nominal interval, the median spacing of its readings over the days before
(a 5-minute SCADA export expects 288 on a 24-hour day, 276 on the spring day).  A sensor
with fewer than two readings in the look-back has no nominal interval: its completeness
is 0 if the day has nothing, else not computed (said in ``detail``).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np


def day_bounds_utc(day: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of local ``day`` in UTC (23, 24 or 25 hours apart)."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def nominal_interval_s(timestamps_ns: np.ndarray) -> float | None:
    """Median spacing of sorted instants (s); None with fewer than two."""
    t = np.unique(np.asarray(timestamps_ns, dtype=np.int64))
    if t.size < 2:
        return None
    return float(np.median(np.diff(t))) / 1e9


def completeness(received: int, day_seconds: float, interval_s: float | None
                 ) -> tuple[float | None, int | None]:
    """(received / expected, expected); (None, None) when the interval is unknown."""
    if interval_s is None or interval_s <= 0:
        return (0.0, None) if received == 0 else (None, None)
    expected = int(round(day_seconds / interval_s))
    return (min(received / expected, 1.0) if expected else None), expected
