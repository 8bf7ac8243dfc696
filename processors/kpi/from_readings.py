"""The ``kpi.compute`` figures that need readings only (and the tenant's rules): minutes
outside tank bounds, pumped volume, forecast skill, schedule adherence.  Each returns
``Kpi`` objects; a figure that cannot be computed is NaN with the reason in ``detail``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from contracts.kpis import Kpi
from processors.deviation import adherence, check_periods, schedule_end
from processors.deviation.compare import GRACE_S
from processors.kpi.context import KpiDay, tank_bounds
from processors.kpi.measured import Integrated, pumped_m3, skill, violation
from processors.kpi.series import NS, Held

NAN = math.nan


def _first_per_element(bindings) -> dict[str, object]:
    out: dict[str, object] = {}
    for b in sorted(bindings, key=lambda b: b.sensor):
        out.setdefault(b.element, b)
    return out


def tank_violations(d: KpiDay, rules, network) -> list[Kpi]:
    """``tank_violation_minutes`` per bound tank: time the measured level plus the
    sensor's offset spent outside the tank's bounds (rules, else the model's)."""
    out = []
    for tank, b in sorted(_first_per_element(d.bound("tank_level")).items()):
        bounds = tank_bounds(tank, rules, network)
        if bounds is None:
            out.append(Kpi(name="tank_violation_minutes", subject=tank, value=NAN, unit="min",
                           detail=f"no bounds for tank {tank}: set rules tanks.{tank} "
                                  f"min_level_m/max_level_m, or configure the network"))
            continue
        lower, upper, source = bounds
        held = d.held.get(b.sensor)
        if held is None or not d.has_readings(b.sensor):
            out.append(Kpi(name="tank_violation_minutes", subject=tank, value=NAN, unit="min",
                           detail=f"no readings of {b.sensor} on {d.day}"))
            continue
        level = Held(held.start_ns, held.end_ns, held.value + b.offset_m)
        v = violation(level, d.lo, d.hi, lower, upper)
        seen = Integrated(0.0, v.covered_s, d.seconds)
        sides = []
        if v.below_s:
            sides.append(f"{v.below_s / 60:.0f} min below, lowest {v.lowest_m:.2f} m")
        if v.above_s:
            sides.append(f"{v.above_s / 60:.0f} min above, highest {v.highest_m:.2f} m")
        what = "; ".join(sides) if sides else (f"never outside (lowest {v.lowest_m:.2f} m, "
                                               f"highest {v.highest_m:.2f} m)")
        out.append(Kpi(
            name="tank_violation_minutes", subject=tank, value=v.minutes, unit="min",
            detail=f"level = {b.sensor} + {b.offset_m:.2f} m against [{lower:.2f}, "
                   f"{upper:.2f}] m from {source}, each reading held until the next: "
                   f"{what}; {seen.gap_words()}"))
    return out


def pumped_volumes(d: KpiDay) -> dict[str, tuple[str, Integrated]]:
    """pump -> (flow sensor, volume in m3 over the day) for pumps with flow readings."""
    out = {}
    for pump, b in _first_per_element(d.bound("pump_flow")).items():
        if d.has_readings(b.sensor):
            out[pump] = (b.sensor, pumped_m3(d.held[b.sensor], d.lo, d.hi))
    return out


def pumped_words(sensor: str, got: Integrated) -> str:
    return (f"∫ {sensor} (pump_flow) dt, each reading held until the next (at most 1 h): "
            f"{got.total:.1f} m3; {got.gap_words()}")


# ---------------------------------------------------------------- forecast skill


def _hour_starts(d: KpiDay) -> list[datetime]:
    return [d.start + timedelta(hours=k) for k in range(d.hours)]


def _week_earlier(d: KpiDay, t: datetime) -> datetime:
    """The same local wall-clock hour a week earlier (a DST change in between keeps the
    hour of the day, not the UTC instant)."""
    zone = ZoneInfo(d.tz)
    return (t.astimezone(zone) - timedelta(days=7)).astimezone(UTC)


def _zone_sum(helds: Sequence[Held | None], starts_ns: np.ndarray) -> np.ndarray:
    """Sum over the zone's sensors of each hour's mean (NaN if a sensor has none)."""
    total = np.zeros(starts_ns.size)
    for h in helds:
        if h is None:
            return np.full(starts_ns.size, np.nan)
        total += np.array([h.per_period([a, a + 3600 * NS])[0][0] for a in starts_ns])
    return total


def forecast_skill(d: KpiDay, forecasts: Mapping[str, dict]) -> list[Kpi]:
    """Per zone series: MAE of the p50 of the latest forecast issued at or before the
    day's start against the measured hourly mean inflow, the same MAE of the weekly
    seasonal naive (the measured value a week earlier), and skill = 1 - MAE/MAE_naive."""
    zones: dict[str, list[str]] = {}
    for b in d.bound("zone_inflow"):
        zones.setdefault(b.element, []).append(b.sensor)
    out = []
    for zone, sensors in sorted(zones.items()):
        series = f"zone:{zone}"
        fc = forecasts.get(series)
        if not fc:
            out.append(Kpi(name="forecast_skill", subject=series, value=NAN, unit="1",
                           detail=f"no forecast of {series} issued before the day started "
                                  f"({d.day} 00:00 {d.tz}): nothing to judge"))
            continue
        starts = np.array([int(t.timestamp()) * NS for t in _hour_starts(d)], dtype=np.int64)
        measured = _zone_sum([d.held.get(s) for s in sensors], starts)
        earlier = np.array([int(_week_earlier(d, t).timestamp()) * NS
                            for t in _hour_starts(d)], dtype=np.int64)
        naive = _zone_sum([d.week_before.get(s) for s in sensors], earlier)
        predicted = np.full(d.hours, np.nan)
        for valid_ns, p50 in zip(fc["valid_ns"], fc["p50"], strict=True):
            k, rest = divmod(int(valid_ns) - d.lo, 3600 * NS)
            if rest == 0 and 0 <= k < d.hours and p50 is not None:
                predicted[k] = float(p50)
        sk = skill(predicted, measured, naive)
        issued = fc["issued_at"]
        if not sk.hours:
            out.append(Kpi(name="forecast_skill", subject=series, value=NAN, unit="1",
                           detail=f"forecast issued {issued:%Y-%m-%d %H:%M}Z: no hour of "
                                  f"{d.day} has the forecast, the inflow readings "
                                  f"({'+'.join(sensors)}) and those of a week before"))
            continue
        basis = (f"forecast issued {issued:%Y-%m-%d %H:%M}Z ({fc.get('method') or '?'}), "
                 f"p50 against the measured hourly mean of {'+'.join(sensors)} over "
                 f"{sk.hours} of {d.hours} h")
        out += [
            Kpi(name="forecast_mae_m3s", subject=series, value=sk.mae, unit="m3/s",
                detail=f"{basis}: MAE {sk.mae * 1000:.2f} l/s"),
            Kpi(name="naive_mae_m3s", subject=series, value=sk.naive_mae, unit="m3/s",
                detail=f"weekly seasonal naive (the measured hour a week earlier) over the "
                       f"same hours: MAE {sk.naive_mae * 1000:.2f} l/s"),
            Kpi(name="forecast_skill", subject=series, value=sk.skill, unit="1",
                detail=f"1 - MAE/MAE_naive = 1 - {sk.mae * 1000:.2f}/"
                       f"{sk.naive_mae * 1000:.2f} l/s ({basis})"),
        ]
    return out


# ---------------------------------------------------------------- schedule adherence


def schedule_adherence(d: KpiDay, schedules: Sequence, raw: Mapping[str, tuple]) -> list[Kpi]:
    """Share of the day's judged pump-periods that ran as the released schedule in force
    said (``processors.deviation``), per pump and for the network."""
    relevant = [s for s in schedules
                if s.start < d.end and schedule_end(s) > d.start and s.occurred_at < d.end]
    if not relevant:
        return [Kpi(name="schedule_adherence", subject="network", value=NAN, unit="1",
                    detail=f"no schedule released for {d.day}: nothing to adhere to")]
    series = {}
    for sensor, (t, v) in raw.items():
        t = np.asarray(t, dtype=np.int64)
        inside = (t >= d.lo) & (t < d.hi)
        series[sensor] = (t[inside].tolist(), np.asarray(v, dtype=float)[inside].tolist())
    checks = [c for c in check_periods(schedules, d.bindings, series)
              if d.start <= c.period_start < d.end]
    versions = sorted({c.schedule.version for c in checks} or {s.version for s in relevant})
    said = f"schedule version{'s' if len(versions) > 1 else ''} " \
           f"{', '.join(str(v) for v in versions)}"
    out = []
    for a in adherence(checks):
        if not a.periods:
            detail = (f"{said} in force, but no reading of a pump's status, speed or flow "
                      f"was judged against it")
        else:
            detail = (f"{a.periods - a.deviated} of {a.periods} judged pump-periods ran as "
                      f"released ({said}; the first {GRACE_S / 60:g} min of a period not judged)")
        out.append(Kpi(name="schedule_adherence", subject=a.subject, value=a.ratio, unit="1",
                       detail=detail))
    return out
