"""The day in the EPANET twin: as it was run, and as the network's own controls would have
run it (the counterfactual), under the same measured demand, initial levels and tariff.

The day is cut into ``PERIOD_S`` periods (5 minutes: SCADA's usual interval, and
L-Town's hydraulic step).  As run, each pump with readings is driven period by period by
what its readings show (on when it ran for at least half the period; its measured
relative speed when a speed sensor speaks for it); pumps without readings keep the
network's controls.  The counterfactual removes nothing: the .inp's controls and rules
decide, from the .inp's initial pump status, exactly as the optimiser's baseline.
Zone demand: each zone's measured hourly inflow over the model's own demand in that hour
gives the hour's multiplier (hours without readings interpolated).  Prices: one per
period, from the tenant's tariff in its zone (holidays priced as such) or the measured
dynamic price.  Units: s, m, m3/s, kWh, the tariff's currency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from contracts.config import day_type
from processors.simulate.cost import PeriodPrices, cost_by_period
from processors.simulate.demand import multipliers, zone_demand_m3s
from processors.simulate.network import Network
from processors.simulate.run import SimulationResult, Twin
from processors.simulate.scenario import ALL_JUNCTIONS

PERIOD_S = 300
LEVEL_TOLERANCE_M = 1e-6


@dataclass(frozen=True)
class DayRun:
    """One simulated day.  Per pump (``pump_ids`` order): energy kWh, cost, volume m3;
    per period and pump: energy; per tank: levels at every hydraulic step."""

    pump_ids: tuple[str, ...]
    energy_kwh: np.ndarray
    cost: np.ndarray
    pumped_m3: np.ndarray
    period_energy_kwh: np.ndarray
    period_cost: np.ndarray
    tank_ids: tuple[str, ...]
    times_s: np.ndarray
    tank_level_m: np.ndarray
    warnings: tuple[str, ...]

    def breaches(self, bounds_m: Mapping[str, tuple[float, float]]) -> list[tuple]:
        """(tank, "below"|"above", extreme level m, bound m, time s) per tank and side
        where the run left ``bounds_m`` (none: it kept every tank within them)."""
        out = []
        for i, tank in enumerate(self.tank_ids):
            if tank not in bounds_m:
                continue
            lo, hi = bounds_m[tank]
            lv = self.tank_level_m[:, i]
            if lv.min() < lo - LEVEL_TOLERANCE_M:
                k = int(lv.argmin())
                out.append((tank, "below", float(lv[k]), lo, float(self.times_s[k])))
            if lv.max() > hi + LEVEL_TOLERANCE_M:
                k = int(lv.argmax())
                out.append((tank, "above", float(lv[k]), hi, float(self.times_s[k])))
        return out

    def final_m(self, tank: str) -> float:
        return float(self.tank_level_m[-1, self.tank_ids.index(tank)])


def run_day(network: Network, *, periods: int, prices_per_kwh: Sequence[float],
            initial_levels_m: Mapping[str, float],
            demand_multipliers: Mapping[str, np.ndarray],
            zones: Mapping[str, Sequence[str]],
            speeds: Mapping[str, np.ndarray] | None = None,
            out_of_service: Sequence[str] = ()) -> DayRun:
    """Simulate ``periods`` x ``PERIOD_S`` from the given levels.  ``speeds`` (pump ->
    relative speed per period) drives those pumps; None: the network's own controls."""
    scheduled = tuple(p for p in network.pump_ids if speeds is not None and p in speeds)
    levels = [initial_levels_m.get(t.id, t.init_level_m) for t in network.tanks]
    with Twin(network, scheduled=scheduled, out_of_service=tuple(out_of_service),
              zones=zones) as twin:
        twin.lean = True
        matrix = (np.column_stack([np.asarray(speeds[p], dtype=float) for p in scheduled])
                  if scheduled else None)
        sim = twin.run(matrix, horizon_s=periods * PERIOD_S, period_s=PERIOD_S,
                       initial_levels_m=levels, demand_multipliers=demand_multipliers)
    return _figures(network, sim, prices_per_kwh)


def _figures(network: Network, sim: SimulationResult, prices: Sequence[float]) -> DayRun:
    period_cost = cost_by_period(PeriodPrices(tuple(float(p) for p in prices), PERIOD_S),
                                 network, sim)
    period_energy = sim.period_energy_kwh()
    volume = sim.period_sum(np.maximum(sim.pump_flow_m3s, 0.0)).sum(axis=0)
    return DayRun(sim.pump_ids, period_energy.sum(axis=0), period_cost.sum(axis=0), volume,
                  period_energy, period_cost, sim.tank_ids, sim.times_s - sim.start_s,
                  sim.tank_level_m, sim.warnings)


def zone_multipliers(network: Network, zones: Mapping[str, Sequence[str]],
                     measured_hourly_m3s: Mapping[str, np.ndarray], periods: int
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per zone key ("*" or the zone), a multiplier per period; and per zone, what drove
    it in words.  ``zones``: zone -> junctions (["*"]: every junction)."""
    per_hour = 3600 // PERIOD_S
    hours = periods // per_hour
    out, said = {}, {}
    for zone, junctions in zones.items():
        flows = np.asarray(measured_hourly_m3s.get(zone, ()), dtype=float)
        key = ALL_JUNCTIONS if list(junctions) == [ALL_JUNCTIONS] else zone
        if flows.size != hours or not np.isfinite(flows).any():
            said[zone] = "no inflow readings: the model's own demand patterns"
            continue
        model = zone_demand_m3s(network, ALL_JUNCTIONS if key == ALL_JUNCTIONS else junctions,
                                start_s=0, period_s=PERIOD_S, periods=periods)
        model_hourly = model.reshape(hours, per_hour).mean(axis=1)
        known = np.isfinite(flows)
        hourly = np.array(multipliers(np.where(known, flows, 0.0), model_hourly))
        filled = np.interp(np.arange(hours), np.flatnonzero(known), hourly[known])
        out[key] = np.repeat(filled, per_hour)
        gaps = int((~known).sum())
        said[zone] = (f"measured hourly inflow, {np.nanmean(flows) * 1000:.1f} l/s on "
                      f"average (model {model_hourly.mean() * 1000:.1f} l/s)"
                      + (f", {gaps} h without readings interpolated" if gaps else ""))
    return out, said


def period_prices(tariff, tenant, start_utc: datetime, periods: int,
                  dynamic_per_mwh: np.ndarray | None = None) -> np.ndarray:
    """Price per kWh of each period: the measured dynamic price (per MWh) where known,
    else the time-of-use price at the period's start in the tenant's zone."""
    zone = ZoneInfo(tenant.timezone if tenant else "UTC")
    holidays = tenant.holidays(range(start_utc.year - 1, start_utc.year + 2)) if tenant \
        else frozenset()
    out = np.empty(periods)
    for k in range(periods):
        if dynamic_per_mwh is not None and k < len(dynamic_per_mwh) \
                and np.isfinite(dynamic_per_mwh[k]):
            out[k] = dynamic_per_mwh[k] / 1000.0
            continue
        local = (start_utc + timedelta(seconds=k * PERIOD_S)).astimezone(zone)
        per_mwh, _ = tariff.price_per_mwh(day_type(local.date(), holidays),
                                          local.hour * 60 + local.minute)
        out[k] = per_mwh / 1000.0
    return out


def by_price(period_energy_kwh: np.ndarray, prices: np.ndarray) -> list[tuple[float, float]]:
    """(price per kWh, energy kWh) at each distinct price, cheapest first: a cost's
    arithmetic an engineer can redo."""
    e = np.asarray(period_energy_kwh, dtype=float)
    if e.ndim > 1:
        e = e.sum(axis=1)
    out = []
    for p in np.unique(np.round(prices, 9)):
        out.append((float(p), float(e[np.isclose(prices, p)].sum())))
    return out
