"""The one rulebook for readings, whatever door they came through.

Every door (CSV/XLSX files, line protocol, JSON push, pollers, ``readings.reported``)
reads its input into arrays of (row, instant, value or outcome code) per sensor and
hands them to the same ``Rulebook``: it converts to SI (``contracts.units``), checks the
time window, the physical range and duplicates, and books every value exactly once in a
``Tally``, either accepted or rejected with a reason from ``contracts.readings.RejectReason``.

Pure: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from contracts.intake import COUNTERS
from contracts.mapping import SensorSpec, TimeWindow
from contracts.readings import RejectedReading, Series, sensor_id_problem
from contracts.units import to_si, unit_problem

RAW_MAX = 200  # characters of offending input kept in a RejectedReading
NAT = int(np.iinfo(np.int64).min)  # "no time" in int64 ns arrays (pandas' NaT)
DAY_NS = 86_400 * 10**9

# cell outcome codes, in arrays
OK, IS_MISSING, IS_TEXT, OUT_OF_RANGE, DUPLICATE = range(5)
CODE_REASONS = ("accepted", "missing", "non_numeric", "out_of_range", "duplicate")
_DETAILS = {"missing": "no value (blank, null, NaN or a missing-value marker)",
            "duplicate": "an earlier row of this upload has a value for this sensor and instant"}


@dataclass(frozen=True, slots=True)
class ParsedChunk:
    """What consecutive input rows ``first_row``..``last_row`` (1-based) yielded.

    ``series`` values are in SI units with UTC epoch-ns timestamps.  Identities (checked):
    rows_received = rows_accepted + rows_rejected, and values_received = values_accepted +
    values_rejected + values_missing, the last two = the sum of ``count`` over ``rejected``.
    """

    series: list[Series]
    rejected: list[RejectedReading]
    rows_received: int
    rows_accepted: int
    rows_rejected: int
    values_received: int
    values_accepted: int
    values_rejected: int
    values_missing: int
    first_row: int
    last_row: int

    def __post_init__(self) -> None:
        counted = sum(r.count for r in self.rejected)
        accepted = sum(len(s.values) for s in self.series)
        if (self.rows_received != self.rows_accepted + self.rows_rejected
                or self.values_received != self.values_accepted + counted
                or counted != self.values_rejected + self.values_missing
                or accepted != self.values_accepted):
            raise AssertionError(
                f"parser accounting broken in rows {self.first_row}-{self.last_row}")

    def reasons(self) -> dict[str, int]:
        """Rejected and missing values by reason code (summing ``count``)."""
        out: dict[str, int] = {}
        for r in self.rejected:
            out[r.reason] = out.get(r.reason, 0) + r.count
        return out


def merge(chunks: Iterable[ParsedChunk]) -> ParsedChunk:
    """One chunk holding several consecutive chunks of one upload (for callers that want
    a whole small upload at once, e.g. tests)."""
    chunks = list(chunks)
    if len(chunks) == 1:
        return chunks[0]
    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for c in chunks:
        for s in c.series:
            ts, vs = series.setdefault((s.sensor_id, s.unit), ([], []))
            ts.extend(s.timestamps_ns)
            vs.extend(s.values)
    counts = {k: sum(getattr(c, k) for c in chunks) for k in COUNTERS}
    return ParsedChunk(
        series=[Series(sensor_id=k[0], unit=k[1], timestamps_ns=t, values=v)
                for k, (t, v) in series.items()],
        rejected=[r for c in chunks for r in c.rejected], **counts,
        first_row=chunks[0].first_row if chunks else 0,
        last_row=chunks[-1].last_row if chunks else 0)


def summarise(chunks: Iterable[ParsedChunk]) -> dict[str, Any]:
    """Totals over chunks: the counters, rejected cells by reason, accepted values by sensor."""
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    by_reason: dict[str, int] = {}
    by_sensor: dict[str, int] = {}
    for c in chunks:
        for k in COUNTERS:
            out[k] += getattr(c, k)
        for reason, n in c.reasons().items():
            by_reason[reason] = by_reason.get(reason, 0) + n
        for s in c.series:
            by_sensor[s.sensor_id] = by_sensor.get(s.sensor_id, 0) + len(s.values)
    out["rejected_by_reason"] = dict(sorted(by_reason.items()))
    out["accepted_by_sensor"] = dict(sorted(by_sensor.items()))
    return out


@dataclass(frozen=True, slots=True)
class SensorRule:
    """A sensor with its SI conversion (si = value * factor + offset) and SI range."""

    id: str
    unit: str
    si_unit: str
    factor: float
    offset: float
    lo: float
    hi: float

    @classmethod
    def of(cls, spec: SensorSpec | None, key: str, unit: str | None) -> SensorRule | str:
        """The rule for ``key`` as the mapping's ``spec`` says (its unit wins over the
        data's ``unit``), or the reason code + detail it cannot have one, as
        ``"reason|detail"``."""
        sensor_id = spec.id if spec else key
        unit = (spec.unit if spec and spec.unit else None) or unit
        if not unit:
            return "unknown_unit|no unit: send a 'unit' with the data or map the sensor to one"
        conv = to_si(unit)
        if conv is None:
            return f"unknown_unit|{unit_problem(unit)}"
        lo, hi = spec.si_range(unit) if spec else (-float("inf"), float("inf"))
        return cls(sensor_id, unit, *conv, lo, hi)


@dataclass(frozen=True, slots=True)
class Window:
    """Plausible instants, UTC epoch ns, inclusive (see ``contracts.mapping.TimeWindow``)."""

    earliest_ns: int
    latest_ns: int

    @classmethod
    def of(cls, window: TimeWindow, received_at_ns: int) -> Window:
        earliest = round((window.earliest - datetime(1970, 1, 1)).total_seconds()) * 10**9
        return cls(max(0, earliest), received_at_ns + int(window.future_days * DAY_NS))

    def detail(self) -> str:
        return (f"expected a time from {_iso(self.earliest_ns)} to {_iso(self.latest_ns)} "
                "(the mapping's window: nothing before 1970, at most window.future_days "
                "after the upload arrived)")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%MZ")


class RejectionCap:
    """Bounds the memory a bad upload can cost: at most ``per_reason`` itemised rejection
    entries per upload and reason.  Beyond that, a chunk books one summary entry per
    reason (``row`` None, ``count`` = the values not itemised), so counts stay exact."""

    def __init__(self, per_reason: int = 1_000) -> None:
        self.per_reason = per_reason
        self.itemised: dict[str, int] = {}

    def allow(self, reason: str) -> bool:
        n = self.itemised.get(reason, 0)
        if n >= self.per_reason:
            return False
        self.itemised[reason] = n + 1
        return True


class Tally:
    """One chunk's outcomes; like rejections of one sensor in consecutive rows become one
    entry.  ``rows`` maps the chunk index k to the 1-based row (line, item) of the input."""

    _ANY_RAW = frozenset({"missing", "unknown_column"})  # aggregate even if raw text differs

    def __init__(self, rows: list[int], cap: RejectionCap | None = None) -> None:
        self.rows = rows
        self.cap = cap or RejectionCap()
        self.suppressed: dict[str, int] = {}
        self.row_ok = np.zeros(len(rows), dtype=bool)
        self.parts: dict[tuple[str, str], tuple[list[np.ndarray], list[np.ndarray],
                                                list[np.ndarray]]] = {}
        self.rejected: list[RejectedReading] = []
        self.accepted = self.refused = self.missing = 0

    def accept(self, sensor_id: str, si_unit: str, ks: np.ndarray, t: np.ndarray,
               values: np.ndarray) -> None:
        if ks.size:
            kss, ts, vs = self.parts.setdefault((sensor_id, si_unit), ([], [], []))
            kss.append(ks)
            ts.append(t)
            vs.append(values)
            self.row_ok[ks] = True
            self.accepted += int(ks.size)

    def reject_row(self, k: int, sensor_id: str | None, raw: str, reason: str, detail: str,
                   count: int = 1) -> None:
        """All ``count`` cells of row ``k`` for one reason (bad shape, bad time)."""
        self._add(self.rows[k], sensor_id, raw, reason, detail, count)

    def reject_cells(self, sensor_id: str | None, ks: list[int], reasons: list[str], raws: list,
                     detail: str | dict[str, str]) -> None:
        """One sensor's (or column's) rejected cells, rows ``ks`` ascending."""
        run: list | None = None  # [first k, last k, raw, reason, count]
        for k, reason, cell in zip(ks, reasons, raws, strict=True):
            raw = clip(str(cell))
            if (run is not None and k == run[1] + 1 and reason == run[3]
                    and (reason in self._ANY_RAW or raw == run[2])):
                run[1], run[4] = k, run[4] + 1
                continue
            if run is not None:
                self._close(sensor_id, run, detail)
            run = [k, k, raw, reason, 1]
        if run is not None:
            self._close(sensor_id, run, detail)

    def _close(self, sensor_id: str | None, run: list, detail: str | dict[str, str]) -> None:
        first, last, raw, reason, count = run
        text = detail if isinstance(detail, str) else detail.get(reason, _DETAILS.get(reason, ""))
        if count > 1:
            text = f"{text}; {count} consecutive rows {self.rows[first]}-{self.rows[last]}"
        self._add(self.rows[first], sensor_id, raw, reason, text, count)

    def _add(self, row: int, sensor_id: str | None, raw: str, reason: str, detail: str,
             count: int) -> None:
        if reason == "missing":
            self.missing += count
        else:
            self.refused += count
        if not self.cap.allow(reason):
            self.suppressed[reason] = self.suppressed.get(reason, 0) + count
            return
        self.rejected.append(RejectedReading(row=row, sensor_id=sensor_id, raw=clip(raw),
                                             reason=reason, detail=detail, count=count))

    def finish(self) -> ParsedChunk:
        series = []
        for (sensor_id, unit), (kss, ts, vs) in self.parts.items():
            if len(kss) == 1 and kss[0].size == 1:  # the common push: one value
                series.append(Series(sensor_id=sensor_id, unit=unit,
                                     timestamps_ns=ts[0].tolist(), values=vs[0].tolist()))
                continue
            order = np.argsort(np.concatenate(kss), kind="stable")
            series.append(Series(sensor_id=sensor_id, unit=unit,
                                 timestamps_ns=np.concatenate(ts)[order].tolist(),
                                 values=np.concatenate(vs)[order].tolist()))
        self.rejected.sort(key=lambda r: (r.row or 0, r.sensor_id or ""))
        for reason, count in sorted(self.suppressed.items()):
            self.rejected.append(RejectedReading(
                row=None, sensor_id=None, raw="", reason=reason, count=count,
                detail=f"{count} more values rejected for this reason in rows "
                       f"{self.rows[0]}-{self.rows[-1]}, not itemised (at most "
                       f"{self.cap.per_reason} entries per upload and reason are kept)"))
        accepted_rows = int(self.row_ok.sum())
        return ParsedChunk(
            series=series, rejected=self.rejected, rows_received=len(self.rows),
            rows_accepted=accepted_rows, rows_rejected=len(self.rows) - accepted_rows,
            values_received=self.accepted + self.refused + self.missing,
            values_accepted=self.accepted, values_rejected=self.refused,
            values_missing=self.missing, first_row=self.rows[0] if self.rows else 0,
            last_row=self.rows[-1] if self.rows else 0)


class Rulebook:
    """The checks every value goes through, and what must survive chunk boundaries of one
    upload: the instants already accepted per sensor (duplicates)."""

    def __init__(self, window: Window, cap: RejectionCap | None = None) -> None:
        self.window = window
        self.cap = cap or RejectionCap()
        self.seen: dict[str, Instants] = {}
        self._bad_ids: dict[str, str | None] = {}

    def time_faults(self, utc: np.ndarray, faults: list[tuple[str, str] | None]) -> None:
        """Mark instants outside the window ``implausible_time`` (in place)."""
        w = self.window
        bad = (utc != NAT) & ((utc < w.earliest_ns) | (utc > w.latest_ns))
        for k in np.flatnonzero(bad).tolist():
            if faults[k] is None:
                faults[k] = ("implausible_time", w.detail())

    def id_problem(self, sensor_id: str) -> str | None:
        if sensor_id not in self._bad_ids:
            self._bad_ids[sensor_id] = sensor_id_problem(sensor_id)
        return self._bad_ids[sensor_id]

    def values(self, tally: Tally, sensor: SensorRule, ks: np.ndarray, t: np.ndarray,
               values: np.ndarray, codes: np.ndarray, raws: list, *,
               factor: float | None = None, offset: float | None = None,
               non_numeric: str = "expected a number") -> None:
        """Classify one sensor's values (rows ``ks``, instants ``t``; ``codes`` from reading
        them: OK, IS_MISSING or IS_TEXT), accept the good ones into ``tally``."""
        self.values_of(tally, [Segment(sensor, ks.size, factor, offset)], ks, t, values,
                       codes, raws, non_numeric=non_numeric)

    def values_of(self, tally: Tally, segments: list[Segment], ks: np.ndarray, t: np.ndarray,
                  values: np.ndarray, codes: np.ndarray, raws: list, *,
                  non_numeric: str = "expected a number") -> None:
        """``values`` for several sensors at once: the arrays hold each segment's values
        one after the other.  A push of many sensors with a value or two each is
        converted and range-checked in one pass instead of one pass per sensor."""
        bounds = np.cumsum([0] + [g.n for g in segments])
        codes = codes.copy()
        live = []  # segments whose sensor id is usable
        for g, a, b in zip(segments, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            if (problem := self.id_problem(g.sensor.id)) is not None:
                tally.reject_cells(g.sensor.id, ks[a:b].tolist(), ["invalid_sensor_id"] * (b - a),
                                   raws[a:b], problem)
                codes[a:b] = -1  # settled
            elif b > a:
                live.append((g, a, b))
        if not live:
            return
        n = [g.n for g in segments]
        factor = np.repeat([g.sensor.factor if g.factor is None else g.factor
                            for g in segments], n)
        offset = np.repeat([g.sensor.offset if g.offset is None else g.offset
                            for g in segments], n)
        lo = np.repeat([g.sensor.lo for g in segments], n)
        hi = np.repeat([g.sensor.hi for g in segments], n)
        codes[(codes == OK) & ~np.isfinite(values)] = IS_TEXT
        si = values * factor + offset
        codes[(codes == OK) & ~((si >= lo) & (si <= hi))] = OUT_OF_RANGE
        ok = codes == OK
        for g, a, b in live:
            idx = np.flatnonzero(ok[a:b]) + a
            if not idx.size:
                continue
            seen = self.seen.get(g.sensor.id)
            if seen is None:
                seen = self.seen[g.sensor.id] = Instants()
            new = seen.add_many(t[idx])
            if not new.all():
                codes[idx[~new]] = DUPLICATE
        keep = codes == OK
        for g, a, b in live:
            k = keep[a:b]
            if k.all():
                tally.accept(g.sensor.id, g.sensor.si_unit, ks[a:b], t[a:b], si[a:b])
                continue
            tally.accept(g.sensor.id, g.sensor.si_unit, ks[a:b][k], t[a:b][k], si[a:b][k])
            bad = np.flatnonzero(~k) + a
            sensor = g.sensor
            names = [CODE_REASONS[r] for r in codes[bad].tolist()]
            details = {"out_of_range": f"outside the physical range [{sensor.lo:g}, "
                                       f"{sensor.hi:g}] {sensor.si_unit} ({sensor.unit} "
                                       f"converted to SI)",
                       "non_numeric": non_numeric}
            tally.reject_cells(sensor.id, ks[bad].tolist(), names,
                               [raws[j] for j in bad.tolist()], details)


@dataclass(frozen=True, slots=True)
class Segment:
    """``n`` consecutive values of one sensor in ``Rulebook.values_of``; ``factor`` and
    ``offset`` override the sensor's conversion (a column's own unit)."""

    sensor: SensorRule
    n: int
    factor: float | None = None
    offset: float | None = None


class Instants:
    """A set of int instants kept as disjoint arithmetic runs (first, last, step), sorted.

    A regular series costs one run per gap, not one entry per instant; points that fall
    inside a run's span but off its grid go to a plain set.
    """

    __slots__ = ("_first", "_last", "_step", "_loose")

    def __init__(self) -> None:
        self._first: list[int] = []
        self._last: list[int] = []
        self._step: list[int] = []  # 0 while a run holds one instant
        self._loose: set[int] = set()

    def add_many(self, t: np.ndarray) -> np.ndarray:
        """Add instants in order; True where an instant was new (first occurrence wins)."""
        if t.size == 1:
            return np.array([self.add(int(t[0]))])
        if t.size and (not self._last or t[0] > self._last[-1]) and bool(np.all(np.diff(t) > 0)):
            self._extend(t)
            return np.ones(t.size, dtype=bool)
        return np.fromiter((self.add(x) for x in t.tolist()), dtype=bool, count=t.size)

    def _extend(self, t: np.ndarray) -> None:
        """Append strictly increasing instants beyond every run; O(runs created) steps."""
        d = np.diff(t)
        changes = np.flatnonzero(d[1:] != d[:-1]) + 1  # where d starts a new constant stretch
        values, first, last, steps = t.tolist(), self._first, self._last, self._step
        i, n = 0, len(values)
        while i < n:
            ti = values[i]
            if last and (steps[-1] == 0 or ti - last[-1] == steps[-1]):
                step = steps[-1] or ti - last[-1]
                j = i + 1
                if j < n and d[j - 1] == step:
                    c = int(np.searchsorted(changes, j - 1, side="right"))
                    j = int(changes[c]) + 1 if c < changes.size else n
                steps[-1], last[-1], i = step, values[j - 1], j
            else:
                first.append(ti)
                last.append(ti)
                steps.append(0)
                i += 1

    def add(self, t: int) -> bool:
        """Add ``t``; False if it was already there."""
        last = self._last
        if last and t > last[-1]:
            step = self._step[-1]
            if step == 0 or t - last[-1] == step:
                self._step[-1] = t - last[-1] if step == 0 else step
                last[-1] = t
                return True
        elif last:
            i = bisect.bisect_right(self._first, t) - 1
            if i >= 0 and t <= last[i]:
                first, step = self._first[i], self._step[i]
                if t == first or (step and (t - first) % step == 0) or t in self._loose:
                    return False
                self._loose.add(t)
                return True
            self._first.insert(i + 1, t)
            last.insert(i + 1, t)
            self._step.insert(i + 1, 0)
            return True
        self._first.append(t)
        last.append(t)
        self._step.append(0)
        return True


def clip(text: str) -> str:
    return text[:RAW_MAX]
