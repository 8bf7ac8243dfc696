"""Rolling-origin backtests and model choice.

Each backtest origin sees only data strictly before it: the history is cut at the
origin, its quality assessed again on what is left, the candidates fitted on it and
asked for the next ``horizon`` hours, which are then compared with what happened (the
clean series, so excluded hours are not scored).  Weather after a backtest origin is
what the caller gave (observations standing in for forecasts in training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from processors.forecast import metrics
from processors.forecast.features import make_frame
from processors.forecast.models import Candidate, InsufficientHistory, combine
from processors.forecast.quality import QualityConfig, assess

DAY_H = 24


@dataclass(frozen=True)
class BacktestRun:
    """One backtest origin: what happened and what each candidate said (unit of the series)."""

    origin: pd.Timestamp
    observed: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


def backtest_origins(origin: pd.Timestamp, count: int, spacing_h: int) -> list[pd.Timestamp]:
    """``count`` origins before ``origin``, ``spacing_h`` hours apart, oldest first."""
    step = pd.Timedelta(hours=spacing_h)
    return [origin - step * k for k in range(count, 0, -1)]


def run_backtests(history: pd.Series, clean_truth: pd.Series, weather: pd.DataFrame | None,
                  holidays, tz: str, origins: Sequence[pd.Timestamp], horizon: int,
                  make_candidates: Callable[[], list[Candidate]],
                  ensembles: dict[str, tuple[list[str], list[float]]],
                  quality: QualityConfig, refit: bool = True,
                  progress: Callable[[str], None] | None = None) -> list[BacktestRun]:
    """Fit and forecast every candidate at every origin; ensembles are combined from
    their members' forecasts.  A candidate that cannot fit at an origin (too little
    history) is left out of that run.  With ``refit`` False a candidate fitted at an
    earlier origin is reused at later ones (still no look-ahead: it saw less)."""
    runs = []
    candidates = make_candidates()
    for origin in origins:
        cut = history[history.index < origin]
        if cut.notna().sum() < 3 * 168:
            continue
        clean = assess(cut, quality).clean
        frame = make_frame(clean, weather, holidays, tz, origin + pd.Timedelta(hours=horizon))
        pos = frame.position(origin)
        truth = clean_truth.reindex(frame.index[pos:pos + horizon]).to_numpy(dtype=float)
        run = BacktestRun(origin, truth)
        for cand in candidates:
            try:
                if refit or not cand.fitted:
                    cand.fit(frame, pos)
                run.predictions[cand.name] = cand.predict(frame, pos, horizon)
            except InsufficientHistory:
                continue
        for name, (members, weights) in ensembles.items():
            if all(m in run.predictions for m in members):
                run.predictions[name] = combine([run.predictions[m] for m in members], weights)
        runs.append(run)
        if progress:
            progress(f"backtest {origin:%Y-%m-%d %H:%M}Z done")
    return runs


def score(runs: Sequence[BacktestRun], quantiles: Sequence[float], level: float
          ) -> dict[str, dict[str, float]]:
    """Mean indicators per candidate over the runs where it forecast.

    Keys: PI1, PI2, PI3 and ``mae_day1`` .. ``mae_day7`` (unit of the series), ``score`` =
    PI1 + PI3 (what the choice minimises), ``runs``, and for the interval between the outer quantiles, ``coverage``
    (fraction) and ``pinball_<q>`` per quantile, with quantiles taken from the *other*
    runs' errors (leave one origin out), so coverage is not judged on its own errors.
    """
    names = sorted({n for r in runs for n in r.predictions})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        mine = [r for r in runs if name in r.predictions]
        ind = [metrics.bwdf_indicators(r.observed, r.predictions[name]) for r in mine]
        m = {k: _mean([i[k] for i in ind]) for k in ("PI1", "PI2", "PI3")}
        m["score"] = m["PI1"] + m["PI3"]
        for day in range(7):  # MAE per forecast day (hours 1-24, 25-48, ...)
            m[f"mae_day{day + 1}"] = _mean([metrics.mae(r.observed[day * DAY_H:(day + 1) * DAY_H],
                                                        r.predictions[name][day * DAY_H:(day + 1) * DAY_H])
                                            for r in mine])
        m["runs"] = float(len(mine))
        if len(mine) >= 2:
            lo_q, hi_q = min(quantiles), max(quantiles)
            cover, pin = [], {q: [] for q in quantiles}
            for i, r in enumerate(mine):
                others = [x for j, x in enumerate(mine) if j != i]
                table = residual_quantiles(others, name, quantiles, level)
                band = apply_quantiles(r.predictions[name], table, quantiles, level)
                cover.append(metrics.interval_coverage(r.observed, band[lo_q], band[hi_q]))
                for q in quantiles:
                    pin[q].append(metrics.pinball_loss(r.observed, band[q], q))
            m["coverage"] = _mean(cover)
            for q in quantiles:
                m[f"pinball_{q:g}"] = _mean(pin[q])
        out[name] = m
    return out


def choose(scores: dict[str, dict[str, float]], order: Sequence[str]) -> str:
    """The candidate with the lowest score (PI1 + PI3); ties go to the earlier in ``order``."""
    ranked = [n for n in order if n in scores and np.isfinite(scores[n]["score"])]
    if not ranked:
        raise InsufficientHistory("no candidate could be backtested")
    return min(ranked, key=lambda n: (scores[n]["score"], ranked.index(n)))


BANDS = ((0, DAY_H), (DAY_H, 10_000))


def residual_quantiles(runs: Sequence[BacktestRun], name: str, quantiles: Sequence[float],
                       level: float) -> list[list[float]]:
    """Quantiles of relative errors (obs - fcst) / max(|fcst|, 0.1 level) per horizon band
    (hours 1-24, 25-): ``table[band][i]`` for ``quantiles[i]``."""
    table = []
    for lo, hi in BANDS:
        rel = []
        for r in runs:
            if name not in r.predictions:
                continue
            p, o = r.predictions[name][lo:hi], r.observed[lo:hi]
            ok = ~np.isnan(o)
            rel.append((o[ok] - p[ok]) / np.maximum(np.abs(p[ok]), max(0.1 * level, 1e-9)))
        rel_all = np.concatenate(rel) if rel else np.array([])
        if len(rel_all) < 10:
            table.append([0.0 for _ in quantiles])
        else:
            table.append([float(np.quantile(rel_all, q)) for q in quantiles])
    return table


def apply_quantiles(p50: np.ndarray, table: list[list[float]], quantiles: Sequence[float],
                    level: float) -> dict[float, np.ndarray]:
    """Quantile forecasts around ``p50`` from a relative-error table.  ``0.5`` stays the
    point forecast; lower quantiles never rise above it, upper never fall below, and
    none cross."""
    scale = np.maximum(np.abs(p50), max(0.1 * level, 1e-9))
    h = np.arange(len(p50))
    out = {}
    for i, q in enumerate(quantiles):
        rel = np.zeros(len(p50))
        for b, (lo, hi) in enumerate(BANDS):
            sel = (h >= lo) & (h < hi)
            rel[sel] = table[b][i]
        value = p50 + rel * scale
        out[q] = np.minimum(value, p50) if q < 0.5 else p50 if q == 0.5 else np.maximum(value, p50)
    stacked = np.sort(np.vstack([out[q] for q in quantiles]), axis=0)
    return {q: stacked[i] for i, q in enumerate(quantiles)}


def _mean(xs) -> float:
    xs = [x for x in xs if x == x]
    return float(np.mean(xs)) if xs else float("nan")
