"""How far the twin is from reality: the past days simulated as they were run, against
what the sensors measured (pure).

Each day before the start is simulated on its own, in ``PERIOD_S`` periods: tanks start
at their measured level (the reading at the day's start, at most an hour old, or the
first one within 15 minutes after; plus the sensor's offset), each zone's measured hourly
inflow over the model's own demand in that hour scales its junctions, and each pump with
status, speed or flow readings is driven period by period by them (on when it ran for at
least half the period; a speed sensor gives the speed) -- the KPI task's rules and the
deviation judgement's thresholds.  Pumps without readings keep the network's controls.
Then, simulated minus measured: tank levels at every reading (RMSE, bias, largest error,
m), pump flows per period where a flow sensor is bound (m3/s and % of the mean measured
flow while running).  ``series``: sensor -> (UTC epoch ns, SI values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np

from contracts.simulations import Calibration, PumpFit, TankFit
from processors.simulate.demand import multipliers, zone_demand_m3s
from processors.simulate.errors import NetworkInputError, SimulationError
from processors.simulate.network import Network
from processors.simulate.run import SimulationResult, Twin
from processors.simulate.scenario import ALL_JUNCTIONS

PERIOD_S = 300
DAY_S = 86400
NS = 1_000_000_000
HOLD_S = 3600  # a reading speaks for at most an hour after it
START_WITHIN_S = 900  # no level at the day's start: the first reading this soon after
DRIVE_ROLES = ("pump_status", "pump_speed", "pump_flow")  # which sensor speaks, in order
ON_STATUS, ON_FLOW_M3S, ON_SPEED = 0.5, 0.001, 0.05
MAX_DAYS = 14

Series = Mapping[str, tuple[Sequence[int], Sequence[float]]]


def windows(end: datetime, days: int) -> list[datetime]:
    """Starts (UTC) of the ``days`` whole days before ``end``, oldest first."""
    return [end - timedelta(seconds=DAY_S * k) for k in range(days, 0, -1)]


def calibrate(network: Network, bindings: Iterable, series: Series, end: datetime,
              days: int, out_of_service: Sequence[str] = ()) -> Calibration:
    """The twin against the readings over the ``days`` days before ``end``."""
    if not 1 <= days <= MAX_DAYS:
        raise NetworkInputError(f"calibration days: 1..{MAX_DAYS}, got {days}")
    bindings = list(bindings)
    data = {s: _arrays(t, v) for s, (t, v) in series.items()}
    starts = windows(end, days)
    tank_binding = _first(bindings, "tank_level", network.tank_ids)
    flow_binding = _first(bindings, "pump_flow", network.pump_ids)
    level_err: dict[str, list[np.ndarray]] = {t: [] for t in tank_binding}
    flow_err: dict[str, list[np.ndarray]] = {p: [] for p in flow_binding}
    flow_seen: dict[str, list[np.ndarray]] = {p: [] for p in flow_binding}
    notes: list[str] = []
    for start in starts:
        lo = _ns(start)
        hi = lo + DAY_S * NS
        try:
            sim, said = _day(network, bindings, data, lo, hi, out_of_service)
        except (SimulationError, NetworkInputError) as e:
            notes.append(f"{start:%Y-%m-%d %H:%MZ}: not simulated ({e})")
            for errs in (*level_err.values(), *flow_err.values(), *flow_seen.values()):
                errs.append(np.array([]))
            continue
        notes.append(f"{start:%Y-%m-%d %H:%MZ}: " + "; ".join(said))
        for tank, b in tank_binding.items():
            t, v = data.get(b.sensor, _EMPTY)
            inside = (t >= lo) & (t < hi)
            at_s = (t[inside] - lo) / NS
            k = sim.tank_ids.index(tank)
            simulated = np.interp(at_s, sim.times_s - sim.start_s, sim.tank_level_m[:, k])
            level_err[tank].append(simulated - (v[inside] + b.offset_m))
        mean_flow = sim.period_mean_flow_m3s()
        for pump, b in flow_binding.items():
            t, v = data.get(b.sensor, _EMPTY)
            measured = _period_means(t, v, lo, PERIOD_S, DAY_S // PERIOD_S, hold=False)
            known = np.isfinite(measured)
            k = sim.pump_ids.index(pump)
            flow_err[pump].append(mean_flow[known, k] - measured[known])
            flow_seen[pump].append(measured[known])
    tanks = []
    for tank in network.tank_ids:
        b = tank_binding.get(tank)
        if b is None:
            tanks.append(TankFit(tank=tank, reason=f"no tank_level sensor bound to tank "
                                                   f"{tank}: nothing to compare"))
            continue
        per_day = level_err[tank]
        err = np.concatenate(per_day) if per_day else np.array([])
        if err.size == 0:
            tanks.append(TankFit(tank=tank, sensor=b.sensor, reason=f"no readings of "
                                 f"{b.sensor} in the days compared"))
            continue
        tanks.append(TankFit(
            tank=tank, sensor=b.sensor, points=int(err.size), rmse_m=_rms(err),
            bias_m=round(float(err.mean()), 6), max_abs_m=round(float(np.abs(err).max()), 6),
            rmse_per_day_m=[_rms(e) if e.size else None for e in per_day]))
    pumps = []
    for pump in network.pump_ids:
        b = flow_binding.get(pump)
        if b is None:
            pumps.append(PumpFit(pump=pump, reason=f"no pump_flow sensor bound to pump "
                                                   f"{pump}: nothing to compare"))
            continue
        err = np.concatenate(flow_err[pump]) if flow_err[pump] else np.array([])
        seen = np.concatenate(flow_seen[pump]) if flow_seen[pump] else np.array([])
        if err.size == 0:
            pumps.append(PumpFit(pump=pump, sensor=b.sensor, reason=f"no readings of "
                                 f"{b.sensor} in the days compared"))
            continue
        running = seen[seen > ON_FLOW_M3S]
        pct = (100.0 * _rms(err) / float(running.mean())) if running.size else None
        pumps.append(PumpFit(pump=pump, sensor=b.sensor, points=int(err.size),
                             rmse_m3s=_rms(err), bias_m3s=round(float(err.mean()), 9),
                             rmse_pct=None if pct is None else round(pct, 3)))
    return Calibration(days=days, windows=starts, period_s=PERIOD_S, tanks=tanks,
                       pumps=pumps, notes=notes)


# ---------------------------------------------------------------- one day


def _day(network: Network, bindings: list, data, lo: int, hi: int, out_of_service
         ) -> tuple[SimulationResult, list[str]]:
    periods = (hi - lo) // NS // PERIOD_S
    said = []
    drives = {}
    speaking: dict[str, tuple[str, str]] = {}
    for b in sorted((b for b in bindings if b.role in DRIVE_ROLES),
                    key=lambda b: (DRIVE_ROLES.index(b.role), b.sensor)):
        if b.element in network.pump_ids and b.element not in out_of_service:
            t, _ = data.get(b.sensor, _EMPTY)
            if np.any((t >= lo - HOLD_S * NS) & (t < hi)):
                speaking.setdefault(b.element, (b.sensor, b.role))
    for pump, (sensor, role) in speaking.items():
        t, v = data[sensor]
        on = _running(role, v)
        share = _period_means(t, on.astype(float), lo, PERIOD_S, periods, hold=True)
        speed = (_fill(share) >= 0.5).astype(float)
        if role == "pump_speed":
            level = _period_means(t[on], v[on], lo, PERIOD_S, periods, hold=True)
            speed = speed * np.nan_to_num(_fill(level), nan=1.0)
        drives[pump] = speed
        said.append(f"{pump} driven by {sensor} ({role}), on "
                    f"{speed.astype(bool).sum() * PERIOD_S / 3600:.1f} h")
    for pump in network.pump_ids:
        if pump not in drives and pump not in out_of_service:
            said.append(f"{pump}: no readings, the network's own controls")
    zones: dict[str, list[str]] = {}
    zone_sensors: dict[str, list[str]] = {}
    for b in bindings:
        if b.role == "zone_inflow":
            zones.setdefault(b.element, list(b.junctions) if b.junctions else [ALL_JUNCTIONS])
            zone_sensors.setdefault(b.element, []).append(b.sensor)
    mult = {}
    hours = periods * PERIOD_S // 3600
    per_hour = 3600 // PERIOD_S
    for zone, junctions in zones.items():
        total = np.zeros(hours)
        for s in zone_sensors[zone]:
            t, v = data.get(s, _EMPTY)
            total = total + _period_means(t, v, lo, 3600, hours, hold=False)
        known = np.isfinite(total)
        if not known.any():
            said.append(f"zone {zone}: no inflow readings, the model's own demand")
            continue
        key = ALL_JUNCTIONS if junctions == [ALL_JUNCTIONS] else zone
        model = zone_demand_m3s(network, ALL_JUNCTIONS if key == ALL_JUNCTIONS else junctions,
                                start_s=0, period_s=PERIOD_S, periods=periods)
        hourly = np.array(multipliers(np.where(known, total, 0.0),
                                      model.reshape(hours, per_hour).mean(axis=1)))
        filled = np.interp(np.arange(hours), np.flatnonzero(known), hourly[known])
        mult[key] = np.repeat(filled, per_hour)
        said.append(f"zone {zone}: measured inflow ({int((~known).sum())} h interpolated)")
    levels = []
    for tank in network.tanks:
        b = _first(bindings, "tank_level", (tank.id,)).get(tank.id)
        value = None
        if b is not None and b.sensor in data:
            t, v = data[b.sensor]
            before = np.flatnonzero((t <= lo) & (t > lo - HOLD_S * NS))
            after = np.flatnonzero((t >= lo) & (t < lo + START_WITHIN_S * NS))
            if before.size:
                value = float(v[before[-1]]) + b.offset_m
            elif after.size:
                value = float(v[after[0]]) + b.offset_m
        if value is None:
            said.append(f"{tank.id} starts at the model's {tank.init_level_m:.2f} m (no "
                        f"reading at the day's start)")
            value = tank.init_level_m
        else:
            said.append(f"{tank.id} starts at {value:.2f} m measured")
        levels.append(min(max(value, tank.min_level_m), tank.max_level_m))
    scheduled = tuple(p for p in network.pump_ids if p in drives)
    named = {z: j for z, j in zones.items() if j != [ALL_JUNCTIONS]}
    with Twin(network, scheduled=scheduled, out_of_service=tuple(out_of_service),
              zones=named) as twin:
        twin.lean = True
        matrix = np.column_stack([drives[p] for p in scheduled]) if scheduled else None
        sim = twin.run(matrix, horizon_s=periods * PERIOD_S, period_s=PERIOD_S,
                       initial_levels_m=levels, demand_multipliers=mult)
    return sim, said


# ---------------------------------------------------------------- helpers

_EMPTY = (np.array([], dtype=np.int64), np.array([], dtype=float))


def _arrays(t, v) -> tuple[np.ndarray, np.ndarray]:
    t, v = np.asarray(t, dtype=np.int64), np.asarray(v, dtype=float)
    keep = np.isfinite(v)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], v[keep][order]


def _ns(t: datetime) -> int:
    return int(round(t.timestamp())) * NS


def _first(bindings, role: str, elements) -> dict:
    """element -> its first binding of ``role`` (by sensor id) among ``elements``."""
    out: dict = {}
    for b in sorted((b for b in bindings if b.role == role), key=lambda b: b.sensor):
        if b.element in elements:
            out.setdefault(b.element, b)
    return out


def _running(role: str, values: np.ndarray) -> np.ndarray:
    if role == "pump_status":
        return values >= ON_STATUS
    if role == "pump_flow":
        return values > ON_FLOW_M3S
    return values > ON_SPEED


def _period_means(t: np.ndarray, v: np.ndarray, lo: int, period_s: int, periods: int, *,
                  hold: bool) -> np.ndarray:
    """Mean of the readings stamped in each period from ``lo``; with ``hold``, a period
    without readings takes the last reading before it (at most ``HOLD_S`` old); NaN
    where nothing speaks for it."""
    edges = lo + np.arange(periods + 1, dtype=np.int64) * period_s * NS
    idx = np.searchsorted(edges, t, side="right") - 1
    inside = (idx >= 0) & (idx < periods)
    sums = np.bincount(idx[inside], weights=v[inside], minlength=periods)
    counts = np.bincount(idx[inside], minlength=periods)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    if hold and t.size:
        for k in np.flatnonzero(counts == 0):
            j = int(np.searchsorted(t, edges[k], side="left")) - 1
            if j >= 0 and t[j] > edges[k] - HOLD_S * NS:
                out[k] = v[j]
    return out


def _fill(values: np.ndarray) -> np.ndarray:
    """Periods without a value take the previous one (leading ones: the first known);
    all unknown: zeros."""
    known = np.isfinite(values)
    if not known.any():
        return np.zeros_like(values)
    idx = np.where(known, np.arange(values.size), -1)
    idx = np.maximum.accumulate(idx)
    idx = np.where(idx < 0, int(np.flatnonzero(known)[0]), idx)
    return values[idx]


def _rms(err: np.ndarray) -> float:
    return round(float(math.sqrt(float(np.mean(np.square(err))))), 6)
