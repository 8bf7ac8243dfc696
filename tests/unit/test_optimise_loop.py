"""The optimiser end to end on short horizons: verified results, repair, infeasibility,
determinism, stability and reasons."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from processors.optimise import Effort, Problem, PumpRules, optimise
from processors.optimise import polish
from processors.optimise.benchmark import benchmark_problem
from processors.optimise.milp import Margins, solve
from processors.optimise.setup import resolve
from processors.optimise.surrogate import build, find_clusters
from processors.optimise.verify import Verifier
from processors.simulate import TimeOfUse, load_network
from processors.simulate.run import Twin

EFFORT = Effort(rounds=2, mip_nodes=20, repair_evaluations=30, round_polish_evaluations=20,
                polish_evaluations=40)


@pytest.fixture(scope="module")
def ltown(shared_data):
    return load_network((shared_data / "battledim/L-TOWN.inp").read_bytes())


def _problem(net, hours=4, **kw):
    return Problem(network=net, tariff=TimeOfUse(0.10, 0.25, 8), horizon_s=hours * 3600,
                   pump_rules={"PUMP_1": PumpRules(speeds=(0.7, 1.0))}, effort=EFFORT, **kw)


def test_result_is_verified_and_explained(ltown):
    result = optimise(_problem(ltown), time_limit_s=60)
    assert result.status == "verified" and result.feasibility.feasible
    assert result.speeds.shape == (4, 1)
    assert set(np.unique(result.speeds)) <= {0.0, 0.7, 1.0}
    tank = result.feasibility.tanks[0]
    assert tank.final_m >= tank.initial_m and tank.lowest_m > tank.lower_m
    assert result.cost == pytest.approx(float(result.simulation.energy_kwh().sum()) * 0.10, rel=1e-9)
    assert result.baseline_cost > 0 and result.stats.rounds >= 1
    assert all(r.startswith(("on", "off")) for row in result.reasons for r in row)


def test_same_inputs_same_schedule(ltown):
    a = optimise(_problem(ltown), time_limit_s=60)
    b = optimise(_problem(ltown), time_limit_s=60)
    assert a.speeds.tobytes() == b.speeds.tobytes() and a.cost == b.cost
    assert not a.stats.time_limited


def test_no_feasible_schedule_falls_back_with_the_reason(ltown):
    """T1 cannot rise from 3.5 m to 3.99 m in two hours: the network's own controls."""
    result = optimise(_problem(ltown, hours=2, final_levels_m={"T1": 3.99}), time_limit_s=60)
    assert result.status == "fallback" and not result.feasible
    assert result.reason.startswith("infeasible because") and "own controls" in result.reason
    assert result.simulation is result.baseline
    assert result.cost == result.baseline_cost


def test_repair_of_a_surrogate_feasible_epanet_infeasible_schedule(ltown):
    """The MILP is told the final target 5 cm lower than it is: its schedule satisfies the
    surrogate but EPANET ends below the target; the repair the verify loop applies fixes
    it by adding running time."""
    setup = resolve(_problem(ltown, hours=6), 60)
    with Twin(ltown, scheduled=setup.pumps) as twin:
        verifier = Verifier(setup, twin)
        ref = verifier.evaluate(np.zeros((6, 1)))
        sur = build(setup, twin, find_clusters(setup, twin, setup.initial_m), ref.speeds, ref.sim)
        loose = Margins.initial(setup)
        loose.final[:] = -0.05
        sol = solve(setup, sur, loose, time_limit_s=30)
        assert sol.slack_m3 == 0.0
        ev = verifier.evaluate(sol.speeds)
        assert not ev.accepted and ev.final_short_m[0] > 0
        fixed = polish.repair(setup, verifier, ev, sur, deadline=float("inf"), budget=40)
        assert fixed is not None and fixed.accepted
        assert fixed.speeds.sum() > ev.speeds.sum()


def test_stability_penalty_keeps_the_released_near_periods(ltown):
    released = {"PUMP_1": [1.0, 1.0, 0.0, 0.0]}
    free = optimise(_problem(ltown), time_limit_s=60)
    kept = optimise(_problem(ltown, released=released, stability_penalty=100.0,
                             stability_periods=2), time_limit_s=60)
    assert kept.feasible
    assert list(kept.speeds[:2, 0] > 0) == [True, True]
    assert "released" in kept.reasons[0][0]
    assert free.cost <= kept.cost + 1e-9


def test_benchmark_builder_reads_modifications(shared_data):
    import json

    folder = shared_data / "pumpsched/poormond"
    problem = benchmark_problem((folder / "Poormond-48_Steps-Day_1.inp").read_bytes(),
                                modifications=json.loads((folder / "modifications.json").read_text()))
    assert problem.period_s == 1800 and problem.horizon_s == 86400
    rule = problem.pump_rules["1A"]
    assert rule.speeds == (1.0,) and rule.max_starts == 6
    assert rule.min_on_s == 3 * 1800  # WaterModels' reading of 3600 s on 30-minute periods
    assert problem.tariff.prices_per_mwh[0] == pytest.approx(40.77)


def test_operating_rules_reach_the_milp(shared_data):
    """Forbidden periods, pumps that may not run together, minimum runs and starts."""
    import wntr

    net = load_network((Path(wntr.__file__).parent / "library/networks/Net3.inp").read_bytes())
    rules = {"10": PumpRules(min_on_s=2 * 3600, max_starts=1),
             "335": PumpRules(forbidden_periods=frozenset({0, 1}))}
    problem = Problem(network=net, tariff=TimeOfUse(0.08, 0.20, 7), horizon_s=6 * 3600,
                      pump_rules=rules, exclusive_pumps=(("10", "335"),), effort=EFFORT)
    setup = resolve(problem, 60)
    with Twin(net, scheduled=setup.pumps) as twin:
        verifier = Verifier(setup, twin)
        ref = verifier.evaluate(np.ones((6, 2)))
        sur = build(setup, twin, find_clusters(setup, twin, setup.initial_m), ref.speeds, ref.sim)
        sol = solve(setup, sur, Margins.initial(setup, len(sur.links)), time_limit_s=30,
                    link_controls=twin.level_controls, soft=True)
    on = sol.speeds > 0
    assert not on[:2, 1].any()  # 335 forbidden in periods 0 and 1
    assert not (on[:, 0] & on[:, 1]).any()  # never together
    assert polish.allowed(setup, sol.speeds)  # 10: one start, runs of two periods or more


def test_upper_quantile_demand_protects_the_lower_bound(ltown):
    """T1 kept within [3.3, 4.0] m: under a demand 30 % above the median the schedule
    planned with the upper quantile still keeps it above 3.3 m."""
    median, bounds = np.ones(6), {"T1": (3.3, 4.0)}

    def lowest_under_high_demand(result):
        setup = resolve(_problem(ltown, hours=6), 60)
        with Twin(ltown, scheduled=setup.pumps) as twin:
            run = twin.run(result.speeds, horizon_s=setup.horizon_s, period_s=setup.period_s,
                           initial_levels_m=setup.initial_m,
                           demand_multipliers={"*": 1.3 * median})
        return run.tank_level_m[:, 0].min()

    plain = optimise(_problem(ltown, hours=6, tank_bounds_m=bounds,
                              demand_multipliers={"*": median}), time_limit_s=60)
    robust = optimise(_problem(ltown, hours=6, tank_bounds_m=bounds,
                               demand_multipliers={"*": median},
                               demand_multipliers_upper={"*": 1.3 * median}), time_limit_s=60)
    assert plain.feasible and robust.feasible
    assert lowest_under_high_demand(plain) < 3.3 < lowest_under_high_demand(robust)
