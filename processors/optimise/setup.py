"""A ``Problem`` resolved against its network: arrays the surrogate, the MILP and the
verifier share (horizon, periods, scheduled pumps and their rules, tank bounds in m and
m3, targets, demand multipliers)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from processors.optimise.problem import Effort, Problem, PumpRules
from processors.simulate.errors import NetworkInputError
from processors.simulate.feasibility import FeasibilityRules, PumpLimits
from processors.simulate.network import Network, natural_period_s
from processors.simulate.scenario import ALL_JUNCTIONS

GUARD_M = 1e-3  # the optimiser keeps tanks this far inside their bounds (EPANET clamps at them)


@dataclass
class Setup:
    problem: Problem
    network: Network
    horizon_s: int
    period_s: int
    periods: int
    pumps: tuple[str, ...]
    rules: tuple[PumpRules, ...]
    lower_m: np.ndarray
    upper_m: np.ndarray
    initial_m: np.ndarray
    target_m: np.ndarray
    multipliers: dict[str, np.ndarray]
    multipliers_upper: dict[str, np.ndarray]
    released: np.ndarray | None
    effort: Effort

    @property
    def tanks(self):
        return self.network.tanks

    def volume(self, i: int, level_m):
        return self.network.tanks[i].volume_m3(level_m)

    def feasibility_rules(self, guard_m: float = 0.0) -> FeasibilityRules:
        """The strict check; ``guard_m`` > 0 tightens bounds and targets for acceptance:
        EPANET holds a tank that reaches a bound exactly at it (closing its links), so a
        schedule touching a bound relies on that and fails any check with a tolerance."""
        ids = self.network.tank_ids
        return FeasibilityRules(
            tank_bounds_m={t: (self.lower_m[i] + guard_m, self.upper_m[i] - guard_m)
                           for i, t in enumerate(ids)},
            final_levels_m={t: self.target_m[i] + guard_m / 10 for i, t in enumerate(ids)},
            pump_limits={p: PumpLimits(r.max_starts, r.min_on_s, r.min_off_s, r.count_transitions)
                         for p, r in zip(self.pumps, self.rules)},
        )


def resolve(problem: Problem, time_limit_s: float) -> Setup:
    net = problem.network
    horizon = int(problem.horizon_s or net.times.duration_s)
    period = int(problem.period_s or natural_period_s(net, horizon))
    if period <= 0 or horizon % period:
        raise NetworkInputError(f"period {period} s must divide the horizon {horizon} s")
    n = horizon // period
    for pid in problem.out_of_service:
        net.pump(pid)
    pumps = tuple(p for p in (problem.pumps or net.pump_ids) if p not in problem.out_of_service)
    for pid in pumps:
        net.pump(pid)
    if not pumps:
        raise NetworkInputError("no pump to schedule")
    rules = tuple(problem.pump_rules.get(p, PumpRules()) for p in pumps)
    for p, r in zip(pumps, rules):
        if not r.speeds or any(not 0 < s <= 1.5 for s in r.speeds):
            raise NetworkInputError(f"pump {p}: speeds must be in (0, 1.5], found {r.speeds}")
    for a, b in problem.exclusive_pumps:
        if a not in pumps or b not in pumps:
            raise NetworkInputError(f"exclusive pair ({a}, {b}) names a pump not scheduled")
    lower, upper, init, target = [], [], [], []
    for t in net.tanks:
        lo, hi = problem.tank_bounds_m.get(t.id, (t.min_level_m, t.max_level_m))
        lo, hi = max(lo, t.min_level_m), min(hi, t.max_level_m)
        h0 = problem.initial_levels_m.get(t.id, t.init_level_m)
        if not t.min_level_m <= h0 <= t.max_level_m:
            raise NetworkInputError(f"initial level {h0} m of tank {t.id} is outside "
                                    f"[{t.min_level_m}, {t.max_level_m}] m")
        lower.append(lo)
        upper.append(hi)
        init.append(h0)
        target.append(problem.final_levels_m.get(t.id, h0))
    def mult(m):
        out = {}
        for z, v in m.items():
            arr = np.asarray(v, dtype=float)
            if arr.shape != (n,):
                raise NetworkInputError(f"zone {z!r}: {arr.size} multipliers, expected {n}")
            if z != ALL_JUNCTIONS and z not in problem.zones:
                raise NetworkInputError(f"demand multipliers for unknown zone {z!r}")
            out[z] = arr
        return out
    released = None
    if problem.released is not None:
        released = np.zeros((n, len(pumps)))
        for k, p in enumerate(pumps):
            if p in problem.released:
                row = np.asarray(problem.released[p], dtype=float)[:n]
                released[: row.size, k] = row
    return Setup(problem, net, horizon, period, n, pumps, rules, np.array(lower),
                 np.array(upper), np.array(init), np.array(target),
                 mult(problem.demand_multipliers), mult(problem.demand_multipliers_upper),
                 released, problem.effort or Effort.for_time_limit(time_limit_s))


def periods_for(seconds: int, period_s: int) -> int:
    """Whole periods needed to cover ``seconds``."""
    return max(int(math.ceil(seconds / period_s - 1e-9)), 0)
