"""Building blocks of the MILP: columns and rows in model units with their solver
scaling, the option-level response terms and the level-controlled links' logic."""

from __future__ import annotations

import math

import numpy as np

from processors.optimise.setup import Setup
from processors.optimise.surrogate import Surrogate


class Cols:
    """Columns in model units; ``scale`` maps them to solver units (x = scale * x')."""

    def __init__(self) -> None:
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.cost: list[float] = []
        self.integer: list[int] = []
        self.scale: list[float] = []

    def add(self, lo, hi, cost=0.0, integer=False, scale=1.0) -> int:
        self.lo.append(lo)
        self.hi.append(hi)
        self.cost.append(cost)
        self.integer.append(1 if integer else 0)
        self.scale.append(scale)
        return len(self.lo) - 1


class Rows:
    """Rows in model units; each is divided by its ``scale`` for the solver."""

    def __init__(self) -> None:
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.scale: list[float] = []

    def add(self, terms, lo, hi, scale=1.0) -> None:
        row = len(self.lo)
        for col, coef in terms:
            if coef != 0.0:
                self.r.append(row)
                self.c.append(col)
                self.v.append(float(coef))
        self.lo.append(lo)
        self.hi.append(hi)
        self.scale.append(scale)


def option_level_terms(setup: Setup, sur: Surrogate, cols: Cols, rows: Rows, y, v, v0,
                        vscale) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Columns w = y[g,t,o] * (v[t,j] - v_ref[t,j]) (McCormick, exact for binary y) for the
    option responses that move a tank by at least 0.5 % of its range over tank j's range;
    returns per period the (column, effect on each tank's dv) pairs.  In the first period
    the levels are known, so the response goes straight onto the option's binary."""
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    if sur.sens_opt_v is None:
        return out
    T, inf = setup.periods, math.inf
    vmin = np.array([float(t.volume_m3(t.min_level_m)) for t in setup.tanks])
    vmax = vmin + vscale
    for g, yg in enumerate(y):
        for t in range(T):
            for o in range(yg.shape[1]):
                if o == sur.ref_option[t, g]:
                    continue
                for j in sur.affected[g]:
                    effect = sur.sens_opt_v[g][t, o, :, j]
                    if np.max(np.abs(effect) * vscale[j] / vscale) < 0.005:
                        continue
                    cost = sur.sens_opt_cost[g][t, o, j]
                    if t == 0:
                        shift = v0[j] - sur.v_ref[0, j]
                        out.setdefault(0, [])  # fold onto the binary's coefficients
                        sur_dv = effect * shift
                        out[0].append((yg[0, o], sur_dv))
                        cols.cost[yg[0, o]] += cost * shift
                        continue
                    lo, hi = vmin[j] - sur.v_ref[t, j], vmax[j] - sur.v_ref[t, j]
                    w = cols.add(lo, hi, cost, scale=vscale[j])
                    yc, vc = yg[t, o], v[t, j]
                    rows.add([(w, 1.0), (yc, -hi)], -inf, 0.0, scale=vscale[j])
                    rows.add([(w, 1.0), (yc, -lo)], 0.0, inf, scale=vscale[j])
                    rows.add([(w, 1.0), (vc, -1.0), (yc, -lo)], -inf, -sur.v_ref[t, j] - lo,
                             scale=vscale[j])
                    rows.add([(w, 1.0), (vc, -1.0), (yc, -hi)], -sur.v_ref[t, j] - hi, inf,
                             scale=vscale[j])
                    out.setdefault(t, []).append((w, effect))
    return out


def link_logic(setup: Setup, sur: Surrogate, rows: Rows, v, open_terms, controls,
                link_margin: np.ndarray) -> None:
    """Links opened and closed by tank-level controls: their state in period t follows the
    level at the period start (t >= 1), with the controls' hysteresis.  Where the model
    relies on a state, the level keeps ``link_margin`` (m) away from the control level
    that would flip it."""
    T, inf = setup.periods, math.inf
    for j, link in enumerate(sur.links):
        ctl = controls.get(link, ())
        opens = [c for c in ctl if c.opens]
        closes = [c for c in ctl if not c.opens]
        for t in range(1, T):
            z, zp = open_terms[j][t], open_terms[j][t - 1]
            for c in ctl:
                tank = setup.tanks[c.tank]
                # a state the control would flip needs the level clearly short of its level
                va = float(tank.volume_m3(c.level_m - link_margin[t, j] if c.above
                                          else c.level_m + link_margin[t, j]))
                big = float(tank.volume_m3(tank.max_level_m) - tank.volume_m3(tank.min_level_m)) + 1.0
                vt = v[t, c.tank]
                # the control's condition forces its state
                if c.above:  # level > a  =>  state = target
                    if c.opens:
                        rows.add([(vt, 1.0)] + [(col, -big) for col, _ in z], -inf, va, scale=big)
                    else:
                        rows.add([(vt, 1.0)] + [(col, big) for col, _ in z], -inf, va + big, scale=big)
                else:  # level < a  =>  state = target
                    if c.opens:
                        rows.add([(vt, 1.0)] + [(col, big) for col, _ in z], va, inf, scale=big)
                    else:
                        rows.add([(vt, 1.0)] + [(col, -big) for col, _ in z], va - big, inf, scale=big)
            # the state changes only when a control's condition holds
            for group, rising in ((opens, True), (closes, False)):
                if not group:  # nothing can make the change
                    terms = z + [(col, -1.0) for col, _ in zp]
                    rows.add(terms, -inf, 0.0) if rising else rows.add(terms, 0.0, inf)
                elif len(group) == 1:
                    c = group[0]
                    tank = setup.tanks[c.tank]
                    # a change needs the level clearly past the control level
                    va = float(tank.volume_m3(c.level_m + link_margin[t, j] if c.above
                                              else c.level_m - link_margin[t, j]))
                    big = float(tank.volume_m3(tank.max_level_m) - tank.volume_m3(tank.min_level_m)) + 1.0
                    change = (z + [(col, -1.0) for col, _ in zp] if rising
                              else zp + [(col, -1.0) for col, _ in z])
                    # change = 1  =>  condition holds at the period start
                    if c.above:
                        rows.add([(v[t, c.tank], 1.0)] + [(col, -big * a) for col, a in change],
                                 va - big, inf, scale=big)
                    else:
                        rows.add([(v[t, c.tank], 1.0)] + [(col, big * a) for col, a in change],
                                 -inf, va + big, scale=big)
