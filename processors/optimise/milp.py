"""The mixed-integer model on the surrogate, solved with HiGHS.

Variables: one binary per cluster option and period (exactly one chosen), tank volumes at
period ends (m3), and start/stop indicators per pump and period.  Constraints: surrogate
mass balance (reference change + option effects + linear level response), tank bounds
tightened by per-period margins (and by the extra draw of the upper-quantile demand),
final-level targets, starts/switches caps, minimum run and rest times, forbidden periods,
pumps that may not run together.  Objective: surrogate cost + a stability penalty for
changing the released schedule in the near periods + a tie-breaking cost per start.

Deterministic: one thread, a fixed seed, a node limit; the wall-clock limit is a guard
whose use is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from processors.optimise.setup import GUARD_M, Setup
from processors.optimise.model import Cols, Rows, link_logic, option_level_terms
from processors.optimise.surrogate import Surrogate


@dataclass
class Margins:
    """Tightening of the surrogate's tank bounds, m: (periods, tanks) at period ends;
    ``link``: (periods, modelled links) distance kept from a control's level when the
    MILP relies on the link's state."""

    low: np.ndarray
    high: np.ndarray
    final: np.ndarray
    link: np.ndarray

    @classmethod
    def initial(cls, setup: Setup, links: int = 0) -> "Margins":
        span = setup.upper_m - setup.lower_m
        base = np.minimum(0.002 * span, 0.01)
        T = setup.periods
        return cls(np.tile(base, (T, 1)), np.tile(base, (T, 1)), base.copy(),
                   np.full((T, links), 0.01))

    def copy(self) -> "Margins":
        return Margins(self.low.copy(), self.high.copy(), self.final.copy(), self.link.copy())

    def relax_towards(self, base: "Margins", keep: float = 0.5) -> bool:
        """Move each margin ``keep`` of the way back to ``base``; False if already there."""
        moved = False
        for name in ("low", "high", "final", "link"):
            a, b = getattr(self, name), getattr(base, name)
            if not np.allclose(a, b, atol=1e-5):
                moved = True
                setattr(self, name, b + keep * (a - b))
        return moved


@dataclass
class MilpSolution:
    status: str
    speeds: np.ndarray | None
    objective: float | None
    bound: float | None
    gap: float | None
    nodes: int
    time_s: float
    time_limited: bool
    predicted_volume_m3: np.ndarray | None  # (periods + 1, tanks)
    link_open: np.ndarray | None = None  # (periods, modelled links) states the MILP relies on
    slack_m3: float = 0.0  # tank-bound violation the surrogate could not avoid


# Options on top of the defaults (a module constant, so a run is reproducible from its
# inputs; for HiGHS' log set "output_flag": True while investigating).
HIGHS_OPTIONS: dict = {"mip_heuristic_effort": 0.25}


def solve(setup: Setup, sur: Surrogate, margins: Margins, *, time_limit_s: float,
          radius: int | None = None, start_speeds: np.ndarray | None = None,
          link_controls: dict | None = None, soft: bool = False) -> MilpSolution:
    """Solve the MILP; ``radius`` caps the cluster-period options changed from the
    surrogate's reference (a trust region), ``start_speeds`` is offered as a MIP start,
    ``soft`` turns the tank bounds and targets into penalised slacks."""
    import highspy

    T, nt, npump = setup.periods, len(setup.tanks), len(setup.pumps)
    inf = math.inf
    cols, rows = Cols(), Rows()
    eps_start = 1e-3 * (abs(sur.cost_ref).mean() + 1e-3) / max(npump, 1)
    # option binaries; "on" of each pump and "open" of each modelled link as sums of them
    P = npump
    y = []
    on_terms: list[list[list[tuple[int, float]]]] = [[[] for _ in range(T)] for _ in range(npump)]
    open_terms = [[[] for _ in range(T)] for _ in sur.links]
    for g, (cl, opts) in enumerate(zip(sur.clusters, sur.options)):
        yg = np.zeros((T, len(opts)), dtype=int)
        for t in range(T):
            for o in range(len(opts)):
                allowed = all(not (opts[o, kk] > 0 and t in setup.rules[m].forbidden_periods)
                              for kk, m in enumerate(cl) if m < P)
                # the links' state in the first period follows from the initial levels
                allowed &= t > 0 or all(opts[o, kk] == opts[sur.ref_option[0, g], kk]
                                        for kk, m in enumerate(cl) if m >= P)
                yg[t, o] = cols.add(0.0, 1.0 if allowed else 0.0, sur.dcost_opt[g][t, o], True)
                for kk, m in enumerate(cl):
                    if opts[o, kk] > 0:
                        (on_terms[m] if m < P else open_terms[m - P])[t].append((yg[t, o], 1.0))
            rows.add([(yg[t, o], 1.0) for o in range(len(opts))], 1.0, 1.0)
        y.append(yg)
    # volumes at period ends
    tanks = setup.tanks
    v0 = np.array([setup.volume(i, setup.initial_m[i]) for i in range(nt)])
    cum_extra = np.cumsum(sur.extra_draw, axis=0)
    # volumes enter the solver as fractions of each tank's range (better conditioning)
    vscale = np.array([max(float(t.volume_m3(t.max_level_m) - t.volume_m3(t.min_level_m)), 1e-3)
                       for t in tanks])
    # With ``soft``, bounds and targets take a slack (m3) at a penalty far above any
    # pumping cost: every branch stays feasible, so HiGHS always finds a schedule; slack
    # left in it means the surrogate sees none within the bounds.
    penalty = 1e4 * (float(np.abs(sur.cost_ref).max()) + 1.0)  # per tank range
    slacks: list[int] = []
    v = np.zeros((T + 1, nt), dtype=int)
    for t in range(1, T + 1):
        for i, tank in enumerate(tanks):
            lo_m = setup.lower_m[i] + GUARD_M + margins.low[t - 1, i]
            hi_m = setup.upper_m[i] - GUARD_M - margins.high[t - 1, i]
            lo = float(tank.volume_m3(lo_m)) + cum_extra[t - 1, i]
            hi = float(tank.volume_m3(hi_m))
            if t == T:
                tgt = setup.target_m[i] + GUARD_M / 10 + margins.final[i]
                lo = max(lo, float(tank.volume_m3(min(tgt, hi_m))))
            lo = min(lo, hi)
            cost = sur.sens_cost[t, i] if t < T else 0.0
            if not soft:
                v[t, i] = cols.add(lo, hi, cost, scale=vscale[i])
                continue
            v[t, i] = cols.add(float(tank.volume_m3(tank.min_level_m)),
                               float(tank.volume_m3(tank.max_level_m)), cost, scale=vscale[i])
            s_lo = cols.add(0.0, inf, penalty / vscale[i], scale=vscale[i])
            s_hi = cols.add(0.0, inf, penalty / vscale[i], scale=vscale[i])
            slacks += [s_lo, s_hi]
            rows.add([(v[t, i], 1.0), (s_lo, 1.0)], lo, inf, scale=vscale[i])
            rows.add([(v[t, i], 1.0), (s_hi, -1.0)], -inf, hi, scale=vscale[i])
    # each option's own response to levels: w = y * (v_j - v_ref_j), exact for binary y
    w_terms = option_level_terms(setup, sur, cols, rows, y, v, v0, vscale)
    # mass balance
    for t in range(T):
        for i in range(nt):
            terms = [(v[t + 1, i], 1.0)]
            rhs = sur.dv_ref[t, i]
            for j in range(nt):
                s = sur.sens_v[t, i, j]
                if abs(s) * vscale[j] < 1e-7 * vscale[i]:
                    continue
                if t == 0:
                    rhs += s * (v0[j] - sur.v_ref[0, j])
                else:
                    terms.append((v[t, j], -s))
                    rhs -= s * sur.v_ref[t, j]
            if t == 0:
                rhs += v0[i]
            else:
                terms.append((v[t, i], -1.0))
            for g, yg in enumerate(y):
                d = sur.dv_opt[g][t, :, i]
                terms.extend((yg[t, o], -d[o]) for o in range(len(d))
                             if abs(d[o]) > 1e-7 * vscale[i])
            terms.extend((col, -coef[i]) for col, coef in w_terms.get(t, ()))
            rows.add(terms, rhs, rhs, scale=vscale[i])
    # starts, stops, switching, minimum run and rest
    const = float(sur.cost_ref.sum()) - sum(sur.sens_cost[t] @ sur.v_ref[t] for t in range(1, T))
    for k, rule in enumerate(setup.rules):
        on = on_terms[k]
        st = [cols.add(0.0, 1.0, eps_start) for _ in range(T)]
        sp = [cols.add(0.0, 1.0, 0.0) for _ in range(T)]
        # st[t] = 1 exactly when the pump starts in t (on in the first period counts);
        # sp[t] = 1 exactly when it stops in t
        rows.add([(st[0], 1.0)] + [(c, -a) for c, a in on[0]], 0.0, 0.0)
        for t in range(1, T):
            rows.add([(st[t], 1.0), ] + [(c, -a) for c, a in on[t]] + on[t - 1], 0.0, inf)
            rows.add([(st[t], 1.0)] + [(c, -a) for c, a in on[t]], -inf, 0.0)
            rows.add([(st[t], 1.0)] + on[t - 1], -inf, 1.0)
            rows.add([(sp[t], 1.0)] + [(c, -a) for c, a in on[t - 1]] + on[t], 0.0, inf)
            rows.add([(sp[t], 1.0)] + [(c, -a) for c, a in on[t - 1]], -inf, 0.0)
            rows.add([(sp[t], 1.0)] + on[t], -inf, 1.0)
        if rule.max_starts is not None:
            terms = ([(st[t], 1.0) for t in range(1, T)] + [(sp[t], 1.0) for t in range(1, T)]
                     if rule.count_transitions else [(st[t], 1.0) for t in range(T)])
            rows.add(terms, -inf, float(rule.max_starts))
        # minimum run (every run, the last included) and rest (between runs), in the
        # tight turn-on/turn-off form: on[t] >= starts in the last U periods
        up = math.ceil(rule.min_on_s / setup.period_s - 1e-9)
        if up > 1:
            for t in range(T):
                rows.add([(c, -a) for c, a in on[t]] + [(st[tau], 1.0)
                                                        for tau in range(max(0, t - up + 1), t + 1)],
                         -inf, 0.0)
            for t in range(max(0, T - up + 1), T):
                cols.hi[st[t]] = 0.0  # a run started here would be cut short by the end
        down = math.ceil(rule.min_off_s / setup.period_s - 1e-9)
        if down > 1:
            for t in range(1, T):
                rows.add(on[t] + [(sp[tau], 1.0) for tau in range(max(1, t - down + 1), t + 1)],
                         -inf, 1.0)
        # stability: changing the released status in the near periods costs the penalty
        if setup.released is not None and setup.problem.stability_penalty > 0:
            pen = setup.problem.stability_penalty
            for t in range(min(setup.problem.stability_periods, T)):
                if setup.released[t, k] > 0:
                    const += pen
                    for c, a in on[t]:
                        cols.cost[c] -= pen * a
                else:
                    for c, a in on[t]:
                        cols.cost[c] += pen * a
    link_logic(setup, sur, rows, v, open_terms, link_controls or {}, margins.link)
    if radius is not None:  # trust region around the reference
        terms = [(y[g][t, sur.ref_option[t, g]], -1.0) for g in range(len(y)) for t in range(T)]
        rows.add(terms, -inf, float(radius) - T * len(y))
    pos = {p: k for k, p in enumerate(setup.pumps)}
    for a, b in setup.problem.exclusive_pumps:
        for t in range(T):
            rows.add(on_terms[pos[a]][t] + on_terms[pos[b]][t], -inf, 1.0)
    # model
    lp = highspy.HighsLp()
    nc, nr = len(cols.lo), len(rows.lo)
    cs, rs = np.array(cols.scale), np.array(rows.scale)
    lp.num_col_, lp.num_row_ = nc, nr
    lp.col_cost_ = np.array(cols.cost) * cs
    lp.col_lower_ = np.array(cols.lo) / cs
    lp.col_upper_ = np.array(cols.hi) / cs
    lp.row_lower_ = np.array(rows.lo) / rs
    lp.row_upper_ = np.array(rows.hi) / rs
    lp.offset_ = const
    r_idx, c_idx = np.array(rows.r, dtype=int), np.array(rows.c, dtype=int)
    vals = np.array(rows.v) * cs[c_idx] / rs[r_idx] if rows.v else np.array(rows.v)
    start, index, value = _colwise(r_idx, c_idx, vals, nr, nc)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = start
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = nc, nr
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                       for i in cols.integer]
    h = _highs(highspy)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", int(setup.effort.seed))
    h.setOptionValue("mip_max_nodes", int(setup.effort.mip_nodes))
    h.setOptionValue("mip_rel_gap", float(setup.effort.mip_rel_gap))
    h.setOptionValue("time_limit", float(max(time_limit_s, 1.0)))
    for key, value in HIGHS_OPTIONS.items():
        h.setOptionValue(key, value)
    h.passModel(lp)
    if start_speeds is not None:
        _set_start(h, setup, sur, y, start_speeds, nc)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    name = h.modelStatusToString(status)
    nodes = int(getattr(info, "mip_node_count", 0))
    limited = status == highspy.HighsModelStatus.kTimeLimit
    if info.primal_solution_status != 2:  # no feasible point
        return MilpSolution(name, None, None, _num(info.mip_dual_bound), None, nodes,
                            h.getRunTime(), limited, None)
    x = np.array(h.getSolution().col_value) * cs
    speeds = np.zeros((T, npump))
    for g, (cl, opts) in enumerate(zip(sur.clusters, sur.options)):
        chosen = np.argmax(x[y[g]], axis=1)
        for kk, k in enumerate(cl):
            if k < P:
                speeds[:, k] = opts[chosen, kk]
    vol = np.vstack([v0, x[v[1:]]])
    slack_m3 = float(x[slacks].sum()) if slacks else 0.0
    link_open = np.array([[sum(x[c] for c, _ in open_terms[j][t]) > 0.5
                           for j in range(len(sur.links))] for t in range(T)], dtype=float)
    return MilpSolution(name, speeds, float(info.objective_function_value),
                        _num(info.mip_dual_bound), _num(info.mip_gap), nodes, h.getRunTime(),
                        limited, vol, link_open.reshape(T, len(sur.links)), slack_m3)


def _colwise(r: np.ndarray, c: np.ndarray, v: np.ndarray, nr: int, nc: int):
    """Column-wise sparse storage of (row, column, value) triplets, duplicates summed."""
    key, inverse = np.unique(c.astype(np.int64) * nr + r, return_inverse=True)
    value = np.bincount(inverse.ravel(), weights=v, minlength=key.size)
    col = key // nr
    start = np.searchsorted(col, np.arange(nc + 1))
    return start.astype(np.int32), (key % nr).astype(np.int32), value


def _highs(highspy):
    """The HiGHS solver object.  The core class, not the ``Highs`` wrapper: the wrapper
    prints a banner on stdout at first construction, and callbacks are not needed."""
    core = getattr(getattr(highspy, "_core", None), "_Highs", None)
    return core() if core is not None else highspy.Highs()


def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _set_start(h, setup: Setup, sur: Surrogate, y, speeds: np.ndarray, nc: int) -> None:
    """Offer ``speeds`` as a MIP start (HiGHS completes or drops it)."""
    import highspy

    x = np.full(nc, np.nan)
    P = len(setup.pumps)
    for g, (cl, opts) in enumerate(zip(sur.clusters, sur.options)):
        pcols = [kk for kk, m in enumerate(cl) if m < P]
        pm = [m for m in cl if m < P]
        for t in range(setup.periods):
            gap = np.abs(opts[:, pcols] - speeds[t, pm]).sum(axis=1)
            gap += 1e-3 * (opts != opts[sur.ref_option[t, g]]).sum(axis=1)
            o = int(np.argmin(gap))
            x[y[g][t]] = 0.0
            x[y[g][t, o]] = 1.0
    sol = highspy.HighsSolution()
    ints = np.where(~np.isnan(x))[0]
    try:
        h.setSolution(len(ints), ints.astype(np.int32), x[ints])
    except TypeError:
        sol.col_value = list(np.nan_to_num(x))
        h.setSolution(sol)
