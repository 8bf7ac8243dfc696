"""The digital twin: EPANET networks, scenarios, extended-period runs, cost, feasibility.

Pure functions of their inputs (an .inp text, a scenario, a tariff); no bus, storage or
HTTP.  EPANET runs in a private temporary directory per run.
"""

from processors.simulate.cost import (EpanetEnergyPrices, LinearPowerModel, PeriodPrices,
                                      Tariff, TimeOfUse, cost_by_period, total_cost)
from processors.simulate.errors import NetworkInputError, SimulationError
from processors.simulate.feasibility import (FeasibilityReport, FeasibilityRules, PumpLimits,
                                             check_feasibility)
from processors.simulate.network import Network, TankInfo, PumpInfo, load_network, natural_period_s
from processors.simulate.run import SimulationResult, Twin, simulate
from processors.simulate.scenario import ALL_JUNCTIONS, Scenario
from processors.simulate.whatif import Comparison, compare

__all__ = [
    "ALL_JUNCTIONS", "Comparison", "EpanetEnergyPrices", "FeasibilityReport", "FeasibilityRules",
    "LinearPowerModel", "Network", "NetworkInputError", "PeriodPrices", "PumpInfo", "PumpLimits",
    "Scenario", "SimulationError", "SimulationResult", "TankInfo", "Tariff", "TimeOfUse", "Twin",
    "check_feasibility", "compare", "cost_by_period", "load_network", "natural_period_s",
    "simulate", "total_cost",
]
