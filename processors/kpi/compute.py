"""``kpi.compute`` task: the tenant's KPIs of one local day, as one ``kpi.computed``.

Figures (units in the names; each ``detail`` says how it was obtained and from what):
``completeness`` per bound sensor; ``tank_violation_minutes`` per tank; per pump and for
the network ``energy_kwh``, ``cost``, ``pumped_m3``, ``specific_energy_kwh_per_m3``,
``cost_per_m3``; for the network ``counterfactual_energy_kwh``, ``counterfactual_cost``,
``saving``, ``saving_energy_kwh``; per zone series ``forecast_mae_m3s``,
``naive_mae_m3s``, ``forecast_skill``; per pump and the network ``schedule_adherence``.
Missing inputs never fail the task: a figure that cannot be computed is NaN with the
reason (a tenant without a network still gets completeness, volumes and violations).

Resources (loaded by the runner, ``ops/loaders.py``): ``config`` (as of the request);
``readings`` (timestamps per bound sensor, for completeness); ``schedules`` (released
schedules known at the request); ``kpi_inputs``:

- ``series``: sensor -> (UTC ns, SI values) of the bound sensors from an hour before the
  day's start to its end;
- ``week_before``: the same for the zone inflow sensors, a week earlier;
- ``forecasts``: ``zone:<name>`` -> {``issued_at`` (aware UTC), ``valid_ns``, ``p50``,
  ``method``}, the latest forecast issued at or before the day's start.

Params: ``day`` (YYYY-MM-DD, local; default: the day before the slot or the request).
"""

from __future__ import annotations

from collections.abc import Iterator

from bus.components import Context
from contracts.base import Event
from contracts.kpis import KpiComputed
from processors.kpi.completeness import day_bounds_utc
from processors.kpi.context import KpiDay
from processors.kpi.day import completeness_kpis, target_day
from processors.kpi.energy_kpis import energy_kpis, network_of
from processors.kpi.from_readings import forecast_skill, schedule_adherence, tank_violations
from processors.kpi.series import Held


def kpi_day(event, config: dict, inputs: dict) -> KpiDay:
    tenant = config.get("tenant")
    tz = tenant.timezone if tenant else "UTC"
    day = target_day(event, tz)
    start, end = day_bounds_utc(day, tz)
    assets = config.get("assets")
    return KpiDay(
        day=day, tz=tz, start=start, end=end,
        bindings=list(assets.bindings) if assets else [],
        held={s: Held.of(t, v) for s, (t, v) in (inputs.get("series") or {}).items()},
        week_before={s: Held.of(t, v)
                     for s, (t, v) in (inputs.get("week_before") or {}).items()})


def handle_compute(event, ctx: Context) -> Iterator[Event]:
    config = ctx.resources["config"]
    inputs = ctx.resources.get("kpi_inputs") or {}
    d = kpi_day(event, config, inputs)
    network, no_network = network_of(config)
    kpis = list(completeness_kpis(sorted({b.sensor for b in d.bindings}),
                                  ctx.resources.get("readings") or {}, d.lo, d.hi))
    kpis += tank_violations(d, config.get("rules"), network)
    kpis += forecast_skill(d, inputs.get("forecasts") or {})
    kpis += schedule_adherence(d, ctx.resources.get("schedules") or [],
                               inputs.get("series") or {})
    yield ctx.progress(0.2, "readings done; simulating the day in the twin")
    kpis += energy_kpis(d, config, network, no_network)
    yield ctx.derive(KpiComputed, key=f"kpis/{d.day}", day=d.day.isoformat(),
                     task_id=event.event_id, kpis=kpis)
