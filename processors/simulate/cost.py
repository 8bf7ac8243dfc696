"""Energy cost of a simulated run under four tariff rules.

- ``EpanetEnergyPrices``: the .inp's own [ENERGY] section, exactly as EPANET's energy
  report prices it: per hydraulic step, power at the step start x step length x (pump
  price, else global price) x (pump price pattern, else global pattern) at index
  (t + Pattern Start) // Pattern Timestep.
- ``TimeOfUse``: two rates by clock time (Start ClockTime + t): ``off`` per kWh before
  ``peak_start_h`` and from ``peak_end_h`` (default midnight), ``peak`` in between; a
  step that straddles a boundary is split exactly.
- ``PeriodPrices``: one price per kWh per schedule period.
- ``LinearPowerModel``: the Bonvin/Tasseff benchmark rule, cost = sum over periods and
  pumps of z * (fixed_kw + per_flow_kw * q) * price_per_mwh / 1000 * period_h, with q
  the pump flow (m3/s) EPANET solves at the period's start (the benchmark's per-period
  snapshot; a report step equal to the period shows the same) and z = 1 when it is
  positive.

``cost_by_period`` returns a (periods, pumps) array in the tariff's currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from processors.simulate.errors import NetworkInputError
from processors.simulate.network import Network
from processors.simulate.run import SimulationResult

RUNNING_FLOW_M3S = 1e-6  # a pump "carries flow" above this mean flow


@dataclass(frozen=True)
class EpanetEnergyPrices:
    """The network's own [ENERGY] prices and patterns (see module docstring)."""


@dataclass(frozen=True)
class TimeOfUse:
    off_per_kwh: float
    peak_per_kwh: float
    peak_start_h: float
    peak_end_h: float = 24.0

    def __post_init__(self) -> None:
        if not 0 <= self.peak_start_h <= self.peak_end_h <= 24:
            raise NetworkInputError(f"time-of-use hours must satisfy 0 <= start <= end <= 24, "
                                    f"found {self.peak_start_h}, {self.peak_end_h}")


@dataclass(frozen=True)
class PeriodPrices:
    prices_per_kwh: tuple[float, ...]
    period_s: int


@dataclass(frozen=True)
class LinearPowerModel:
    fixed_kw: Mapping[str, float]
    per_flow_kw_s_per_m3: Mapping[str, float]
    prices_per_mwh: tuple[float, ...]
    period_s: int


Tariff = Union[EpanetEnergyPrices, TimeOfUse, PeriodPrices, LinearPowerModel]


def cost_by_period(tariff: Tariff, network: Network, result: SimulationResult) -> np.ndarray:
    """(periods of ``result``, pumps) cost of each pump in each period."""
    if isinstance(tariff, LinearPowerModel):
        return _linear(tariff, result)
    price = step_prices_per_kwh(tariff, network, result)
    kwh = result.pump_power_kw * result.step_s[:, None] / 3600.0
    return result.period_sum(kwh * price / np.maximum(result.step_s[:, None], 1e-300))


def total_cost(tariff: Tariff, network: Network, result: SimulationResult) -> float:
    return float(cost_by_period(tariff, network, result).sum())


def step_prices_per_kwh(tariff: Tariff, network: Network, result: SimulationResult) -> np.ndarray:
    """(steps, pumps) price per kWh applying to each step (step-averaged for time of use)."""
    t, dt = result.times_s, result.step_s
    n_p = len(result.pump_ids)
    if isinstance(tariff, EpanetEnergyPrices):
        out = np.zeros((t.size, n_p))
        for k, pump in enumerate(network.pumps):
            base = pump.energy_price_per_kwh or network.global_price_per_kwh
            pattern = pump.price_pattern or network.global_price_pattern
            if pattern:
                out[:, k] = [base * network.pattern_value(pattern, x) for x in t]
            else:
                out[:, k] = base
        return out
    if isinstance(tariff, TimeOfUse):
        clock0 = network.times.start_clocktime_s
        prices = np.array([_tou_mean(tariff, clock0 + a, d) for a, d in zip(t, dt)])
        return np.repeat(prices[:, None], n_p, axis=1)
    if isinstance(tariff, PeriodPrices):
        idx = np.minimum((t // tariff.period_s).astype(int), len(tariff.prices_per_kwh) - 1)
        return np.repeat(np.asarray(tariff.prices_per_kwh)[idx][:, None], n_p, axis=1)
    raise NetworkInputError(f"no per-kWh prices for tariff {type(tariff).__name__}")


def _tou_mean(tou: TimeOfUse, clock_s: float, dt_s: float) -> float:
    """Mean price over [clock_s, clock_s + dt_s) (clock in s since midnight, wraps)."""
    def price(c):
        h = (c % 86400) / 3600.0
        return tou.peak_per_kwh if tou.peak_start_h <= h < tou.peak_end_h else tou.off_per_kwh
    if dt_s <= 0:
        return price(clock_s)
    marks = [tou.peak_start_h * 3600, tou.peak_end_h * 3600, 86400.0]
    total, a, end = 0.0, clock_s, clock_s + dt_s
    while a < end - 1e-9:
        day = (a // 86400) * 86400
        nxt = min([day + m for m in marks if day + m > a + 1e-9] + [day + 86400.0, end])
        total += price(a) * (nxt - a)
        a = nxt
    return total / dt_s


def _linear(tariff: LinearPowerModel, result: SimulationResult) -> np.ndarray:
    q = result.period_start_flow_m3s()
    z = q > RUNNING_FLOW_M3S
    fixed = np.array([tariff.fixed_kw.get(p, 0.0) for p in result.pump_ids])
    slope = np.array([tariff.per_flow_kw_s_per_m3.get(p, 0.0) for p in result.pump_ids])
    starts = result.start_s + np.arange(result.periods) * result.period_s
    idx = (starts // tariff.period_s).astype(int)
    if idx.max(initial=0) >= len(tariff.prices_per_mwh):
        raise NetworkInputError(f"linear power model has {len(tariff.prices_per_mwh)} prices, "
                                f"the run needs period {idx.max()}")
    price = np.asarray(tariff.prices_per_mwh)[idx]
    power_kw = z * (fixed + slope * np.maximum(q, 0.0))
    return power_kw * price[:, None] / 1000.0 * (result.period_s / 3600.0)
