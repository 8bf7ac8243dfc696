"""What-if: a scenario against a baseline on the same network and tariff."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.simulate.cost import Tariff, total_cost
from processors.simulate.network import Network
from processors.simulate.run import SimulationResult


@dataclass(frozen=True)
class Comparison:
    """Scenario minus baseline.  Energy in kWh, cost in the tariff's currency, levels
    and pressures in m; per-tank entries keyed by tank id."""

    energy_kwh: float
    baseline_energy_kwh: float
    cost: float
    baseline_cost: float
    final_level_change_m: dict[str, float]
    lowest_level_change_m: dict[str, float]
    min_pressure_change_m: dict[str, float]

    @property
    def saving(self) -> float:
        return self.baseline_cost - self.cost

    @property
    def saving_pct(self) -> float:
        return 100.0 * self.saving / self.baseline_cost if self.baseline_cost else 0.0


def compare(network: Network, scenario: SimulationResult, baseline: SimulationResult,
            tariff: Tariff) -> Comparison:
    """Compare two runs of ``network`` (same horizon) under ``tariff``."""
    tanks = network.tank_ids
    return Comparison(
        energy_kwh=float(scenario.energy_kwh().sum()),
        baseline_energy_kwh=float(baseline.energy_kwh().sum()),
        cost=total_cost(tariff, network, scenario),
        baseline_cost=total_cost(tariff, network, baseline),
        final_level_change_m={t: float(scenario.tank_level_m[-1, k] - baseline.tank_level_m[-1, k])
                               for k, t in enumerate(tanks)},
        lowest_level_change_m={t: float(scenario.tank_level_m[:, k].min()
                                        - baseline.tank_level_m[:, k].min())
                               for k, t in enumerate(tanks)},
        min_pressure_change_m={g: float(np.nanmin(scenario.min_pressure_m[g])
                                        - np.nanmin(baseline.min_pressure_m[g]))
                               for g in scenario.min_pressure_m if g in baseline.min_pressure_m},
    )
