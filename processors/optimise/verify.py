"""Verification of a candidate schedule in an EPANET extended-period simulation.

``Verifier.evaluate`` runs the schedule on the twin (every control on the scheduled
pumps removed), prices it, and judges it twice: by the strict rules (what is reported)
and by the same rules tightened by ``GUARD_M`` (what the optimiser accepts, so that no
schedule relies on EPANET clamping a tank at its bound).  With an upper-quantile demand
the schedule must also keep every tank above its lower bound under that demand.
Results are cached by schedule, so re-visiting a schedule costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.optimise.setup import GUARD_M, Setup
from processors.simulate.cost import cost_by_period
from processors.simulate.feasibility import FeasibilityReport, check_feasibility
from processors.simulate.run import SimulationResult, Twin


@dataclass
class Evaluation:
    speeds: np.ndarray
    sim: SimulationResult
    cost: float
    period_cost: np.ndarray  # (periods, network pumps)
    report: FeasibilityReport  # strict rules, as reported
    accepted: bool  # strict rules tightened by the guard (+ upper-quantile lower bounds)
    why: str
    low_by_m: np.ndarray  # (periods, tanks) how far below the guarded lower bound, >= 0
    high_by_m: np.ndarray  # (periods, tanks) how far above the guarded upper bound
    final_short_m: np.ndarray  # (tanks,) how far below the guarded target
    churn: float = 0.0  # stability penalty for departing from the released schedule
    bound_time_m: float = 0.0  # time spent at a bound, as m at 5 % of the tank's range per hour

    @property
    def score(self) -> float:
        """What the optimiser minimises: cost plus the stability penalty."""
        return self.cost + self.churn

    @property
    def violation(self) -> float:
        """How far from acceptable, m.  EPANET holds a tank that reaches a bound there,
        which hides how much water is missing; the time it spends there measures it."""
        return float(self.low_by_m.sum() + self.high_by_m.sum() + self.final_short_m.sum()
                     + self.bound_time_m)


class Verifier:
    def __init__(self, setup: Setup, twin: Twin) -> None:
        self.setup = setup
        self.twin = twin
        self.count = 0
        self._cache: dict[bytes, Evaluation] = {}
        self._strict = setup.feasibility_rules(0.0)
        self._guarded = setup.feasibility_rules(GUARD_M)

    def simulate(self, speeds: np.ndarray, multipliers=None, link_states=False) -> SimulationResult:
        s = self.setup
        self.count += 1
        return self.twin.run(speeds, horizon_s=s.horizon_s, period_s=s.period_s,
                             initial_levels_m=s.initial_m,
                             demand_multipliers=s.multipliers if multipliers is None else multipliers,
                             record_link_states=link_states)

    def evaluate(self, speeds: np.ndarray) -> Evaluation:
        key = np.round(speeds, 6).tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        s = self.setup
        sim = self.simulate(speeds, link_states=True)
        per = cost_by_period(s.problem.tariff, s.network, sim)
        sched = {p: speeds[:, k] for k, p in enumerate(s.pumps)}
        init = dict(zip(s.network.tank_ids, s.initial_m))
        report = check_feasibility(s.network, sim, self._strict, sched, init)
        guarded = check_feasibility(s.network, sim, self._guarded, sched, init)
        low, high = _bound_violations(s, sim, GUARD_M)
        short = np.maximum(0.0, s.target_m + GUARD_M / 10 - sim.tank_level_m[-1])
        why = [guarded.reason()] if not guarded.feasible else []
        if s.multipliers_upper:
            hi_sim = self.simulate(speeds, multipliers=s.multipliers_upper)
            low_up, _ = _bound_violations(s, hi_sim, GUARD_M)
            if low_up.max(initial=0) > 0:
                k = int(np.unravel_index(low_up.argmax(), low_up.shape)[1])
                why.append(f"tank {s.network.tank_ids[k]} falls {low_up.max():.3f} m below its "
                           f"lower bound under the upper-quantile demand")
            low = np.maximum(low, low_up)
        ev = Evaluation(speeds.copy(), sim, float(per.sum()), per, report,
                        not why and guarded.feasible, "; ".join(why), low, high, short,
                        churn_penalty(s, speeds), _bound_time(s, sim, GUARD_M))
        self._cache[key] = ev
        return ev


def churn_penalty(s: Setup, speeds: np.ndarray) -> float:
    """The stability penalty of ``speeds``: per pump and near period whose on/off status
    differs from the released schedule."""
    pen, near = s.problem.stability_penalty, min(s.problem.stability_periods, s.periods)
    if s.released is None or pen <= 0 or near <= 0:
        return 0.0
    changed = (speeds[:near] > 0) != (s.released[:near] > 0)
    return float(pen * changed.sum())


def _bound_time(s: Setup, sim: SimulationResult, guard: float) -> float:
    """Hours each tank spends at or beyond its guarded bounds, as m at 5 % of its range
    per hour, summed."""
    lv = sim.tank_level_m
    out = (lv <= s.lower_m + guard) | (lv >= s.upper_m - guard)
    hours = (out * sim.step_s[:, None]).sum(axis=0) / 3600.0
    return float((hours * 0.05 * (s.upper_m - s.lower_m)).sum())


def _bound_violations(s: Setup, sim: SimulationResult, guard: float):
    """(periods, tanks) shortfall below lower+guard and excess above upper-guard, over each
    period's steps and its end state."""
    n = s.periods
    idx = sim.period_index()
    low = np.zeros((n, len(s.tanks)))
    high = np.zeros((n, len(s.tanks)))
    lv = sim.tank_level_m
    for p in range(n):
        rows = (idx == p) | (idx == p + 1) & (sim.times_s - sim.start_s == (p + 1) * s.period_s)
        seg = lv[rows]
        low[p] = np.maximum(0.0, s.lower_m + guard - seg.min(axis=0))
        high[p] = np.maximum(0.0, seg.max(axis=0) - (s.upper_m - guard))
    return low, high
