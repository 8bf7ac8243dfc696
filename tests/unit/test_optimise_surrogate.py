"""The surrogate against EPANET on a shared instance (Poormond, the first 4 hours).

Tolerances: at its reference the surrogate reproduces EPANET's period volume changes
(1e-6 of a tank's range) and cost (1e-9 relative); for a schedule two cluster-periods
away, levels within 1 % of each tank's range and cost within 1 %; pump flows of each
option within 1 % of EPANET's period mean.
"""

import json

import numpy as np
import pytest

from processors.optimise.benchmark import benchmark_problem
from processors.optimise.setup import resolve
from processors.optimise.surrogate import build, find_clusters, predict
from processors.optimise.verify import Verifier
from processors.simulate.run import Twin


@pytest.fixture(scope="module")
def poormond(shared_data):
    folder = shared_data / "pumpsched/poormond"
    problem = benchmark_problem((folder / "Poormond-48_Steps-Day_1.inp").read_bytes(),
                                modifications=json.loads((folder / "modifications.json").read_text()),
                                hours=4)
    setup = resolve(problem, 30)
    twin = Twin(setup.network, scheduled=setup.pumps)
    twin.lean = True
    yield setup, twin, Verifier(setup, twin)
    twin.close()


def _schedule(setup):
    """A reference that keeps the tanks inside their bounds until its last period."""
    speeds = np.zeros((setup.periods, len(setup.pumps)))
    speeds[:, :4] = 1.0  # 1A, 2A, 3A, 4B on
    speeds[2:5, 4] = 1.0  # 5C, 6D, 7F for a run each
    speeds[0:3, 5] = 1.0
    speeds[0:4, 6] = 1.0
    return speeds


def test_clusters_group_the_series_pumps(poormond):
    setup, twin, _ = poormond
    clusters = find_clusters(setup, twin, setup.initial_m)
    names = ["+".join(setup.pumps[k] for k in c) for c in clusters]
    assert "1A+2A+3A" in names  # 3A boosts what 1A/2A lift: their flows depend on each other


def test_surrogate_is_exact_at_its_reference(poormond):
    setup, twin, verifier = poormond
    ref = verifier.evaluate(_schedule(setup))
    sur = build(setup, twin, find_clusters(setup, twin, setup.initial_m), ref.speeds, ref.sim)
    volumes, cost = predict(sur, ref.speeds)
    eps = np.column_stack([setup.volume(i, ref.sim.levels_at_period_starts()[:, i])
                           for i in range(len(setup.tanks))])
    span = np.array([setup.volume(i, t.max_level_m) - setup.volume(i, t.min_level_m)
                     for i, t in enumerate(setup.tanks)])
    assert np.max(np.abs(volumes - eps) / span) < 1e-6
    assert cost == pytest.approx(ref.cost, rel=1e-9)


def test_surrogate_tracks_epanet_near_its_reference(poormond):
    setup, twin, verifier = poormond
    ref = verifier.evaluate(_schedule(setup))
    clusters = find_clusters(setup, twin, setup.initial_m)
    sur = build(setup, twin, clusters, ref.speeds, ref.sim)
    moved = ref.speeds.copy()
    moved[1, 3] = 0.0  # 4B off in period 1
    moved[5:8, 5] = 1.0  # 6D on for another run
    ev = verifier.evaluate(moved)
    volumes, cost = predict(sur, moved)
    levels = np.column_stack([setup.tanks[i].level_m(volumes[:, i]) for i in range(len(setup.tanks))])
    span = setup.upper_m - setup.lower_m
    err = np.abs(levels - ev.sim.levels_at_period_starts()) / span
    assert err.max() < 0.01
    assert cost == pytest.approx(ev.cost, rel=0.01)
    # pump flows of each option against EPANET's period means at the reference levels
    q = ev.sim.period_mean_flow_m3s()
    ids = setup.network.pump_ids
    g = next(i for i, c in enumerate(clusters) if setup.pumps.index("4B") in c)
    on = int(np.argmax(sur.options[g][:, 0]))
    q_ref = ref.sim.period_mean_flow_m3s()[0, ids.index("4B")]
    assert sur.flow_opt[g][0, on, 0] == pytest.approx(q_ref, rel=0.01)
    assert q[1, ids.index("4B")] == 0.0
