"""The optimiser's input (``Problem``) and output (``Result``).

A task handler builds a ``Problem`` from the tenant's configuration (network, tariff,
operating rules), the demand forecast (median and an upper quantile as per-period
multipliers per zone), the latest tank levels and the previously released schedule.
Units: times in s, levels in m, speeds relative to the pump curve (0 = off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from processors.simulate.cost import Tariff
from processors.simulate.feasibility import FeasibilityReport
from processors.simulate.network import Network
from processors.simulate.run import SimulationResult


@dataclass(frozen=True)
class PumpRules:
    """Operating rules of one scheduled pump.

    ``speeds``: relative speeds allowed when running ((1.0,) for a fixed-speed pump);
    ``max_starts``: starts over the horizon (or on/off changes with
    ``count_transitions``); ``forbidden_periods``: periods in which it must be off.
    """

    speeds: tuple[float, ...] = (1.0,)
    min_on_s: int = 0
    min_off_s: int = 0
    max_starts: int | None = None
    count_transitions: bool = False
    forbidden_periods: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Effort:
    """Deterministic work limits: the same inputs and effort give the same schedule.

    ``rounds``: MILP solves in the verify loop; ``mip_nodes``: branch-and-bound nodes per
    solve; ``polish_evaluations``: EPANET runs in the final local search; ``seed``:
    HiGHS' random seed.  The wall-clock limit given to ``optimise`` only guards against
    runaway solves; when it cuts in, ``SolverStats.time_limited`` says so.
    """

    rounds: int = 5
    mip_nodes: int = 40
    mip_rel_gap: float = 2e-3
    repair_evaluations: int = 200
    round_polish_evaluations: int = 250
    polish_evaluations: int = 1500
    seed: int = 0

    @classmethod
    def for_time_limit(cls, time_limit_s: float) -> "Effort":
        """The default work budget for a wall-clock budget (a pure function of it)."""
        if time_limit_s >= 240:
            return cls()
        if time_limit_s >= 60:
            return cls(rounds=3, mip_nodes=20, repair_evaluations=40,
                       round_polish_evaluations=100, polish_evaluations=400)
        if time_limit_s >= 15:
            return cls(rounds=2, mip_nodes=10, repair_evaluations=30,
                       round_polish_evaluations=40, polish_evaluations=120)
        return cls(rounds=1, mip_nodes=5, repair_evaluations=20,
                   round_polish_evaluations=0, polish_evaluations=40)


@dataclass(frozen=True)
class Problem:
    """A pump-scheduling problem on one network.

    ``pumps``: the pumps to schedule (default: every pump not out of service); the others
    keep the network's own controls.  ``tank_bounds_m`` override the .inp's levels;
    ``final_levels_m`` default to the initial levels.  ``demand_multipliers`` (median)
    and ``demand_multipliers_upper`` (an upper quantile, protects the lower tank bounds)
    map a zone ("*" = all junctions) to one multiplier per period.  ``released`` is the
    schedule already sent to SCADA for these periods; changing it in the first
    ``stability_periods`` periods costs ``stability_penalty`` per pump-period.
    """

    network: Network
    tariff: Tariff
    horizon_s: int | None = None
    period_s: int | None = None
    pumps: tuple[str, ...] | None = None
    pump_rules: Mapping[str, PumpRules] = field(default_factory=dict)
    exclusive_pumps: tuple[tuple[str, str], ...] = ()
    initial_levels_m: Mapping[str, float] = field(default_factory=dict)
    tank_bounds_m: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    final_levels_m: Mapping[str, float] = field(default_factory=dict)
    demand_multipliers: Mapping[str, Sequence[float]] = field(default_factory=dict)
    demand_multipliers_upper: Mapping[str, Sequence[float]] = field(default_factory=dict)
    zones: Mapping[str, Sequence[str]] = field(default_factory=dict)
    out_of_service: frozenset[str] = frozenset()
    released: Mapping[str, Sequence[float]] | None = None
    stability_penalty: float = 0.0
    stability_periods: int = 0
    effort: Effort | None = None


@dataclass(frozen=True)
class SolverStats:
    """How the answer was found.  ``objective``/``bound``/``gap`` of the last MILP solve
    (surrogate cost units); ``rounds``: MILP solves; ``evaluations``: EPANET runs."""

    objective: float | None
    bound: float | None
    gap: float | None
    mip_time_s: float
    wall_time_s: float
    rounds: int
    mip_nodes: int
    evaluations: int
    polish_improvements: int
    time_limited: bool
    effort: Effort
    history: tuple[str, ...] = ()


@dataclass
class Result:
    """The proposed schedule, verified in EPANET, with its baseline and reasons.

    ``speeds[t, k]``: relative speed of ``pump_ids[k]`` in period ``t`` (0 = off).
    ``status``: "verified" (a schedule EPANET found feasible), or "fallback" (none was:
    ``speeds`` then holds the network's own controls as simulated and ``reason`` says
    why).  ``reasons[t][k]``: a short text an operator can read.
    """

    status: str
    reason: str
    pump_ids: tuple[str, ...]
    period_s: int
    horizon_s: int
    speeds: np.ndarray
    simulation: SimulationResult
    feasibility: FeasibilityReport
    cost: float
    energy_kwh: float
    baseline: SimulationResult
    baseline_cost: float
    baseline_feasibility: FeasibilityReport
    reasons: tuple[tuple[str, ...], ...]
    stats: SolverStats

    @property
    def feasible(self) -> bool:
        return self.status == "verified"

    @property
    def saving(self) -> float:
        return self.baseline_cost - self.cost

    @property
    def saving_pct(self) -> float:
        return 100.0 * self.saving / self.baseline_cost if self.baseline_cost else 0.0

    def schedule(self) -> dict[str, list[float]]:
        """Pump id -> speed per period."""
        return {p: [float(v) for v in self.speeds[:, k]] for k, p in enumerate(self.pump_ids)}
