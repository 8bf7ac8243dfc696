"""The pump-schedule optimiser: a MILP on an EPANET-built surrogate, solved with HiGHS,
every proposal verified in an EPANET extended-period simulation.

    result = optimise(problem, time_limit_s=300)

Pure: no bus, storage or HTTP; EPANET runs in private temporary directories.
"""

from processors.optimise.loop import optimise
from processors.optimise.problem import Effort, Problem, PumpRules, Result, SolverStats

__all__ = ["Effort", "Problem", "PumpRules", "Result", "SolverStats", "optimise"]
