"""Extended-period simulation of a network under a scenario, every hydraulic step recorded.

``simulate(network, scenario)`` is the pure entry point: it opens a private EPANET
project, runs, closes it.  ``Twin`` keeps the project open for callers that run the same
network many times (the optimiser): ``run`` for a whole horizon, ``run_window`` for a
short window from given tank levels (the surrogate's operating points).

EPANET conventions kept on purpose: a step's pump power is the power at its start and
is held for the step (EPANET's energy report does the same); a schedule period starts a
new hydraulic step (the report step is set to divide the period), so changes apply
exactly at period boundaries, like time controls would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from processors.simulate import _epanet as en
from processors.simulate.errors import NetworkInputError
from processors.simulate.network import Network
from processors.simulate.scenario import ALL_JUNCTIONS, Scenario

# EPANET flow-unit codes -> m3/s per unit
_FLOW_TO_M3S = {0: 0.028316846592, 1: 6.30901964e-05, 2: 0.0438126363888889,
                3: 0.0526167824074074, 4: 0.0142764101851852, 5: 1e-3, 6: 1 / 60000,
                7: 1 / 86.4, 8: 1 / 3600, 9: 1 / 86400}
_WARNINGS = {1: "system hydraulically unbalanced", 2: "system may be hydraulically unstable",
             3: "system disconnected", 4: "pumps cannot deliver enough flow or head",
             5: "valves cannot deliver enough flow", 6: "negative pressures"}


@dataclass(frozen=True)
class LevelControl:
    """A simple control: set the link open (``opens``) or closed when tank ``tank``
    (position in the network's tanks) is above (``above``) or below ``level_m``."""

    tank: int
    above: bool
    level_m: float
    opens: bool


@dataclass
class SimulationResult:
    """Every hydraulic step of a run.  Row k of each array is the state solved at
    ``times_s[k]`` and held for ``step_s[k]`` seconds; the last row is the end state
    (step 0).  Levels and heads in m, flows in m3/s, power in kW."""

    tank_ids: tuple[str, ...]
    pump_ids: tuple[str, ...]
    start_s: int
    horizon_s: int
    period_s: int
    times_s: np.ndarray
    step_s: np.ndarray
    tank_level_m: np.ndarray
    pump_flow_m3s: np.ndarray
    pump_power_kw: np.ndarray
    pump_speed: np.ndarray
    pump_state: np.ndarray
    pump_head_m: np.ndarray
    min_pressure_m: dict[str, np.ndarray] = field(default_factory=dict)
    link_states: np.ndarray | None = None  # (periods, controlled links): speed/status at starts
    warnings: tuple[str, ...] = ()

    @property
    def periods(self) -> int:
        return self.horizon_s // self.period_s

    def period_index(self) -> np.ndarray:
        """Period of each step (the end row maps to ``periods``)."""
        return np.minimum(((self.times_s - self.start_s) // self.period_s).astype(int),
                          self.periods)

    def levels_at_period_starts(self) -> np.ndarray:
        """(periods + 1, tanks) levels at each period start and at the end, m."""
        rel = self.times_s - self.start_s
        rows = [int(np.searchsorted(rel, p * self.period_s)) for p in range(self.periods + 1)]
        return self.tank_level_m[rows]

    def energy_kwh(self) -> np.ndarray:
        """(pumps,) energy over the horizon, kWh."""
        return (self.pump_power_kw * self.step_s[:, None]).sum(axis=0) / 3600.0

    def period_sum(self, values: np.ndarray) -> np.ndarray:
        """(periods, cols) sum over each period's steps of ``values * step_s``."""
        out = np.zeros((self.periods, values.shape[1]))
        idx = self.period_index()[:-1]
        np.add.at(out, idx, values[:-1] * self.step_s[:-1, None])
        return out

    def period_energy_kwh(self) -> np.ndarray:
        return self.period_sum(self.pump_power_kw) / 3600.0

    def period_mean_flow_m3s(self) -> np.ndarray:
        return self.period_sum(self.pump_flow_m3s) / self.period_s

    def period_start_flow_m3s(self) -> np.ndarray:
        """(periods, pumps) flows solved at each period's first step, m3/s."""
        rel = self.times_s - self.start_s
        rows = [int(np.searchsorted(rel, p * self.period_s)) for p in range(self.periods)]
        return self.pump_flow_m3s[rows]

    def period_running(self, min_flow_m3s: float = 1e-6) -> np.ndarray:
        """(periods, pumps) True where the pump carried flow in the period."""
        return self.period_mean_flow_m3s() > min_flow_m3s


class Twin:
    """An open EPANET project for one network with a fixed set of scheduled pumps.

    Controls and rules acting on ``scheduled`` or ``out_of_service`` pumps are deleted and
    their speed patterns cleared; out-of-service pumps stay closed.  Not thread-safe:
    one ``Twin`` per thread (separate projects do run in parallel).
    """

    def __init__(self, network: Network, *, scheduled: Sequence[str] = (),
                 out_of_service: Sequence[str] = (),
                 zones: Mapping[str, Sequence[str]] | None = None,
                 pressure_groups: Mapping[str, Sequence[str]] | None = None) -> None:
        self.network = network
        self.scheduled = tuple(scheduled)
        self.out_of_service = tuple(out_of_service)
        self.removed_rules: list[str] = []
        self.lean = False  # True: record levels, pump flows and power only (faster)
        p = self._p = en.EpanetProject(network.inp_text)
        try:
            self._setup(zones or {}, pressure_groups or {})
        except Exception:
            p.close()
            raise

    def _setup(self, zones, pressure_groups) -> None:
        p, net = self._p, self.network
        units = p.flow_units()
        self._q = _FLOW_TO_M3S[units]
        self._len = 0.3048 if units <= 4 else 1.0
        self._tank_idx = [p.node_index(t.id) for t in net.tanks]
        self._tank_elev = [p.node(i, en.ELEVATION) for i in self._tank_idx]
        self._tank_lim = [(p.node(i, en.MINLEVEL), p.node(i, en.MAXLEVEL)) for i in self._tank_idx]
        self._pump_idx = [p.link_index(pid) for pid in net.pump_ids]
        pos = {pid: k for k, pid in enumerate(net.pump_ids)}
        self._sched_pos = [pos[s] for s in self.scheduled]
        self._oos_pos = [pos[s] for s in self.out_of_service]
        removed = {self._pump_idx[k] for k in self._sched_pos + self._oos_pos}
        for i in range(p.count(en.CONTROLCOUNT), 0, -1):
            if p.control_link(i) in removed:
                p.delete_control(i)
        for i in range(p.count(en.RULECOUNT), 0, -1):
            links = p.rule_links(i)
            if removed.intersection(links):
                if set(links) - removed:
                    self.removed_rules.append(f"rule {i} also acted on other links")
                p.delete_rule(i)
        for idx in removed:
            p.set_link(idx, en.LINKPATTERN, 0)
        # links still governed by controls: their state at a window start is passed in
        kept = sorted({t for c in net.controls for t in c.targets}
                      - set(self.scheduled) - set(self.out_of_service))
        self.controlled = tuple(kept)
        self._ctl = [(p.link_index(l), l in pos) for l in kept]
        self.level_controls = self._level_controls()
        self._t0 = {k: p.time(k) for k in (en.PATTERNSTART, en.STARTTIME, en.HYDSTEP,
                                            en.REPORTSTEP)}
        self._dmult0 = p.option(en.DEMANDMULT)
        self._zones = {}
        for zone, members in zones.items():
            idx = [p.node_index(j) for j in members]
            self._zones[zone] = [(j, p.demands(j)) for j in idx]
        junction_idx = {jid: p.node_index(jid) for jid in net.junctions}
        groups = dict(pressure_groups)
        self._pgroups = {g: [(junction_idx[j], p.node(junction_idx[j], en.ELEVATION))
                             for j in members] for g, members in groups.items()}

    def _level_controls(self) -> dict[str, tuple[LevelControl, ...]]:
        """Controlled links whose every control is a tank-level control on open/closed
        status: link id -> its controls.  (Links with time controls or rules are absent.)"""
        p, L = self._p, self._len
        tank_pos = {idx: k for k, idx in enumerate(self._tank_idx)}
        link_pos = {idx: j for j, (idx, _) in enumerate(self._ctl)}
        found: dict[int, list[LevelControl]] = {}
        raw: dict[int, list[tuple]] = {}
        bad: set[int] = set()
        for i in range(1, p.count(en.CONTROLCOUNT) + 1):
            kind, link, setting, node, level = p.control(i)
            if link not in link_pos:
                continue
            j = link_pos[link]
            if kind in (0, 1) and node in tank_pos and setting in (0.0, 1.0):
                found.setdefault(j, []).append(LevelControl(
                    tank_pos[node], kind == 1, level * L, setting > 0))
                raw.setdefault(j, []).append((i, kind, link, setting, node, level))
            else:
                bad.add(j)
        for r in range(1, p.count(en.RULECOUNT) + 1):
            bad.update(link_pos[x] for x in p.rule_links(r) if x in link_pos)
        self._held_controls = [c for j, cs in sorted(raw.items()) if j not in bad for c in cs]
        self._holding = False
        return {self.controlled[j]: tuple(c) for j, c in sorted(found.items()) if j not in bad}

    def _hold(self, hold: bool) -> None:
        """Suspend (or restore) the level controls of ``level_controls`` links, so a
        window keeps those links in the state it starts them in."""
        if hold == self._holding:
            return
        for i, kind, link, setting, node, level in self._held_controls:
            lo, hi = self._tank_lim[self._tank_idx.index(node)]
            off = hi if kind == 1 else lo  # a tank is never above its maximum nor below its minimum
            self._p.set_control(i, kind, link, setting, node, off if hold else level)
        self._holding = hold

    def close(self) -> None:
        self._p.close()

    def __enter__(self) -> "Twin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public runs -------------------------------------------------------------------
    def run(self, speeds: np.ndarray | None, *, horizon_s: int, period_s: int,
            initial_levels_m: Sequence[float] | None = None,
            demand_multipliers: Mapping[str, np.ndarray] | None = None,
            record_link_states: bool = False) -> SimulationResult:
        """Simulate ``horizon_s`` from time 0.  ``speeds`` is (periods, scheduled)."""
        n = horizon_s // period_s
        if speeds is not None and speeds.shape != (n, len(self.scheduled)):
            raise NetworkInputError(f"speeds shape {speeds.shape}, expected {(n, len(self.scheduled))}")
        levels = (initial_levels_m if initial_levels_m is not None
                  else [t.init_level_m for t in self.network.tanks])
        return self._run(0, horizon_s, period_s, levels,
                         lambda k: None if speeds is None else speeds[k],
                         None, demand_multipliers or {}, record_link_states)

    def run_window(self, start_s: int, duration_s: int, levels_m: Sequence[float],
                   speeds: np.ndarray | None, *, link_states: np.ndarray | None = None,
                   demand_multipliers: Mapping[str, float] | None = None,
                   hold_links: bool = False) -> SimulationResult:
        """Simulate ``duration_s`` from ``start_s`` with tank levels ``levels_m`` and the
        scheduled pumps held at ``speeds``; controlled links start at ``link_states``
        and, with ``hold_links``, the level-controlled ones stay there."""
        mult = {z: np.array([v]) for z, v in (demand_multipliers or {}).items()}
        self._hold(hold_links)
        try:
            return self._run(start_s, duration_s, duration_s, levels_m, lambda k: speeds,
                             link_states, mult, False)
        finally:
            self._hold(False)

    # -- the loop ----------------------------------------------------------------------
    def _run(self, start_s, duration_s, period_s, levels_m, speeds_at, link_states,
             multipliers, record_link_states) -> SimulationResult:
        p, L, Q = self._p, self._len, self._q
        p.set_time(en.DURATION, duration_s)
        p.set_time(en.PATTERNSTART, self._t0[en.PATTERNSTART] + start_s)
        p.set_time(en.STARTTIME, (self._t0[en.STARTTIME] + start_s) % 86400)
        p.set_time(en.REPORTSTART, 0)
        p.set_time(en.REPORTSTEP, math.gcd(int(period_s), int(self._t0[en.HYDSTEP])))
        for k, idx in enumerate(self._tank_idx):
            lo, hi = self._tank_lim[k]
            p.set_node(idx, en.TANKLEVEL, min(max(levels_m[k] / L, lo), hi))
        p.set_option(en.DEMANDMULT, self._dmult0)
        p.warnings.clear()
        p.init_hydraulics()
        for k in self._oos_pos:
            p.set_link(self._pump_idx[k], en.SETTING, 0.0)
        if link_states is not None:
            self._apply_link_states(link_states)
        n_t, n_p = len(self._tank_idx), len(self._pump_idx)
        rows_t, rows_q, rows_w, rows_s, rows_st, rows_h = [], [], [], [], [], []
        times, pmin = [], {g: [] for g in self._pgroups}
        states = []
        period = -1
        t = 0
        while True:
            boundary = t < duration_s and t // period_s != period
            if boundary:
                period = t // period_s
                self._apply_period(speeds_at(period), multipliers, period)
            t = p.run_step()
            if boundary and record_link_states:
                states.append(self._link_states())
            times.append(t)
            rows_t.append([(p.node(i, en.HEAD) - e) * L
                           for i, e in zip(self._tank_idx, self._tank_elev)])
            rows_q.append([p.link(i, en.FLOW) * Q for i in self._pump_idx])
            rows_w.append([p.link(i, en.ENERGY) for i in self._pump_idx])
            if not self.lean:
                rows_s.append([p.link(i, en.SETTING) for i in self._pump_idx])
                rows_st.append([p.link(i, en.PUMP_STATE) for i in self._pump_idx])
                rows_h.append([-p.link(i, en.HEADLOSS) * L for i in self._pump_idx])
            for g, members in self._pgroups.items():
                pmin[g].append(min(((p.node(i, en.HEAD) - e) * L for i, e in members),
                                   default=math.nan))
            step = p.next_step()
            if step == 0:
                break
            t += step
        times_a = np.array(times, dtype=float)
        step_a = np.append(np.diff(times_a), 0.0)
        return SimulationResult(
            tank_ids=self.network.tank_ids, pump_ids=self.network.pump_ids,
            start_s=int(start_s), horizon_s=int(duration_s), period_s=int(period_s),
            times_s=times_a + start_s, step_s=step_a,
            tank_level_m=np.array(rows_t).reshape(-1, n_t),
            pump_flow_m3s=np.array(rows_q).reshape(-1, n_p),
            pump_power_kw=np.array(rows_w).reshape(-1, n_p),
            pump_speed=_or_nan(rows_s, len(times), n_p),
            pump_state=np.array(rows_st, dtype=int).reshape(-1, n_p) if rows_st
            else np.full((len(times), n_p), -1),
            pump_head_m=_or_nan(rows_h, len(times), n_p),
            min_pressure_m={g: np.array(v) for g, v in pmin.items()},
            link_states=np.array(states) if record_link_states else None,
            warnings=tuple(_WARNINGS.get(c, f"EPANET warning {c}") for c in sorted(p.warnings)),
        )

    def _apply_period(self, speeds, multipliers, period) -> None:
        p = self._p
        if speeds is not None:
            for k, s in zip(self._sched_pos, speeds):
                p.set_link(self._pump_idx[k], en.SETTING, float(s))
        for zone, values in multipliers.items():
            m = float(values[period])
            if zone == ALL_JUNCTIONS:
                p.set_option(en.DEMANDMULT, self._dmult0 * m)
                continue
            for j, bases in self._zones[zone]:
                for c, base in enumerate(bases, start=1):
                    p.set_demand(j, c, base * m)

    def _link_states(self) -> list[float]:
        p = self._p
        return [p.link(i, en.SETTING) if is_pump else p.link(i, en.STATUS)
                for i, is_pump in self._ctl]

    def _apply_link_states(self, states) -> None:
        p = self._p
        for (i, is_pump), v in zip(self._ctl, states):
            p.set_link(i, en.SETTING if is_pump else en.STATUS, float(v))


def _or_nan(rows, n: int, cols: int) -> np.ndarray:
    return np.array(rows).reshape(-1, cols) if rows else np.full((n, cols), np.nan)


def simulate(network: Network, scenario: Scenario | None = None, *,
             pressure_groups: Mapping[str, Sequence[str]] | None = None) -> SimulationResult:
    """Run ``scenario`` (default: the network as it is) on ``network``; pure apart from
    a private temporary directory."""
    sc = (scenario or Scenario()).resolved(network)
    groups = pressure_groups
    if groups is None:
        groups = dict(sc.zones) or {ALL_JUNCTIONS: network.junctions}
    with Twin(network, scheduled=sc.scheduled, out_of_service=sorted(sc.out_of_service),
              zones=sc.zones, pressure_groups=groups) as twin:
        levels = [sc.initial_levels_m[t] for t in network.tank_ids]
        speeds = sc.speeds if sc.has_schedule else None
        return twin.run(speeds, horizon_s=sc.horizon_s, period_s=sc.period_s,
                        initial_levels_m=levels, demand_multipliers=sc.demand_multipliers)
