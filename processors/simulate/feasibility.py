"""The strict feasibility check of a simulated schedule, and the operator warnings.

Feasible means, in the extended-period simulation: every tank within its bounds at every
hydraulic step, every tank's final level at least its target (default: its initial
level), and the schedule within each pump's switching and minimum run/rest limits.

Counting conventions (chosen to be the strictest common reading, so a schedule passing
here passes the looser ones): a *start* is an off->on change, and a pump on in the first
period counts as started (its state before the horizon is unknown); ``max_starts`` caps
starts, or every on/off change when ``count_transitions`` is set; every run of on-periods
lasts at least ``min_on_s`` (also the first and the last run); every rest between two
runs lasts at least ``min_off_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from processors.simulate import _epanet as en
from processors.simulate.network import Network
from processors.simulate.run import SimulationResult

LEVEL_TOLERANCE_M = 1e-6


@dataclass(frozen=True)
class PumpLimits:
    """Switching limits of one pump; times in s."""

    max_starts: int | None = None
    min_on_s: int = 0
    min_off_s: int = 0
    count_transitions: bool = False


@dataclass(frozen=True)
class FeasibilityRules:
    """Bounds in m override the .inp's [MinLevel, MaxLevel]; ``final_levels_m`` are
    targets for the last step (default: the initial level)."""

    tank_bounds_m: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    final_levels_m: Mapping[str, float] = field(default_factory=dict)
    require_final: bool = True
    pump_limits: Mapping[str, PumpLimits] = field(default_factory=dict)
    tolerance_m: float = LEVEL_TOLERANCE_M


@dataclass(frozen=True)
class TankCheck:
    tank_id: str
    lower_m: float
    upper_m: float
    initial_m: float
    final_m: float
    target_m: float
    lowest_m: float
    highest_m: float
    ok: bool


@dataclass(frozen=True)
class PumpCheck:
    pump_id: str
    starts: int
    transitions: int
    shortest_run_s: int | None
    shortest_rest_s: int | None
    ok: bool


@dataclass(frozen=True)
class FeasibilityReport:
    feasible: bool
    tanks: tuple[TankCheck, ...]
    pumps: tuple[PumpCheck, ...]
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "feasible"


def runs(on: np.ndarray) -> list[tuple[bool, int, int]]:
    """Maximal runs of equal values in a 0/1 series: (value, first index, length)."""
    out, start = [], 0
    for i in range(1, len(on) + 1):
        if i == len(on) or bool(on[i]) != bool(on[start]):
            out.append((bool(on[start]), start, i - start))
            start = i
    return out


def pump_check(pump_id: str, on: np.ndarray, period_s: int, limits: PumpLimits) -> tuple[PumpCheck, list[str]]:
    """Check one pump's on/off series (one value per period) against its limits."""
    on = np.asarray(on) > 0
    starts = int(on[0]) + int(np.sum(on[1:] & ~on[:-1]))
    transitions = int(np.sum(on[1:] != on[:-1]))
    rs = runs(on)
    on_runs = [n for v, _, n in rs if v]
    rests = [n for k, (v, _, n) in enumerate(rs) if not v and 0 < k < len(rs) - 1]
    reasons = []
    counted = transitions if limits.count_transitions else starts
    if limits.max_starts is not None and counted > limits.max_starts:
        what = "switches" if limits.count_transitions else "starts"
        reasons.append(f"pump {pump_id}: {counted} {what} > {limits.max_starts}")
    need_on = math.ceil(limits.min_on_s / period_s - 1e-9)
    if on_runs and min(on_runs) < need_on:
        reasons.append(f"pump {pump_id}: a run of {min(on_runs) * period_s} s < minimum "
                       f"{limits.min_on_s} s")
    need_off = math.ceil(limits.min_off_s / period_s - 1e-9)
    if rests and min(rests) < need_off:
        reasons.append(f"pump {pump_id}: a rest of {min(rests) * period_s} s < minimum "
                       f"{limits.min_off_s} s")
    check = PumpCheck(pump_id, starts, transitions,
                      min(on_runs) * period_s if on_runs else None,
                      min(rests) * period_s if rests else None, not reasons)
    return check, reasons


def check_feasibility(network: Network, result: SimulationResult, rules: FeasibilityRules,
                      schedule: Mapping[str, np.ndarray] | None = None,
                      initial_levels_m: Mapping[str, float] | None = None) -> FeasibilityReport:
    """Judge ``result`` (and the per-period ``schedule`` of speeds it ran) by ``rules``."""
    reasons: list[str] = []
    tanks = []
    tol = rules.tolerance_m
    for k, tank in enumerate(network.tanks):
        lo, hi = rules.tank_bounds_m.get(tank.id, (tank.min_level_m, tank.max_level_m))
        lv = result.tank_level_m[:, k]
        init = (initial_levels_m or {}).get(tank.id, float(lv[0]))
        target = rules.final_levels_m.get(tank.id, init)
        ok = True
        if lv.min() < lo - tol:
            i = int(lv.argmin())
            reasons.append(f"tank {tank.id} at {lv.min():.3f} m below its minimum {lo:.3f} m "
                           f"by {_depth(lo - lv.min())} at t={result.times_s[i] / 3600:.2f} h")
            ok = False
        if lv.max() > hi + tol:
            i = int(lv.argmax())
            reasons.append(f"tank {tank.id} at {lv.max():.3f} m above its maximum {hi:.3f} m "
                           f"by {_depth(lv.max() - hi)} at t={result.times_s[i] / 3600:.2f} h")
            ok = False
        if rules.require_final and lv[-1] < target - tol:
            reasons.append(f"tank {tank.id} ends at {lv[-1]:.3f} m, {target - lv[-1]:.3f} m "
                           f"below its target {target:.3f} m")
            ok = False
        tanks.append(TankCheck(tank.id, lo, hi, init, float(lv[-1]), target, float(lv.min()),
                               float(lv.max()), ok))
    pumps = []
    for pid, series in (schedule or {}).items():
        limits = rules.pump_limits.get(pid)
        if limits is None:
            continue
        check, why = pump_check(pid, np.asarray(series), result.period_s, limits)
        pumps.append(check)
        reasons.extend(why)
    return FeasibilityReport(not reasons, tuple(tanks), tuple(pumps), tuple(reasons),
                             tuple(operator_warnings(network, result, schedule)))


def operator_warnings(network: Network, result: SimulationResult,
                      schedule: Mapping[str, np.ndarray] | None = None) -> list[str]:
    """Negative pressure, tanks empty or full, pumps outside their curve, EPANET warnings."""
    out = []
    for group, series in result.min_pressure_m.items():
        if series.size and np.nanmin(series) < 0:
            i = int(np.nanargmin(series))
            out.append(f"negative pressure {series[i]:.2f} m in {group!r} at "
                       f"t={result.times_s[i] / 3600:.2f} h")
    for k, tank in enumerate(network.tanks):
        lv = result.tank_level_m[:, k]
        if np.any(lv <= tank.min_level_m + 1e-4):
            out.append(f"tank {tank.id} empty (at its minimum level) for part of the horizon")
        if np.any(lv >= tank.max_level_m - 1e-4):
            out.append(f"tank {tank.id} full (at its maximum level) for part of the horizon")
    for k, pid in enumerate(result.pump_ids):
        st = result.pump_state[:-1, k]
        if np.any(st == en.PUMP_XHEAD) and np.any(result.pump_speed[:-1, k][st == en.PUMP_XHEAD] > 0):
            out.append(f"pump {pid} cannot deliver the head asked of it (outside its curve)")
        if np.any(st == en.PUMP_XFLOW):
            out.append(f"pump {pid} runs beyond the end of its curve (flow too high)")
    out.extend(f"EPANET: {w}" for w in result.warnings)
    return out


def _depth(m: float) -> str:
    """A distance beyond a bound as an operator reads it: millimetres below 10 cm (a
    breach of 0.4 mm printed in metres reads "3.900 m above its maximum 3.900 m")."""
    return f"{m * 1000:.1f} mm" if m < 0.1 else f"{m:.2f} m"
