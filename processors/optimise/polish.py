"""Local improvement of a verified schedule, judged by EPANET alone.

The MILP works on a surrogate with safety margins; the last few percent often sit in
those margins.  Moves, tried in order of the cost they may save, first improvement wins,
then the moves are regenerated: trim a run at either end (or drop a one-period run),
shift a run one period earlier or later, run one speed lower (variable-speed pumps).
Every candidate must keep the operating rules and pass the same EPANET acceptance as the
loop's schedules.  The number of EPANET runs is bounded by ``Effort.polish_evaluations``.
"""

from __future__ import annotations

import time

import numpy as np

from processors.optimise.setup import Setup
from processors.optimise.surrogate import Surrogate, pump_effects
from processors.optimise.verify import Evaluation, Verifier
from processors.simulate.feasibility import PumpLimits, pump_check, runs


def improve(setup: Setup, verifier: Verifier, best: Evaluation, deadline: float,
            budget: int | None = None) -> tuple[Evaluation, int]:
    """First-improvement local search on ``best`` within ``budget`` EPANET runs."""
    budget = setup.effort.polish_evaluations if budget is None else budget
    start = verifier.count
    gains = 0
    tried: set[bytes] = set()
    while verifier.count - start < budget and time.monotonic() < deadline - 2.0:
        improved = False
        for cand in _moves(setup, best):
            key = cand.tobytes()
            if key in tried or not allowed(setup, cand):
                continue
            tried.add(key)
            ev = verifier.evaluate(cand)
            if ev.accepted and ev.score < best.score - 1e-9:
                best, improved = ev, True
                gains += 1
                break
            if verifier.count - start >= budget or time.monotonic() > deadline - 2.0:
                break
        if not improved:
            break
    return best, gains


def repair(setup: Setup, verifier: Verifier, ev: Evaluation, sur: Surrogate, deadline: float,
           budget: int, width: int = 6) -> Evaluation | None:
    """Make a schedule EPANET rejected acceptable by adding running time: where a tank
    falls short (below its lower bound, or of its final target), run the pumps that fill
    it in the periods where the surrogate says water is cheapest, EPANET judging each
    candidate.  Returns the repaired schedule, or None within ``budget`` runs."""
    start = verifier.count
    gain, cost = pump_effects(sur, len(setup.pumps))
    cur = ev
    while not cur.accepted:
        if verifier.count - start >= budget or time.monotonic() > deadline - 2.0:
            return None
        cands = _additions(setup, cur, gain, cost)[:width] + _shifts(setup, cur, gain)
        tried = [verifier.evaluate(c) for c in cands]
        done = [e for e in tried if e.accepted]
        if done:  # the cheapest acceptable one
            return min(done, key=lambda e: (e.score, e.speeds.tobytes()))
        # else the most violation removed per unit of cost added
        better = [e for e in tried if e.violation < cur.violation - 1e-9]
        if not better:
            return None
        cur = max(better, key=lambda e: (cur.violation - e.violation)
                  / max(e.score - cur.score, 1e-6 * (abs(cur.score) + 1)))
    return cur


def _merit(ev: Evaluation) -> tuple:
    return (0, 0.0, ev.score) if ev.accepted else (1, ev.violation, ev.score)


def _additions(setup: Setup, ev: Evaluation, gain: np.ndarray, cost: np.ndarray):
    """Candidate fixes for the earliest trouble, one pump-period (or minimum run) at a
    time.  A tank below its lower bound (or, with none, the one furthest short of its
    final target) needs water before the trouble: run a pump that fills it or stop one
    that draws from it, the cheapest water first (stopping saves money: first of all).
    A tank above its upper bound needs less: stop a pump that fills it or run one that
    draws from it, the nearest before the trouble first (earlier changes empty it later).
    A change that harms another tank in trouble counts only its net effect."""
    T, P = setup.periods, len(setup.pumps)
    low, high = ev.low_by_m > 0, ev.high_by_m > 0
    first_low = int(np.nonzero(low.any(axis=1))[0][0]) if low.any() else T
    first_high = int(np.nonzero(high.any(axis=1))[0][0]) if high.any() else T
    if first_high < first_low:
        worst, until, sign = int(np.argmax(ev.high_by_m[first_high])), first_high + 1, -1
    elif low.any():
        worst, until, sign = int(np.argmax(ev.low_by_m[first_low])), first_low + 1, 1
    elif ev.final_short_m.max() > 0:
        worst, until, sign = int(np.argmax(ev.final_short_m)), T, 1
    else:
        return []
    trouble = low.any(axis=0) | (ev.final_short_m > 0)
    trouble[worst] = False
    area = np.array([t.area_m2(t.init_level_m) for t in setup.tanks])
    scored, seen = [], set()
    for k in range(P):
        top = max(setup.rules[k].speeds)
        for t in range(until):
            running = ev.speeds[t, k] > 0
            change = -1.0 if running else 1.0  # stop it, or run it
            g = change * gain[k, t] / area  # level change per tank, m
            net = sign * g[worst] - np.maximum(-g[trouble], 0.0).sum()
            moved = np.abs(gain[k, t])  # m3: a pump serving another tank moves this one little
            if net <= 0 or moved[worst] < 0.25 * moved.max():
                continue
            if sign > 0:
                price = change * max(cost[k, t], 1e-9) / net
            else:
                price = float(until - t) - net / (abs(net) + 1.0)
            options = (_cuts_at(setup, ev.speeds, k, t) if running
                       else _runs_through(setup, ev.speeds, k, t, top))
            for cand in options:
                key = cand.tobytes()
                if key not in seen:
                    seen.add(key)
                    scored.append((price, k, t, cand))
                break
    scored.sort(key=lambda x: (x[0], x[1], x[2]))
    return [c for *_, c in scored]


def _shifts(setup: Setup, ev: Evaluation, gain: np.ndarray):
    """The runs of the pumps that move the tank in trouble most, one period earlier or
    later: fine control of when the water arrives (a tank that must end between its
    target and its maximum may need it)."""
    short = ev.low_by_m.sum(axis=0) + ev.high_by_m.sum(axis=0) + ev.final_short_m
    if short.max() <= 0:
        return []
    worst = int(np.argmax(short))
    moved = np.abs(gain).sum(axis=1)  # (pumps, tanks) m3 over the horizon
    out = []
    for k in range(len(setup.pumps)):
        if moved[k, worst] < 0.25 * moved[k].max():
            continue
        col = ev.speeds[:, k]
        for on, a, length in runs(col > 0):
            if not on:
                continue
            b = a + length - 1
            for lo, hi, new in ((a, b, a - 1), (a, b, a + 1)):
                if new < 0 or new + length > setup.periods:
                    continue
                cand = ev.speeds.copy()
                cand[lo:hi + 1, k] = 0.0
                cand[new:new + length, k] = col[a]
                if allowed(setup, cand):
                    out.append(cand)
    return out


def _cuts_at(setup: Setup, speeds: np.ndarray, k: int, t: int):
    """Ways to switch pump k off in period t that keep its rules: that period alone, or
    the rest of its run from there, or its run up to there."""
    col = speeds[:, k] > 0
    a = t
    while a > 0 and col[a - 1]:
        a -= 1
    b = t
    while b + 1 < setup.periods and col[b + 1]:
        b += 1
    for lo, hi in ((t, t), (t, b), (a, t), (a, b)):
        cand = speeds.copy()
        cand[lo:hi + 1, k] = 0.0
        if allowed(setup, cand):
            yield cand


def _runs_through(setup: Setup, speeds: np.ndarray, k: int, t: int, top: float):
    """Ways to switch pump k on in period t that keep its rules: alone, or as a minimum
    run starting or ending there."""
    rule = setup.rules[k]
    up = max(1, -(-rule.min_on_s // setup.period_s))
    for a in (t, t - up + 1):
        cand = speeds.copy()
        lo, hi = max(a, 0), min(a + up, setup.periods)
        cand[lo:hi, k] = np.where(cand[lo:hi, k] > 0, cand[lo:hi, k], top)
        cand[t, k] = top
        if allowed(setup, cand):
            yield cand


def allowed(setup: Setup, speeds: np.ndarray) -> bool:
    """The operating rules that do not need a simulation."""
    for k, rule in enumerate(setup.rules):
        on = speeds[:, k] > 0
        if any(on[t] for t in rule.forbidden_periods if t < setup.periods):
            return False
        limits = PumpLimits(rule.max_starts, rule.min_on_s, rule.min_off_s, rule.count_transitions)
        if not pump_check(setup.pumps[k], on, setup.period_s, limits)[0].ok:
            return False
    pos = {p: k for k, p in enumerate(setup.pumps)}
    for a, b in setup.problem.exclusive_pumps:
        if np.any((speeds[:, pos[a]] > 0) & (speeds[:, pos[b]] > 0)):
            return False
    return True


def _moves(setup: Setup, ev: Evaluation):
    """Candidate schedules, the most promising first (by the pump-period cost they drop)."""
    speeds = ev.speeds
    ids = setup.network.pump_ids
    cost = ev.period_cost[:, [ids.index(p) for p in setup.pumps]]
    T = setup.periods
    scored: list[tuple[float, int, np.ndarray]] = []
    n = 0
    for k in range(len(setup.pumps)):
        col = speeds[:, k]
        for on, a, length in runs(col > 0):
            if not on:
                continue
            b = a + length - 1
            for t in sorted({a, b}):  # trim an end (drops a one-period run)
                cand = speeds.copy()
                cand[t, k] = 0.0
                scored.append((cost[t, k], n, cand))
                n += 1
            cand = speeds.copy()  # drop the whole run
            cand[a:b + 1, k] = 0.0
            scored.append((cost[a:b + 1, k].sum() * 0.9, n, cand))
            n += 1
            if b + 1 < T:  # shift later
                cand = speeds.copy()
                cand[b + 1, k], cand[a, k] = col[b], 0.0
                scored.append((cost[a, k] - cost[b, k] * 0.5, n, cand))
                n += 1
            if a - 1 >= 0:  # shift earlier
                cand = speeds.copy()
                cand[a - 1, k], cand[b, k] = col[a], 0.0
                scored.append((cost[b, k] - cost[a, k] * 0.5, n, cand))
                n += 1
        levels = sorted(setup.rules[k].speeds)
        if len(levels) > 1:
            for t in range(T):
                if col[t] > 0 and col[t] > levels[0]:
                    lower = max(s for s in levels if s < col[t])
                    cand = speeds.copy()
                    cand[t, k] = lower
                    scored.append((cost[t, k] * (1 - (lower / col[t]) ** 3), n, cand))
                    n += 1
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [c for _, _, c in scored]
