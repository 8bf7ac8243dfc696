"""The optimiser: surrogate MILP, EPANET verification, refinement, local polish, fallback.

1. Simulate the network's own controls (the baseline) and take its pump behaviour as the
   first reference schedule.
2. Round after round: linearise the network around the reference (``surrogate.build``),
   solve the MILP (``milp.solve``), simulate its schedule in EPANET (``verify``).  The
   best schedule EPANET accepts is kept.  Where EPANET disagrees with the surrogate, the
   tank margins there grow by the disagreement; the next round re-linearises at the new
   schedule's simulated trajectory.  A round that returns its own reference has converged.
3. Polish the best schedule by local moves judged by EPANET alone (``polish``).
4. No accepted schedule: the result is the network's own controls, with the reason.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from processors.optimise import polish as _polish
from processors.optimise.milp import Margins, solve
from processors.optimise.problem import Problem, Result, SolverStats
from processors.optimise.reasons import explain
from processors.optimise.setup import Setup, resolve
from processors.optimise.surrogate import build, find_clusters
from processors.optimise.verify import Evaluation, Verifier
from processors.simulate.cost import total_cost
from processors.simulate.feasibility import check_feasibility
from processors.simulate.run import SimulationResult, Twin
from processors.simulate.scenario import ALL_JUNCTIONS

Progress = Callable[[str], None]


def optimise(problem: Problem, *, time_limit_s: float = 300.0,
             progress: Progress | None = None) -> Result:
    """Propose a pump schedule for ``problem``, verified in EPANET (see module docstring).

    ``time_limit_s`` guards the wall clock; the work itself is bounded by
    ``problem.effort`` (default: ``Effort.for_time_limit(time_limit_s)``), so the same
    problem gives the same schedule unless the guard cuts in (``stats.time_limited``).
    """
    t0 = time.monotonic()
    deadline = t0 + time_limit_s
    say = progress or (lambda _msg: None)
    setup = resolve(problem, time_limit_s)
    net = setup.network
    groups = dict(problem.zones) or {ALL_JUNCTIONS: net.junctions}
    oos = sorted(problem.out_of_service)
    with Twin(net, scheduled=setup.pumps, out_of_service=oos, zones=problem.zones) as twin, \
            Twin(net, out_of_service=oos, zones=problem.zones, pressure_groups=groups) as own:
        baseline = own.run(None, horizon_s=setup.horizon_s, period_s=setup.period_s,
                           initial_levels_m=setup.initial_m, demand_multipliers=setup.multipliers)
        base_cost = total_cost(problem.tariff, net, baseline)
        say(f"baseline (own controls): cost {base_cost:.2f}, "
            f"{'feasible' if _strict(setup, baseline, None).feasible else 'infeasible'}")
        twin.lean = True  # the loop needs levels, flows and power; the final run has all
        verifier = Verifier(setup, twin)
        search = _Search(setup, twin, verifier, deadline, say)
        best = search.run(schedule_from_run(setup, baseline))
        if best is not None:
            before = best.score
            best, gains = _polish.improve(setup, verifier, best, deadline)
            search.polish_gains += gains
            if gains:
                say(f"polish: {gains} improvements, cost {before:.3f} -> {best.score:.3f}")
        stats = search.stats(time.monotonic() - t0)
        if best is not None:
            final = _detailed(setup, twin, groups, best.speeds)
            report = _strict(setup, final, best.speeds)
            return Result("verified", "verified in EPANET extended-period simulation",
                          setup.pumps, setup.period_s, setup.horizon_s, best.speeds, final,
                          report, total_cost(problem.tariff, net, final),
                          float(final.energy_kwh().sum()), baseline, base_cost,
                          _strict(setup, baseline, None),
                          explain(setup, best.speeds, final, search.last_surrogate), stats)
        why = search.failure or "no schedule passed the EPANET check"
        own_speeds = schedule_from_run(setup, baseline)
        report = _strict(setup, baseline, None)
        say(f"infeasible: {why}; fallback: the network's own controls")
        return Result("fallback", f"infeasible because {why}; fallback: the network's own "
                      f"controls", setup.pumps, setup.period_s, setup.horizon_s, own_speeds,
                      baseline, report, base_cost, float(baseline.energy_kwh().sum()), baseline,
                      base_cost, report,
                      tuple(tuple("network's own controls (no verified schedule)"
                                  for _ in setup.pumps) for _ in range(setup.periods)), stats)


class _Search:
    """The verify loop's state (best schedule, margins, statistics)."""

    def __init__(self, setup: Setup, twin: Twin, verifier: Verifier, deadline: float,
                 say: Progress) -> None:
        self.setup, self.twin, self.verifier = setup, twin, verifier
        self.deadline, self.say = deadline, say
        self.rounds = self.nodes = 0
        self.mip_time = 0.0
        self.last = None
        self.last_surrogate = None
        self.time_limited = False
        self.failure: str | None = None
        self.history: list[str] = []
        self.polish_gains = 0
        self.repairs = 0

    def run(self, reference: np.ndarray) -> Evaluation | None:
        """Trust-region sequence of MILPs around an EPANET-simulated reference."""
        s, say = self.setup, self.say
        ref = self.verifier.evaluate(reference)
        best = ref if ref.accepted else None
        links = list(self.twin.level_controls)
        clusters = find_clusters(s, self.twin, s.initial_m)
        names = list(s.pumps) + links
        say("clusters: " + ", ".join("+".join(names[k] for k in c) for c in clusters))
        base = Margins.initial(s, len(links))
        margins = base.copy()
        full = s.periods * len(clusters)
        radius: int | None = None  # trust region (cluster-periods changed), open at first
        sur = None
        first = True
        r = attempts = 0
        while r < s.effort.rounds and attempts < 3 * s.effort.rounds:
            attempts += 1
            left = self.deadline - time.monotonic()
            if left < 5.0:
                self.time_limited = True
                break
            if first:
                first = False
                sur, sol = self._first(clusters, ref, margins)
            else:
                if sur is None:
                    sur = build(s, self.twin, clusters, ref.speeds, ref.sim)
                sol = self._solve(sur, margins, radius, ref)
            self.last_surrogate = sur
            self.last = sol
            if sol.speeds is None:
                self.history.append(f"MILP {sol.status} (radius {radius})")
                say(f"MILP {sol.status} (radius {radius}): "
                    f"{'opening the trust region' if radius is not None else 'easing margins'}")
                if radius is not None:
                    radius = None
                elif margins.relax_towards(base):
                    pass
                else:
                    self.failure = (f"the surrogate model finds no schedule within the tank "
                                    f"bounds and operating rules ({sol.status})")
                    break
                continue
            r += 1
            self.rounds += 1
            if sol.slack_m3 > 1e-3:
                self.failure = (f"the surrogate model finds no schedule within the tank "
                                f"bounds and operating rules (short by {sol.slack_m3:.1f} m3)")
            raw = ev = self.verifier.evaluate(sol.speeds)
            if not ev.accepted:
                fixed = _polish.repair(s, self.verifier, ev, sur, self.deadline,
                                       s.effort.repair_evaluations)
                if fixed is not None:
                    ev = fixed
                    self.repairs += 1
            moved = _changes(sol.speeds, ref.speeds, s, clusters)
            tag = "accepted" if ev.accepted else f"rejected ({ev.why})"
            if raw is not ev:
                tag = f"repaired from {raw.cost:.3f} ({_short(raw.why, 60)}) to {ev.cost:.3f}"
            if ev.accepted and s.effort.round_polish_evaluations:
                polished, gains = _polish.improve(s, self.verifier, ev, self.deadline,
                                                  s.effort.round_polish_evaluations)
                if gains:
                    tag += f", polished to {polished.cost:.3f}"
                    self.polish_gains += gains
                    ev = polished
            self.history.append(f"round {r}: radius {radius}, {moved} changes, surrogate "
                                f"{sol.objective:.3f} bound {_fmt(sol.bound)}; EPANET cost "
                                f"{ev.cost:.3f}, {tag}")
            say(f"round {r}: MILP {sol.objective:.3f} (bound {_fmt(sol.bound)}, "
                f"{sol.time_s:.1f} s, {moved} changes); EPANET {ev.cost:.3f} "
                f"{tag if ev.accepted else 'rejected: ' + _short(ev.why)}")
            if ev.accepted and (best is None or ev.score < best.score - 1e-9):
                best = ev
            if not ev.accepted:
                self.failure = ev.why
            if raw.accepted:
                margins.relax_towards(base, keep=0.7)
            else:
                _grow(margins, raw, sol, s, self.twin, links)
            if moved == 0:
                if ev.accepted:
                    break  # the MILP keeps its reference: converged
                continue  # grown margins must move it
            if _merit(ev) < _merit(ref):
                ref, sur = ev, None
                # after the open first step, steps stay near the new reference (where its
                # linearisation holds) and lengthen while they succeed
                radius = max(2, full // 10) if radius is None else min(2 * radius, full)
            else:
                radius = max(moved // 2, 0) if radius is None else min(radius, moved) // 2
                if radius < 1:
                    break
        if best is not None:
            self.failure = None
        return best

    def _solve(self, sur, margins: Margins, radius, ref: Evaluation):
        """The MILP with hard tank bounds; when it has no schedule (proven, or none found
        within the node limit), the same model with soft bounds, which always has one and
        says how far outside the bounds the surrogate must go."""
        s, left = self.setup, self.deadline - time.monotonic()
        kw = dict(radius=radius, start_speeds=ref.speeds if ref.accepted else None,
                  link_controls=self.twin.level_controls)
        sol = solve(s, sur, margins, time_limit_s=0.5 * left, **kw)
        if sol.speeds is None and not sol.time_limited:
            self._account(sol)
            self.say(f"MILP {sol.status} without a schedule: solving with soft tank bounds")
            sol = solve(s, sur, margins, time_limit_s=0.5 * left, soft=True, **kw)
        self._account(sol)
        return sol

    def _account(self, sol) -> None:
        self.nodes += sol.nodes
        self.mip_time += sol.time_s
        self.time_limited |= sol.time_limited

    def _first(self, clusters, ref: Evaluation, margins: Margins):
        """The first round linearises around up to three guesses of the day's levels --
        the initial levels held, the reference run's (kept a tenth of each range inside
        the bounds, where EPANET does not clamp), and a cycle through mid-range -- until
        EPANET accepts the MILP's schedule, keeping the best.  A single linear response to
        the levels holds near its point only, and no one guess suits every network."""
        s = self.setup
        guesses = [np.tile(s.initial_m, (s.periods + 1, 1)), _inside(s, ref.sim), _neutral(s)]
        kept, best = [], None
        for levels in guesses:
            if any(np.allclose(levels, k, atol=1e-3) for k in kept):
                continue
            kept.append(levels)
            sur = build(s, self.twin, clusters, ref.speeds, ref.sim, levels_m=levels)
            sol = self._solve(sur, margins, None, ref)
            if sol.speeds is None:
                continue
            ev = self.verifier.evaluate(sol.speeds)
            key = (_merit(ev), sol.slack_m3)
            if best is None or key < best[0]:
                best = (key, sur, sol)
            if ev.accepted or time.monotonic() > self.deadline - 10.0:
                break
        if best is None:
            return build(s, self.twin, clusters, ref.speeds, ref.sim, levels_m=kept[0]), sol
        return best[1], best[2]

    def stats(self, wall: float) -> SolverStats:
        sol = self.last
        # every wall-clock guard (loop, HiGHS, repair, polish) acts within 5 s of the
        # deadline: ending that close means one may have cut the work short
        self.time_limited |= time.monotonic() > self.deadline - 5.0
        return SolverStats(
            objective=None if sol is None else sol.objective,
            bound=None if sol is None else sol.bound,
            gap=None if sol is None else sol.gap,
            mip_time_s=self.mip_time, wall_time_s=wall, rounds=self.rounds,
            mip_nodes=self.nodes, evaluations=self.verifier.count,
            polish_improvements=self.polish_gains, time_limited=self.time_limited,
            effort=self.setup.effort, history=tuple(self.history))


def _inside(setup: Setup, sim: SimulationResult) -> np.ndarray:
    """(periods + 1, tanks) the run's levels at period starts, at least a tenth of each
    tank's range inside its bounds."""
    span = setup.upper_m - setup.lower_m
    return np.clip(sim.levels_at_period_starts(), setup.lower_m + 0.1 * span,
                   setup.upper_m - 0.1 * span)


def _neutral(setup: Setup) -> np.ndarray:
    """(periods + 1, tanks) levels from the initial ones through mid-range and back."""
    mid = (setup.lower_m + setup.upper_m) / 2
    bend = np.sin(np.pi * np.arange(setup.periods + 1) / setup.periods)[:, None]
    return setup.initial_m + (mid - setup.initial_m) * bend


def _merit(ev: Evaluation) -> tuple:
    """Order of preference: accepted, then less violation, then lower cost."""
    return (0, 0.0, ev.score) if ev.accepted else (1, ev.violation, ev.score)


def _changes(a: np.ndarray, b: np.ndarray, setup: Setup, clusters) -> int:
    """Cluster-periods whose pump speeds differ between two schedules."""
    P = len(setup.pumps)
    total = 0
    for c in clusters:
        cols = [m for m in c if m < P]
        if cols:
            total += int(np.any(a[:, cols] != b[:, cols], axis=1).sum())
    return total


def _grow(margins: Margins, ev: Evaluation, sol, setup: Setup, twin: Twin, links) -> None:
    """Widen the margins where EPANET found the tanks outside the surrogate's bounds, and
    around a control level where a link's state differed from the one the MILP relied on."""
    span = setup.upper_m - setup.lower_m
    levels = ev.sim.levels_at_period_starts()
    predicted = np.column_stack([setup.tanks[i].level_m(sol.predicted_volume_m3[:, i])
                                 for i in range(len(setup.tanks))])
    # EPANET holds an empty tank at its minimum, hiding the deficit: widen by the
    # surrogate's error there, at least 1 % of the tank's range, at most 5 % per round
    error = np.maximum(predicted[1:] - levels[1:], 0.0)
    grow = np.clip(1.5 * error, 0.01 * span, 0.05 * span)
    for p, i in zip(*np.nonzero(ev.low_by_m > 0)):
        lo, hi = max(p - 1, 0), min(p + 2, setup.periods)
        margins.low[lo:hi, i] += grow[p, i]
    error = np.maximum(levels[1:] - predicted[1:], 0.0)
    grow = np.clip(1.5 * error, 0.01 * span, 0.05 * span)
    for p, i in zip(*np.nonzero(ev.high_by_m > 0)):
        lo, hi = max(p - 1, 0), min(p + 2, setup.periods)
        margins.high[lo:hi, i] += grow[p, i]
    short = ev.final_short_m > 0
    margins.final += short * np.clip(1.5 * ev.final_short_m, 0.005 * span, 0.15 * span)
    if not links or sol.link_open is None or ev.sim.link_states is None:
        return
    cols = [twin.controlled.index(l) for l in links]
    actual = ev.sim.link_states[:, cols] > 0
    for j, link in enumerate(links):
        tanks = sorted({c.tank for c in twin.level_controls[link]})
        bad = np.where(actual[:, j] != (sol.link_open[:, j] > 0.5))[0]
        for t in bad[:1]:  # the first disagreement; later ones follow from it
            err = max(float(abs(levels[t, i] - predicted[t, i])) for i in tanks)
            span = min(setup.upper_m[i] - setup.lower_m[i] for i in tanks)
            lo, hi = max(t - 1, 0), min(t + 2, setup.periods)
            margins.link[lo:hi, j] += min(0.5 * err + 0.01, 0.05 * span)


def schedule_from_run(setup: Setup, sim: SimulationResult) -> np.ndarray:
    """(periods, scheduled pumps) speeds a simulated run shows, snapped to allowed speeds."""
    ids = setup.network.pump_ids
    cols = [ids.index(p) for p in setup.pumps]
    running = sim.period_running()[:, cols]
    mean_speed = sim.period_sum(sim.pump_speed)[:, cols] / setup.period_s
    out = np.zeros((setup.periods, len(setup.pumps)))
    for k, rule in enumerate(setup.rules):
        allowed = np.array(rule.speeds)
        for t in range(setup.periods):
            if running[t, k]:
                out[t, k] = allowed[np.argmin(np.abs(allowed - max(mean_speed[t, k], 1e-3)))]
    return out


def _detailed(setup: Setup, twin: Twin, groups, speeds: np.ndarray) -> SimulationResult:
    """The proposed schedule's run with pressures per zone, for the operator."""
    net = setup.network
    with Twin(net, scheduled=setup.pumps, out_of_service=sorted(setup.problem.out_of_service),
              zones=setup.problem.zones, pressure_groups=groups) as t:
        return t.run(speeds, horizon_s=setup.horizon_s, period_s=setup.period_s,
                     initial_levels_m=setup.initial_m, demand_multipliers=setup.multipliers)


def _strict(setup: Setup, sim: SimulationResult, speeds: np.ndarray | None):
    sched = None if speeds is None else {p: speeds[:, k] for k, p in enumerate(setup.pumps)}
    return check_feasibility(setup.network, sim, setup.feasibility_rules(0.0), sched,
                             dict(zip(setup.network.tank_ids, setup.initial_m)))


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
