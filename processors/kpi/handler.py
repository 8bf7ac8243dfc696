"""``data.completeness`` task: completeness of every bound sensor for one local day; and
the registry of the KPI worker's task kinds (``kpi.compute``: ``processors/kpi/compute.py``).

Resources: ``config`` (the tenant's assets and zone, as of the request) and ``readings``
(``{sensor: timestamps_ns}`` over the day and the look-back, loaded from QuestDB by the
runner); ``kpi.compute`` also reads ``kpi_inputs`` and ``schedules``.  Params: ``day``
(YYYY-MM-DD, the tenant's local day; default: the day before the scheduled slot, or
before the request).
"""

from __future__ import annotations

from collections.abc import Iterator

from bus.components import Context
from contracts.base import Event
from contracts.errors import TenantConfigError
from contracts.kpis import KpiComputed
from processors.kpi.completeness import day_bounds_utc
from processors.kpi.compute import handle_compute
from processors.kpi.day import LOOKBACK_DAYS, completeness_kpis, target_day

__all__ = ["HANDLERS", "KINDS", "LOOKBACK_DAYS", "NAME", "NEEDS", "handle", "target_day"]

NAME = "kpi"
KINDS = ("data.completeness", "kpi.compute")
NEEDS = ("config", "readings", "kpi_inputs", "schedules")


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
    for i, kpi in enumerate(completeness_kpis(sensors, readings, lo, hi)):
        kpis.append(kpi)
        if len(sensors) > 20 and i % 20 == 19:
            yield ctx.progress((i + 1) / len(sensors), f"{i + 1} of {len(sensors)} sensors")
    yield ctx.derive(KpiComputed, key=f"completeness/{day}", day=day.isoformat(),
                     task_id=event.event_id, kpis=kpis)


HANDLERS = {"data.completeness": handle, "kpi.compute": handle_compute}
