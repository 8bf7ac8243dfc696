"""The day a KPI task is about, and the completeness figures every KPI task reports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from contracts.errors import TenantConfigError
from contracts.kpis import Kpi
from processors.kpi.completeness import completeness, nominal_interval_s

LOOKBACK_DAYS = 7


def target_day(event, tz: str) -> date:
    """``params.day``, else the local day before the scheduled slot (a slot caught up
    after downtime still computes its own day), else before the request."""
    raw = event.params.get("day")
    if raw:
        try:
            return date.fromisoformat(str(raw))
        except ValueError:
            raise TenantConfigError(f"params.day: expected YYYY-MM-DD, got {raw!r}") from None
    at = getattr(event, "slot", None) or event.recorded_at
    return (at.astimezone(ZoneInfo(tz)) - timedelta(days=1)).date()


def completeness_kpis(sensors, readings: dict, lo: int, hi: int) -> Iterator[Kpi]:
    """One ``completeness`` KPI per sensor over [lo, hi) (UTC ns); ``readings``:
    sensor -> timestamps_ns over the day and the look-back."""
    for sensor in sensors:
        t = np.asarray(readings.get(sensor, ()), dtype=np.int64)
        today = t[(t >= lo) & (t < hi)]
        before = t[t < lo]
        interval = nominal_interval_s(before if before.size >= 2 else today)
        ratio, expected = completeness(int(today.size), (hi - lo) / 1e9, interval)
        if ratio is None:
            detail = "no nominal interval (fewer than two readings before and on the day)"
            ratio = float("nan")
        else:
            detail = (f"{today.size} of {expected} expected (every {interval:g} s)"
                      if expected else "no readings and no nominal interval")
        yield Kpi(name="completeness", subject=sensor, value=float(ratio), unit="1",
                  detail=detail)
