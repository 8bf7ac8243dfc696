"""``data.completeness`` task: completeness of every bound sensor for one local day.

Resources: ``config`` (the tenant's assets and zone, as of the request) and ``readings``
(``{sensor: timestamps_ns}`` over the day and the look-back, loaded from QuestDB by the
runner).  Params: ``day`` (YYYY-MM-DD, the tenant's local day; default: the day before
the request).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from bus.components import Context
from contracts.base import Event
from contracts.errors import TenantConfigError
from contracts.kpis import Kpi, KpiComputed
from processors.kpi.completeness import completeness, day_bounds_utc, nominal_interval_s

NAME = "kpi"
KINDS = ("data.completeness",)
NEEDS = ("config", "readings")
LOOKBACK_DAYS = 7


def target_day(event, tz: str) -> date:
    raw = event.params.get("day")
    if raw:
        try:
            return date.fromisoformat(str(raw))
        except ValueError:
            raise TenantConfigError(f"params.day: expected YYYY-MM-DD, got {raw!r}") from None
    return (event.recorded_at.astimezone(ZoneInfo(tz)) - timedelta(days=1)).date()


def handle(event, ctx: Context) -> Iterator[Event]:
    config = ctx.resources["config"]
    tenant = config.get("tenant")
    tz = tenant.timezone if tenant else "UTC"
    assets = config.get("assets")
    if assets is None or not assets.bindings:
        raise TenantConfigError("the tenant has no bound sensors (configure assets first)")
    day = target_day(event, tz)
    start, end = day_bounds_utc(day, tz)
    lo, hi = int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9
    readings = ctx.resources["readings"] or {}
    kpis = []
    sensors = sorted({b.sensor for b in assets.bindings})
    for i, sensor in enumerate(sensors):
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
        kpis.append(Kpi(name="completeness", subject=sensor, value=float(ratio), unit="1",
                        detail=detail))
        if len(sensors) > 20 and i % 20 == 19:
            yield ctx.progress((i + 1) / len(sensors), f"{i + 1} of {len(sensors)} sensors")
    yield ctx.derive(KpiComputed, key=f"completeness/{day}", day=day.isoformat(),
                     task_id=event.event_id, kpis=kpis)


HANDLERS = {"data.completeness": handle}
