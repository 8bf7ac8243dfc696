"""Extended-period runs on the twin, against known-good figures."""

import threading
from pathlib import Path

import numpy as np
import pytest
import wntr

from processors.simulate import (EpanetEnergyPrices, NetworkInputError, Scenario, TimeOfUse,
                                 Twin, compare, load_network, simulate, total_cost)

NET3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"


@pytest.fixture(scope="module")
def net3():
    return load_network(NET3.read_bytes())


def test_net3_own_controls_cost_under_time_of_use(net3):
    """The issue's figure: 398.83 EUR for the first 24 h, tank 2 below its start."""
    run = simulate(net3, Scenario(horizon_s=86400))
    assert total_cost(TimeOfUse(0.08, 0.20, 7), net3, run) == pytest.approx(398.83, abs=0.01)
    assert run.tank_level_m[-1, 1] < run.tank_level_m[0, 1]
    # EPANET inserted steps (a control fired between hours): they are all recorded
    assert len(run.times_s) > 25 and run.times_s[-1] == 86400


def test_vanzyl_shipped_schedule_costs_410_92(shared_data):
    """The .inp's own speed patterns, priced by its [ENERGY] section (README: 410.92)."""
    net = load_network((shared_data / "pumpsched/vanzyl/van_zyl.inp").read_bytes())
    run = simulate(net)
    assert total_cost(EpanetEnergyPrices(), net, run) == pytest.approx(410.92, abs=0.01)


def test_schedule_replaces_controls(net3):
    """A schedule with pump 335 off all day: its level controls no longer switch it on."""
    off = {"10": np.ones(24), "335": np.zeros(24)}
    run = simulate(net3, Scenario(horizon_s=86400, schedule=off))
    k = net3.pump_ids.index("335")
    assert np.all(run.pump_flow_m3s[:, k] == 0)
    assert run.energy_kwh()[k] == 0


def test_scenario_inputs_are_checked(net3):
    with pytest.raises(NetworkInputError, match="expected 24"):
        simulate(net3, Scenario(horizon_s=86400, schedule={"10": [1, 0]}))
    with pytest.raises(NetworkInputError, match="unknown pumps"):
        simulate(net3, Scenario(horizon_s=86400, schedule={"nope": np.ones(24)}))
    with pytest.raises(NetworkInputError, match="outside"):
        simulate(net3, Scenario(horizon_s=86400, initial_levels_m={"1": 99.0}))


def test_demand_levels_and_out_of_service(net3):
    base = simulate(net3, Scenario(horizon_s=12 * 3600))
    more = simulate(net3, Scenario(horizon_s=12 * 3600, demand_multipliers={"*": np.full(12, 1.2)}))
    assert more.tank_level_m[-1].sum() < base.tank_level_m[-1].sum()
    high = simulate(net3, Scenario(horizon_s=3600, initial_levels_m={"3": 9.0}))
    assert high.tank_level_m[0, 2] == pytest.approx(9.0, abs=1e-6)
    oos = simulate(net3, Scenario(horizon_s=12 * 3600, out_of_service=frozenset({"335"})))
    assert np.all(oos.pump_flow_m3s[:, net3.pump_ids.index("335")] == 0)
    diff = compare(net3, oos, base, TimeOfUse(0.08, 0.20, 7))
    assert diff.cost < diff.baseline_cost and diff.saving > 0


def test_twins_in_threads_do_not_interfere(net3):
    """Each twin owns its EPANET project and temporary directory."""
    speeds = [np.tile([[1.0, 1.0]], (24, 1)), np.tile([[1.0, 0.0]], (24, 1))]
    alone = []
    for s in speeds:
        with Twin(net3, scheduled=("10", "335")) as tw:
            alone.append(tw.run(s, horizon_s=86400, period_s=3600).tank_level_m)
    together = [None, None]

    def work(i):
        with Twin(net3, scheduled=("10", "335")) as tw:
            for _ in range(3):
                together[i] = tw.run(speeds[i], horizon_s=86400, period_s=3600).tank_level_m

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
