"""Data quality of an hourly history: find gaps, stuck sensors and outliers, exclude them,
and say what was excluded.

Excluded hours become NaN in the clean series: no model learns from them and no lag
feature reads them.  Every excluded stretch is reported with its reason, so a training
run can tell an operator what it did not trust.  Works in the series' own unit (the
thresholds are relative or robust, never absolute flows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

WEEK_H = 168


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds.  ``stuck_hours``: identical consecutive values for at least this many
    hours mean a stuck sensor.  An outlier lies more than ``outlier_z`` robust standard
    deviations from the same hour of the neighbouring weeks *and* more than
    ``outlier_min_rel`` times the series' typical level away from it."""

    stuck_hours: int = 6
    outlier_z: float = 8.0
    outlier_min_rel: float = 0.5
    neighbour_weeks: int = 3


@dataclass(frozen=True)
class ExcludedPeriod:
    """Hours [start, end) (UTC) left out of training and features, and why."""

    start: pd.Timestamp
    end: pd.Timestamp
    reason: str  # "missing" | "stuck" | "outlier"

    @property
    def hours(self) -> int:
        return int((self.end - self.start) / pd.Timedelta(hours=1))

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "reason": self.reason, "hours": self.hours}


@dataclass(frozen=True)
class QualityReport:
    """The clean hourly series (NaN where missing or excluded) and what was excluded."""

    clean: pd.Series
    excluded: tuple[ExcludedPeriod, ...]

    def hours_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.excluded:
            out[p.reason] = out.get(p.reason, 0) + p.hours
        return out


def to_hourly(series: pd.Series) -> pd.Series:
    """The series on its full UTC hourly grid (missing hours as NaN), float64.

    Raises ValueError when the index is not zone-aware, not on whole hours or repeats.
    """
    idx = series.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise ValueError("history must have a zone-aware DatetimeIndex (UTC)")
    s = pd.Series(np.asarray(series, dtype=float), index=idx.tz_convert("UTC").as_unit("ns"))
    if s.index.has_duplicates:
        raise ValueError(f"history has {int(s.index.duplicated().sum())} repeated timestamps")
    if len(s) and (s.index != s.index.floor("h")).any():
        raise ValueError("history must be hourly (timestamps on whole hours)")
    s = s.sort_index()
    if len(s) == 0:
        return s
    grid = pd.date_range(s.index[0], s.index[-1], freq="h", unit="ns")
    return s.reindex(grid)


def assess(series: pd.Series, config: QualityConfig = QualityConfig()) -> QualityReport:
    """Flag missing hours, stuck stretches and outliers of an hourly series."""
    s = to_hourly(series)
    y = s.to_numpy(copy=True)
    missing = np.isnan(y)
    stuck = _stuck(y, config.stuck_hours)
    outlier = _outliers(np.where(stuck, np.nan, y), config) & ~stuck
    y[stuck | outlier] = np.nan
    periods = (_runs(s.index, missing, "missing") + _runs(s.index, stuck, "stuck")
               + _runs(s.index, outlier, "outlier"))
    periods.sort(key=lambda p: (p.start, p.reason))
    return QualityReport(clean=pd.Series(y, index=s.index, name=series.name),
                         excluded=tuple(periods))


def _stuck(y: np.ndarray, min_hours: int) -> np.ndarray:
    """True on runs of at least ``min_hours`` identical (non-missing) consecutive values."""
    n = len(y)
    out = np.zeros(n, bool)
    if n == 0 or min_hours < 2:
        return out
    same = np.zeros(n, bool)
    same[1:] = (y[1:] == y[:-1]) & ~np.isnan(y[1:])
    start = 0
    for i in range(1, n + 1):
        if i == n or not same[i]:
            if i - start >= min_hours:
                out[start:i] = True
            start = i
    return out


def _outliers(y: np.ndarray, c: QualityConfig) -> np.ndarray:
    """Hours far from the median of the same hour in the neighbouring weeks."""
    n = len(y)
    if n < 2 * WEEK_H:
        return np.zeros(n, bool)
    neighbours = []
    for k in range(1, c.neighbour_weeks + 1):
        for shift in (k * WEEK_H, -k * WEEK_H):
            v = np.full(n, np.nan)
            if shift > 0:
                v[shift:] = y[:-shift]
            else:
                v[:shift] = y[-shift:]
            neighbours.append(v)
    stack = np.vstack(neighbours)
    enough = np.sum(~np.isnan(stack), axis=0) >= 3
    with np.errstate(all="ignore"):
        ref = np.where(enough, _nanmedian0(stack), np.nan)
    resid = y - ref
    ok = ~np.isnan(resid)
    if ok.sum() < WEEK_H:
        return np.zeros(n, bool)
    # local robust scale: the residuals' median absolute size over the surrounding weeks,
    # so a volatile season (summer irrigation) raises the bar instead of being flagged
    local = pd.Series(np.abs(resid)).rolling(2 * WEEK_H, center=True, min_periods=WEEK_H // 2)
    scale = 1.4826 * local.median().bfill().ffill().to_numpy()
    level = float(np.median(np.abs(y[~np.isnan(y)])))
    limit = np.maximum(c.outlier_z * scale, c.outlier_min_rel * level)
    return ok & (np.abs(resid) > limit)


def _nanmedian0(stack: np.ndarray) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(stack, axis=0)


def _runs(index: pd.DatetimeIndex, flag: np.ndarray, reason: str) -> list[ExcludedPeriod]:
    if not flag.any():
        return []
    f = np.concatenate([[False], flag, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(f))
    hour = pd.Timedelta(hours=1)
    return [ExcludedPeriod(index[a], index[b - 1] + hour, reason)
            for a, b in zip(edges[::2], edges[1::2])]
