"""A short reason per pump and period that an operator can read.

Derived from the verified run and the surrogate: the period's price rank, the tank the
pump fills (the tank whose volume the surrogate shows rising most when it runs), that
tank's level against its bounds, the minimum run and rest times, the last periods'
refill to the final target, and the released schedule under the stability penalty.
"""

from __future__ import annotations

import math

import numpy as np

from processors.optimise.setup import Setup
from processors.optimise.surrogate import Surrogate
from processors.simulate.cost import LinearPowerModel, step_prices_per_kwh
from processors.simulate.feasibility import runs
from processors.simulate.run import SimulationResult


def explain(setup: Setup, speeds: np.ndarray, sim: SimulationResult,
            sur: Surrogate | None) -> tuple[tuple[str, ...], ...]:
    T, P = setup.periods, len(setup.pumps)
    price = period_prices(setup, sim)
    lo_q, hi_q = np.quantile(price, [1 / 3, 2 / 3]) if T > 2 else (price.min(), price.max())
    levels = sim.levels_at_period_starts()
    span = setup.upper_m - setup.lower_m
    fills = _filled_tank(setup, sur)
    out = [[""] * P for _ in range(T)]
    for k, pid in enumerate(setup.pumps):
        rule = setup.rules[k]
        on = speeds[:, k] > 0
        min_on = math.ceil(rule.min_on_s / setup.period_s - 1e-9)
        min_off = math.ceil(rule.min_off_s / setup.period_s - 1e-9)
        for value, a, length in runs(on):
            for t in range(a, a + length):
                p = f"{price[t]:.4g}"
                i = fills[k][t] if fills is not None else None
                tank = setup.network.tank_ids[i] if i is not None else None
                if value:
                    speed = "" if speeds[t, k] == 1.0 else f" at speed {speeds[t, k]:.2f}"
                    end_level = levels[t + 1, i] if i is not None else None
                    if t - a < min_on and t > a and price[t] > lo_q:
                        why = f"minimum run time (started in period {a})"
                    elif i is not None and end_level - setup.lower_m[i] < 0.15 * span[i]:
                        why = (f"tank {tank} near its lower bound ({end_level:.2f} m, "
                               f"min {setup.lower_m[i]:.2f} m)")
                    elif price[t] <= lo_q:
                        why = f"cheap period (price {p})"
                    elif i is not None and t >= T - max(2, T // 8):
                        why = f"refills tank {tank} to its final target"
                    elif tank is not None:
                        why = f"keeps tank {tank} supplied (price {p})"
                    else:
                        why = f"needed for the tank levels (price {p})"
                    out[t][k] = "on" + speed + ": " + why
                else:
                    inner = 0 < a and a + length < T
                    if inner and t - a < min_off and price[t] <= lo_q:
                        why = "minimum rest time"
                    elif price[t] >= hi_q:
                        why = f"avoids a peak-price period (price {p})"
                    elif tank is not None and levels[t + 1, i] > setup.upper_m[i] - 0.1 * span[i]:
                        why = f"tank {tank} near its upper bound"
                    else:
                        why = "tanks hold enough water"
                    out[t][k] = "off: " + why
        if setup.released is not None and setup.problem.stability_penalty > 0:
            for t in range(min(setup.problem.stability_periods, T)):
                if (setup.released[t, k] > 0) == on[t]:
                    out[t][k] += " (kept as released: churn penalty)"
    return tuple(tuple(row) for row in out)


def period_prices(setup: Setup, sim: SimulationResult) -> np.ndarray:
    """(periods,) the price per kWh (or per MWh for the linear model) in each period."""
    tariff = setup.problem.tariff
    if isinstance(tariff, LinearPowerModel):
        idx = (np.arange(setup.periods) * setup.period_s) // tariff.period_s
        return np.asarray(tariff.prices_per_mwh, dtype=float)[idx]
    step = step_prices_per_kwh(tariff, setup.network, sim).mean(axis=1)
    weight = np.maximum(sim.step_s, 0)[:, None]
    total = sim.period_sum(step[:, None])[:, 0]
    return total / np.maximum(sim.period_sum(np.ones_like(weight))[:, 0], 1e-9)


def _filled_tank(setup: Setup, sur: Surrogate | None):
    """Per pump and period the tank whose volume rises most when the pump runs."""
    if sur is None or not len(setup.tanks):
        return None
    out = [[None] * setup.periods for _ in setup.pumps]
    for g, (cl, opts) in enumerate(zip(sur.clusters, sur.options)):
        for kk, k in enumerate(cl):
            if k >= len(setup.pumps):
                continue
            on = opts[:, kk] > 0
            for t in range(setup.periods):
                gain = sur.dv_opt[g][t][on].mean(axis=0) - sur.dv_opt[g][t][~on].mean(axis=0)
                out[k][t] = int(np.argmax(gain)) if gain.max() > 0 else None
    return out
