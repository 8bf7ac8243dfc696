"""The strict EPS check on hand-built runs and schedules."""

import numpy as np
import pytest

from processors.simulate import FeasibilityRules, PumpLimits, SimulationResult, load_network
from processors.simulate.feasibility import check_feasibility, pump_check, runs


@pytest.fixture(scope="module")
def vanzyl(shared_data):
    return load_network((shared_data / "pumpsched/vanzyl/van_zyl.inp").read_bytes())


def _levels(levels):
    lv = np.asarray(levels, dtype=float)
    n = len(lv)
    t = np.arange(n) * 3600.0
    z = np.zeros((n, 3))
    return SimulationResult(tank_ids=("t6", "t5"), pump_ids=("pmp1", "pmp2", "pmp6"), start_s=0,
                            horizon_s=int(t[-1]), period_s=3600, times_s=t,
                            step_s=np.append(np.diff(t), 0), tank_level_m=lv, pump_flow_m3s=z,
                            pump_power_kw=z, pump_speed=z, pump_state=np.zeros((n, 3), int),
                            pump_head_m=z)


def test_runs_and_pump_limits():
    assert runs(np.array([0, 1, 1, 0, 1])) == [(False, 0, 1), (True, 1, 2), (False, 3, 1), (True, 4, 1)]
    on = np.array([1, 1, 0, 1, 1, 1, 0, 0])
    ok, why = pump_check("P", on, 1800, PumpLimits(max_starts=2, min_on_s=3600, min_off_s=1800))
    assert ok.ok and ok.starts == 2 and ok.shortest_run_s == 3600 and not why
    bad, why = pump_check("P", on, 1800, PumpLimits(max_starts=1, min_on_s=5400, min_off_s=3600))
    assert not bad.ok and len(why) == 3  # starts, a short run, a short rest
    trans, why = pump_check("P", on, 1800, PumpLimits(max_starts=2, count_transitions=True))
    assert trans.transitions == 3 and why


def test_tank_bounds_and_final_level(vanzyl):
    good = _levels([[9.5, 4.5], [8.0, 3.0], [9.6, 4.5]])
    rep = check_feasibility(vanzyl, good, FeasibilityRules())
    assert rep.feasible and rep.reason() == "feasible"
    low = _levels([[9.5, 4.5], [8.0, -0.1], [9.6, 4.6]])
    rep = check_feasibility(vanzyl, low, FeasibilityRules())
    assert not rep.feasible and "below its minimum" in rep.reason()
    short = _levels([[9.5, 4.5], [8.0, 3.0], [9.4, 4.5]])
    rep = check_feasibility(vanzyl, short, FeasibilityRules())
    assert not rep.feasible and "t6 ends at 9.400 m, 0.100 m below" in rep.reason()
    tight = check_feasibility(vanzyl, good, FeasibilityRules(tank_bounds_m={"t5": (3.5, 5.0)}))
    assert not tight.feasible
    assert any("full" in w for w in check_feasibility(
        vanzyl, _levels([[10.0, 4.5], [10.0, 4.5]]), FeasibilityRules()).warnings)


def test_schedule_limits_are_part_of_feasibility(vanzyl):
    run = _levels([[9.5, 4.5]] * 5)
    sched = {"pmp1": np.array([1, 0, 1, 0])}
    rules = FeasibilityRules(pump_limits={"pmp1": PumpLimits(max_starts=1)})
    rep = check_feasibility(vanzyl, run, rules, sched)
    assert not rep.feasible and "2 starts > 1" in rep.reason()


def test_a_breach_smaller_than_the_printed_precision_is_given_in_millimetres():
    from processors.simulate.feasibility import _depth

    assert _depth(0.0004) == "0.4 mm"
    assert _depth(0.25) == "0.25 m"
