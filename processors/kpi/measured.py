"""KPIs straight from readings (pure): pumped volume, energy from measured power, minutes a
tank spent outside its bounds, when pumps ran, forecast skill against the seasonal naive.

Readings are held (``series.Held``): each until the next, at most an hour.  Units: flows
m3/s, volumes m3, power W, energy kWh, levels m, durations s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from processors.deviation.compare import ON_FLOW_M3S, ON_SPEED
from processors.kpi.series import NS, Held, hour_edges

J_PER_KWH = 3.6e6
ON_STATUS = 0.5  # the thresholds are the deviation judgement's: one meaning of "running"


def running(role: str, values: np.ndarray) -> np.ndarray:
    """Whether each reading shows the pump running (status, flow or relative speed)."""
    v = np.asarray(values, dtype=float)
    if role == "pump_status":
        return v >= ON_STATUS
    if role == "pump_flow":
        return v > ON_FLOW_M3S
    if role == "pump_speed":
        return v > ON_SPEED
    raise ValueError(f"role {role!r} says nothing about a pump running")


@dataclass(frozen=True)
class Integrated:
    """∫ value dt over a day (value x s), and how much of the day readings covered."""

    total: float
    covered_s: float
    day_s: float

    @property
    def coverage(self) -> float:
        return self.covered_s / self.day_s if self.day_s else 0.0

    def gap_words(self) -> str:
        missing = self.day_s - self.covered_s
        if missing < 1:
            return "readings cover the whole day"
        return f"{missing / 60:.0f} min of the day without readings (counted as nothing)"


def integrate(held: Held, lo_ns: int, hi_ns: int) -> Integrated:
    return Integrated(held.integral(lo_ns, hi_ns), held.covered_s(lo_ns, hi_ns),
                      (hi_ns - lo_ns) / NS)


def pumped_m3(flow: Held, lo_ns: int, hi_ns: int) -> Integrated:
    """Volume a pump delivered over [lo, hi): ∫ max(flow, 0) dt, m3."""
    positive = Held(flow.start_ns, flow.end_ns, np.maximum(flow.value, 0.0))
    return integrate(positive, lo_ns, hi_ns)


def energy_kwh(power_w: Held, lo_ns: int, hi_ns: int) -> Integrated:
    """Energy from measured power over [lo, hi) (``total`` in kWh)."""
    got = integrate(Held(power_w.start_ns, power_w.end_ns, np.maximum(power_w.value, 0.0)),
                    lo_ns, hi_ns)
    return Integrated(got.total / J_PER_KWH, got.covered_s, got.day_s)


def energy_by_period_kwh(power_w: Held, edges_ns: np.ndarray) -> np.ndarray:
    """Measured energy in each period between ``edges_ns`` (kWh; 0 where no readings)."""
    mean, covered = power_w.per_period(edges_ns)
    return np.nan_to_num(np.maximum(mean, 0.0) * covered) / J_PER_KWH


@dataclass(frozen=True)
class Violation:
    below_s: float
    above_s: float
    covered_s: float
    lowest_m: float | None
    highest_m: float | None

    @property
    def minutes(self) -> float:
        return (self.below_s + self.above_s) / 60.0


def violation(level_m: Held, lo_ns: int, hi_ns: int, lower_m: float, upper_m: float
              ) -> Violation:
    """Time the held level (already including the sensor's offset) spent below
    ``lower_m`` or above ``upper_m`` within [lo, hi)."""
    below = level_m.where(level_m.value < lower_m)
    above = level_m.where(level_m.value > upper_m)
    inside = (level_m.start_ns < hi_ns) & (level_m.end_ns > lo_ns)
    seen = level_m.value[inside]
    return Violation(below.integral(lo_ns, hi_ns), above.integral(lo_ns, hi_ns),
                     level_m.covered_s(lo_ns, hi_ns),
                     float(seen.min()) if seen.size else None,
                     float(seen.max()) if seen.size else None)


def on_fractions(on: Held, edges_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of each period the pump ran, share of it readings covered); the running
    share is of the covered time (NaN where nothing was covered)."""
    mean, covered = on.per_period(edges_ns)
    return mean, covered / (np.diff(edges_ns) / NS)


@dataclass(frozen=True)
class Skill:
    hours: int
    mae: float
    naive_mae: float

    @property
    def skill(self) -> float:
        """1 - MAE / MAE of the seasonal naive (1 perfect, 0 no better, < 0 worse)."""
        if not self.hours or not self.naive_mae > 0:
            return math.nan
        return 1.0 - self.mae / self.naive_mae


def skill(forecast: np.ndarray, measured: np.ndarray, naive: np.ndarray) -> Skill:
    """MAE of ``forecast`` and of the ``naive`` forecast against ``measured``, over the
    hours where all three are known (arrays aligned hour by hour)."""
    f, m, n = (np.asarray(a, dtype=float) for a in (forecast, measured, naive))
    ok = np.isfinite(f) & np.isfinite(m) & np.isfinite(n)
    if not ok.any():
        return Skill(0, math.nan, math.nan)
    return Skill(int(ok.sum()), float(np.abs(f[ok] - m[ok]).mean()),
                 float(np.abs(n[ok] - m[ok]).mean()))


def hourly_means(held: Held, lo_ns: int, hi_ns: int) -> np.ndarray:
    """Time-weighted mean of each hour of [lo, hi) (NaN where no reading speaks)."""
    mean, _ = held.per_period(hour_edges(lo_ns, hi_ns))
    return mean
