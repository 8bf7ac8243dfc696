"""Readings as a step function: each reading holds until the next one, for at most
``max_hold_s`` (a longer gap is time without data, not time at the last value).

Everything a day's KPIs integrate goes through ``Held``: volume from flow (m3/s x s),
energy from power (W x s), minutes outside bounds, the share of an hour a pump ran, the
hourly mean of an inflow.  Times are UTC epoch nanoseconds, values SI.  Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS = 1_000_000_000
MAX_HOLD_S = 3600.0  # a reading speaks for at most an hour after it


@dataclass(frozen=True)
class Held:
    """Non-overlapping segments [start, end) at constant ``value``, sorted."""

    start_ns: np.ndarray
    end_ns: np.ndarray
    value: np.ndarray

    @classmethod
    def of(cls, timestamps_ns, values, *, max_hold_s: float = MAX_HOLD_S) -> Held:
        """Hold each reading until the next (at most ``max_hold_s``); NaN values and
        repeated instants (the last one wins) are dropped."""
        t = np.asarray(timestamps_ns, dtype=np.int64)
        v = np.asarray(values, dtype=float)
        keep = np.isfinite(v)
        t, v = t[keep], v[keep]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        if t.size:
            last = np.append(t[1:] != t[:-1], True)  # the last of equal instants
            t, v = t[last], v[last]
        end = np.minimum(np.append(t[1:], np.iinfo(np.int64).max),
                         t + np.int64(max_hold_s * NS))
        return cls(t, end, v)

    def _cumulative(self, values: np.ndarray):
        """Breakpoints and the running integral (value x s) of ``values`` held."""
        x = np.empty(2 * self.start_ns.size, dtype=np.int64)
        x[0::2], x[1::2] = self.start_ns, self.end_ns
        area = values * (self.end_ns - self.start_ns) / NS
        f = np.empty(x.size)
        f[1::2] = np.cumsum(area)
        f[0::2] = f[1::2] - area
        return x, f

    def _at(self, values: np.ndarray, t_ns) -> np.ndarray:
        if self.start_ns.size == 0:
            return np.zeros(np.shape(t_ns))
        x, f = self._cumulative(values)
        return np.interp(np.asarray(t_ns, dtype=float), x.astype(float), f)

    def integral(self, lo_ns: int, hi_ns: int) -> float:
        """Integral over [lo, hi) of the held values (value x s)."""
        a, b = self._at(self.value, [lo_ns, hi_ns])
        return float(b - a)

    def covered_s(self, lo_ns: int, hi_ns: int) -> float:
        """Seconds of [lo, hi) some reading speaks for."""
        a, b = self._at(np.ones_like(self.value), [lo_ns, hi_ns])
        return float(b - a)

    def where(self, mask: np.ndarray) -> Held:
        """The same segments with value 1 where ``mask`` holds, else 0."""
        return Held(self.start_ns, self.end_ns, np.asarray(mask, dtype=float))

    def per_period(self, edges_ns) -> tuple[np.ndarray, np.ndarray]:
        """(time-weighted mean, seconds covered) of each period between consecutive
        ``edges_ns``; the mean is NaN where no reading speaks for the period."""
        edges = np.asarray(edges_ns, dtype=np.int64)
        area = np.diff(self._at(self.value, edges))
        covered = np.diff(self._at(np.ones_like(self.value), edges))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(covered > 0, area / np.where(covered > 0, covered, 1.0), np.nan)
        return mean, covered

    def value_at(self, t_ns: int) -> float | None:
        """The held value at ``t_ns`` (None when no reading speaks for it)."""
        i = int(np.searchsorted(self.start_ns, t_ns, side="right")) - 1
        if i < 0 or self.end_ns[i] <= t_ns:
            return None
        return float(self.value[i])

    def first_after(self, t_ns: int, within_s: float) -> float | None:
        """The first reading in [t, t + within_s), if any."""
        i = int(np.searchsorted(self.start_ns, t_ns, side="left"))
        if i < self.start_ns.size and self.start_ns[i] < t_ns + within_s * NS:
            return float(self.value[i])
        return None


def hour_edges(lo_ns: int, hi_ns: int, step_s: int = 3600) -> np.ndarray:
    """Edges of the ``step_s`` periods from ``lo`` to ``hi`` (hi included)."""
    return np.arange(lo_ns, hi_ns + 1, step_s * NS, dtype=np.int64)
