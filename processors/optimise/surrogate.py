"""The surrogate: per period, how tank volumes and cost respond to pump decisions.

Operating points come from EPANET.  Around a reference schedule and its simulated
trajectory, each period is re-simulated from the reference tank levels as a short window
(EPANET, the same engine and step rules as the full run) for:

- every *option* of every *cluster* (the on/off/speed combinations of pumps whose
  flows depend on each other, e.g. parallel or series pumps, together with the links that
  tank-level controls open and close, e.g. a bypass; other clusters held at the
  reference), giving the change in each tank's volume and in the cost;
- a small rise of each tank's starting level, giving the linear response of the period's
  volume change and cost to the levels (first-order, at the reference option).

So the surrogate is exact at the reference (a period re-simulated from the same state
reproduces EPANET's own), piecewise in the pump decisions and linear in the levels
between.  Where the MILP moves away from the reference, EPANET judges the result and the
loop re-linearises there.  Volumes in m3, costs in the tariff's currency.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from processors.optimise.setup import Setup
from processors.simulate.cost import cost_by_period
from processors.simulate.run import SimulationResult, Twin

COUPLING = 0.05  # a pump is coupled to another when switching that one moves its flow 5 %
MAX_OPTIONS = 16  # options per cluster (2**4 fixed-speed pumps)


@dataclass
class Surrogate:
    """Members of a cluster are positions: 0..P-1 scheduled pumps, then P.. the
    level-controlled links (``links``), whose option value is 1 = open, 0 = closed."""

    clusters: list[tuple[int, ...]]
    options: list[np.ndarray]  # per cluster: (options, members) speeds or link states
    links: tuple[str, ...]
    ref_option: np.ndarray  # (periods, clusters) index of the reference option
    v_ref: np.ndarray  # (periods + 1, tanks) reference volumes at period starts
    dv_ref: np.ndarray  # (periods, tanks) reference volume change per period
    dv_opt: list[np.ndarray]  # per cluster (periods, options, tanks) change vs reference
    cost_ref: np.ndarray  # (periods,) reference cost per period
    dcost_opt: list[np.ndarray]  # per cluster (periods, options)
    flow_opt: list[np.ndarray]  # per cluster (periods, options, cluster pumps) mean flow m3/s
    sens_v: np.ndarray  # (periods, tanks, tanks) d(dv_i)/d(v_j)
    sens_cost: np.ndarray  # (periods, tanks) d(cost)/d(v_j)
    extra_draw: np.ndarray  # (periods, tanks) extra volume drawn under upper-quantile demand
    windows: int
    # per cluster: the tanks its options move, and how each option's effect on volumes
    # (periods, options, tanks, tanks) and cost (periods, options, tanks) changes with
    # those tanks' volumes, beyond the reference option's response
    affected: list[tuple[int, ...]] | None = None
    sens_opt_v: list[np.ndarray] | None = None
    sens_opt_cost: list[np.ndarray] | None = None


def predict(sur: Surrogate, speeds: np.ndarray, link_open: np.ndarray | None = None
            ) -> tuple[np.ndarray, float]:
    """The surrogate's (periods + 1, tanks) volumes (m3) and cost for a schedule: what the
    MILP would believe of it (without margins).  ``link_open``: (periods, modelled links)
    states, default the reference's."""
    T = sur.dv_ref.shape[0]
    P = speeds.shape[1]
    v = [sur.v_ref[0].copy()]
    cost = float(sur.cost_ref.sum())
    for t in range(T):
        dev = v[t] - sur.v_ref[t]
        dv = sur.dv_ref[t] + sur.sens_v[t] @ dev
        cost += float(sur.sens_cost[t] @ dev)
        for g, (cl, opts) in enumerate(zip(sur.clusters, sur.options)):
            want = np.array([speeds[t, m] if m < P else
                             (opts[sur.ref_option[t, g], kk] if link_open is None
                              else link_open[t, m - P]) for kk, m in enumerate(cl)])
            o = int(np.argmin(np.abs(opts - want).sum(axis=1)))
            dv = dv + sur.dv_opt[g][t, o]
            cost += float(sur.dcost_opt[g][t, o])
            if sur.sens_opt_v is not None and o != sur.ref_option[t, g]:
                dv = dv + sur.sens_opt_v[g][t, o] @ dev
                cost += float(sur.sens_opt_cost[g][t, o] @ dev)
        v.append(v[t] + dv)
    return np.array(v), cost


def member_values(setup: Setup, twin: Twin) -> list[tuple[float, ...]]:
    """Values each member can take: (0, speeds...) per pump, (0, 1) per modelled link."""
    return ([(0.0,) + tuple(r.speeds) for r in setup.rules]
            + [(0.0, 1.0) for _ in twin.level_controls])


def find_clusters(setup: Setup, twin: Twin, levels_m: np.ndarray) -> list[tuple[int, ...]]:
    """Group the members whose flows depend on each other.  Probe windows at three
    periods with every pump at its top speed and the modelled links open, switching one
    member off at a time and watching the pumps' flows."""
    P = len(setup.pumps)
    links = list(twin.level_controls)
    n = P + len(links)
    top = np.array([max(r.speeds) for r in setup.rules])
    coupling = np.zeros((n, n))
    probes = sorted({0, setup.periods // 3, (2 * setup.periods) // 3})
    pos = list(_pos(setup, twin))
    for t in probes:
        mult = {z: v[t] for z, v in setup.multipliers.items()}
        start = t * setup.period_s
        states0 = _states(twin, None, links, np.ones(len(links)))

        def flows(speeds, states):
            w = twin.run_window(start, setup.period_s, levels_m, speeds, link_states=states,
                                demand_multipliers=mult, hold_links=True)
            return _mean_flow(w)[pos]
        q0 = flows(top, states0)
        for l in range(n):
            s, st = top.copy(), states0.copy() if states0 is not None else None
            if l < P:
                s[l] = 0.0
            else:
                st = _states(twin, None, links, np.eye(len(links))[l - P] == 0)
            q = flows(s, st)
            scale = np.maximum(np.abs(q0), 1e-9)
            coupling[:P, l] = np.maximum(coupling[:P, l], np.abs(q - q0) / scale)
    np.fill_diagonal(coupling, 0.0)
    strength = np.maximum(coupling, coupling.T)
    sizes = [len(v) for v in member_values(setup, twin)]
    groups = [[k] for k in range(n)]
    pairs = sorted(((strength[a, b], a, b) for a in range(n) for b in range(a + 1, n)
                    if strength[a, b] > COUPLING), key=lambda x: (-x[0], x[1], x[2]))
    for _, a, b in pairs:
        ga = next(g for g in groups if a in g)
        gb = next(g for g in groups if b in g)
        if ga is gb:
            continue
        if np.prod([sizes[k] for k in ga + gb]) > MAX_OPTIONS:
            continue
        ga.extend(gb)
        groups.remove(gb)
    return [tuple(sorted(g)) for g in sorted(groups, key=min)]


def build(setup: Setup, twin: Twin, clusters: list[tuple[int, ...]], ref_speeds: np.ndarray,
          ref_sim: SimulationResult, levels_m: np.ndarray | None = None) -> Surrogate:
    """Linearise around ``ref_speeds`` whose EPS is ``ref_sim`` (with link states); with
    ``levels_m`` ((periods + 1, tanks)) around those levels instead of the run's."""
    T, nt, P = setup.periods, len(setup.tanks), len(setup.pumps)
    tariff, net = setup.problem.tariff, setup.network
    links = list(twin.level_controls)
    values = member_values(setup, twin)
    options = [np.array(list(itertools.product(*[values[m] for m in c])), dtype=float)
               for c in clusters]
    levels = ref_sim.levels_at_period_starts() if levels_m is None else np.asarray(levels_m)
    vol = np.column_stack([setup.volume(i, levels[:, i]) for i in range(nt)])
    ref_opt = np.zeros((T, len(clusters)), dtype=int)
    dv_ref = np.zeros((T, nt))
    cost_ref = np.zeros(T)
    dv_opt = [np.zeros((T, len(o), nt)) for o in options]
    dc_opt = [np.zeros((T, len(o))) for o in options]
    fl_opt = [np.zeros((T, len(o), sum(m < P for m in c))) for o, c in zip(options, clusters)]
    sens_v = np.zeros((T, nt, nt))
    sens_c = np.zeros((T, nt))
    extra = np.zeros((T, nt))
    pos = list(_pos(setup, twin))
    windows = 0
    dv_ref_held = np.zeros((T, nt))  # the reference with links held (options' baseline)
    cost_held = np.zeros(T)

    def window(t, lv, members, mult=None, hold=True):
        nonlocal windows
        windows += 1
        m = setup.multipliers if mult is None else mult
        w = twin.run_window(t * setup.period_s, setup.period_s, lv, members[:P],
                            link_states=_states(twin, ref_sim.link_states, links, members[P:], t),
                            demand_multipliers={z: v[t] for z, v in m.items()},
                            hold_links=hold)
        end = np.array([setup.volume(i, w.tank_level_m[-1, i]) for i in range(nt)])
        start = np.array([setup.volume(i, w.tank_level_m[0, i]) for i in range(nt)])
        return end - start, float(cost_by_period(tariff, net, w).sum()), _mean_flow(w)[pos]

    ref_links = _link_values(twin, ref_sim.link_states, links, T)
    for t in range(T):
        lv = levels[t]
        ref = np.concatenate([ref_speeds[t], ref_links[t]])
        dv0, c0, q0 = window(t, lv, ref)
        dv_ref[t], cost_ref[t] = dv0, c0
        dv_ref_held[t], cost_held[t] = dv0, c0
        if links:  # the reference as EPANET runs it: controls may flip links mid-period
            dv_ref[t], cost_ref[t], _ = window(t, lv, ref, hold=False)
        for g, (c, opts) in enumerate(zip(clusters, options)):
            r = int(np.argmin(np.abs(opts - ref[list(c)]).sum(axis=1)))
            ref_opt[t, g] = r
            pumps_in = [m for m in c if m < P]
            fl_opt[g][t, r, :len(pumps_in)] = q0[pumps_in]
            for o in range(len(opts)):
                if o == r:
                    continue
                s = ref.copy()
                s[list(c)] = opts[o]
                dv, cost, q = window(t, lv, s)
                dv_opt[g][t, o] = dv - dv0
                dc_opt[g][t, o] = cost - c0
                fl_opt[g][t, o, :len(pumps_in)] = q[pumps_in]
        for j in range(nt):
            lv2, dvol = _nudged(setup, lv, j)
            dv, cost, _ = window(t, lv2, ref)
            sens_v[t, :, j] = (dv - dv0) / dvol
            sens_c[t, j] = (cost - c0) / dvol
        if setup.multipliers_upper:
            dv_hi, _, _ = window(t, lv, ref, setup.multipliers_upper)
            extra[t] = np.maximum(0.0, dv0 - dv_hi)
    # each option's own response to the levels of the tanks its cluster moves
    scale = np.array([float(tk.volume_m3(tk.max_level_m) - tk.volume_m3(tk.min_level_m))
                      for tk in setup.tanks])
    affected = [tuple(int(i) for i in np.nonzero(
        (np.abs(d).max(axis=(0, 1)) > 0.02 * scale))[0]) for d in dv_opt]
    so_v = [np.zeros((T, len(o), nt, nt)) for o in options]
    so_c = [np.zeros((T, len(o), nt)) for o in options]
    for t in range(T):
        lv = levels[t]
        ref = np.concatenate([ref_speeds[t], ref_links[t]])
        for g, (c, opts) in enumerate(zip(clusters, options)):
            for j in affected[g]:
                lv2, dvol = _nudged(setup, lv, j)
                for o in range(len(opts)):
                    if o == ref_opt[t, g]:
                        continue
                    s_ = ref.copy()
                    s_[list(c)] = opts[o]
                    dv, cost, _ = window(t, lv2, s_)
                    # d(dv_opt)/dv_j = d(dv(o))/dv_j - d(dv(ref))/dv_j
                    so_v[g][t, o, :, j] = (dv - dv_opt[g][t, o] - dv_ref_held[t]) / dvol \
                        - sens_v[t, :, j]
                    so_c[g][t, o, j] = (cost - dc_opt[g][t, o] - cost_held[t]) / dvol \
                        - sens_c[t, j]
    return Surrogate(clusters, options, tuple(links), ref_opt, vol, dv_ref, dv_opt, cost_ref,
                     dc_opt, fl_opt, sens_v, sens_c, extra, windows, affected, so_v, so_c)


def _nudged(setup: Setup, lv: np.ndarray, j: int) -> tuple[np.ndarray, float]:
    """Levels with tank j moved 5 % of its range towards mid-range, and the volume moved."""
    tank = setup.tanks[j]
    span = tank.max_level_m - tank.min_level_m
    step = max(0.05 * span, 0.005)
    mid = (tank.min_level_m + tank.max_level_m) / 2
    lv2 = lv.copy()
    lv2[j] = lv[j] + step if lv[j] <= mid else lv[j] - step
    return lv2, float(setup.volume(j, lv2[j]) - setup.volume(j, lv[j]))


def pump_effects(sur: Surrogate, pumps: int) -> tuple[np.ndarray, np.ndarray]:
    """(pumps, periods, tanks) volume gain and (pumps, periods) cost of running each pump
    rather than not, averaged over the other members' options of its cluster."""
    T = sur.dv_ref.shape[0]
    gain = np.zeros((pumps, T, sur.dv_ref.shape[1]))
    cost = np.zeros((pumps, T))
    for g, (cl, opts) in enumerate(zip(sur.clusters, sur.options)):
        for kk, k in enumerate(cl):
            if k >= pumps:
                continue
            on, off = opts[:, kk] > 0, opts[:, kk] == 0
            gain[k] = sur.dv_opt[g][:, on].mean(axis=1) - sur.dv_opt[g][:, off].mean(axis=1)
            cost[k] = sur.dcost_opt[g][:, on].mean(axis=1) - sur.dcost_opt[g][:, off].mean(axis=1)
    return gain, cost


def _link_values(twin: Twin, states: np.ndarray | None, links: list[str], T: int) -> np.ndarray:
    """(periods, modelled links) 1 = open in the reference run's states."""
    if not links or states is None:
        return np.zeros((T, len(links)))
    cols = [twin.controlled.index(l) for l in links]
    return (np.asarray(states)[:, cols] > 0).astype(float)


def _states(twin: Twin, ref_states, links, values, t: int | None = None):
    """The controlled links' states for a window: the reference's, with the modelled
    links set to ``values`` (1 open, 0 closed)."""
    if not twin.controlled:
        return None
    base = (np.ones(len(twin.controlled)) if ref_states is None or t is None
            else np.array(ref_states[t], dtype=float))
    for l, v in zip(links, values):
        base[twin.controlled.index(l)] = float(v)
    return base


def _pos(setup: Setup, twin: Twin):
    ids = setup.network.pump_ids
    return (ids.index(p) for p in setup.pumps)


def _mean_flow(w: SimulationResult) -> np.ndarray:
    return (w.pump_flow_m3s[:-1] * w.step_s[:-1, None]).sum(axis=0) / max(w.step_s.sum(), 1e-9)
