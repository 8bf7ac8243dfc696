"""The push doors' records, checked by the same rulebook as files.

A push parser (line protocol, JSON push, polled JSON, ``readings.reported``) adds one
record per value: its row (line or item, 1-based), sensor key, raw text, the value (or
why there is none), its unit, and its time (UTC ns, or timestamp cells for the mapping's
clock, or a fault).  ``PushRecords.finish`` then runs every value through the one
rulebook (clock, window, sensor id, unit, range, duplicates) and returns a
``ParsedChunk`` whose rows are the input's records.

Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from contracts.mapping import SourceMapping, TimestampSpec
from processors.normalise.clock import Clock
from processors.normalise.numbers import Numbers
from processors.normalise.rules import (
    IS_MISSING, IS_TEXT, NAT, OK, ParsedChunk, Rulebook, Segment, SensorRule, Tally, Window,
    clip,
)

PUSH_TIMESTAMP = TimestampSpec(format="auto")  # ISO text with offset, or epoch-ms numbers
CHUNK_ROWS = 100_000  # rows (lines, items) per chunk


@dataclass
class _Key:
    """The values of one sensor key (and unit as sent) in one upload, in arrival order."""

    ks: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)
    utc: list[int] = field(default_factory=list)
    stamps: list[tuple | None] = field(default_factory=list)  # for the clock, if utc is NAT


class PushRecords:
    """Collects one upload's values chunk by chunk; ``flush()`` checks the rows collected so
    far and does their accounting (the rulebook's state, e.g. duplicates, lasts the upload).

    Parsers add rows, and ``yield records.flush()`` whenever ``full()``: memory stays
    bounded by ``chunk_rows`` rows (and the rejection cap), whatever the body's size.
    """

    def __init__(self, mapping: SourceMapping | None, received_at_ns: int, *,
                 chunk_rows: int = CHUNK_ROWS) -> None:
        self.mapping = mapping or SourceMapping()
        self.chunk_rows = chunk_rows
        self._numbers = Numbers(self.mapping)
        self._markers = frozenset(self.mapping.missing_values)
        self._rules = Rulebook(Window.of(self.mapping.window, received_at_ns))
        self._clock = Clock(self.mapping.timestamp or PUSH_TIMESTAMP, self._numbers,
                            ambiguous="reject")
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[int, int] = {}  # input row -> chunk index k
        self._keys: dict[tuple[str, str | None], _Key] = {}
        self._faults: list[tuple[int, str | None, str, str, str, int]] = []

    def full(self) -> bool:
        return len(self._rows) >= self.chunk_rows

    def row(self, row: int) -> int:
        """Count ``row`` as received (even if it yields no value)."""
        return self._rows.setdefault(row, len(self._rows))

    def reject(self, *, row: int, sensor_id: str | None, raw: str, reason: str,
               detail: str = "", count: int = 1) -> None:
        """A whole record (or group of ``count`` values) that cannot be read."""
        self._faults.append((self.row(row), sensor_id, clip(raw), reason, detail, count))

    def sensor_id(self, key: str) -> str:
        spec = self.mapping.sensors.get(key)
        return spec.id if spec else key

    def add(self, *, row: int, key: str, raw: str, value: object, unit: str | None,
            utc_ns: int | None = None, stamp: object = None) -> None:
        """One value: a number, None (missing) or text (a marker, or not a number); its
        time either as UTC ns or as a timestamp cell for the mapping's clock."""
        k = self.row(row)
        rec = self._keys.setdefault((key, unit), _Key())
        number, code = self._number(value)
        rec.ks.append(k)
        rec.values.append(number)
        rec.codes.append(code)
        rec.raws.append(raw)
        rec.utc.append(NAT if utc_ns is None else utc_ns)
        rec.stamps.append(None if utc_ns is not None else (stamp,))

    def _number(self, value: object) -> tuple[float, int]:
        if value is None:
            return math.nan, IS_MISSING
        if isinstance(value, bool):
            return math.nan, IS_TEXT
        if isinstance(value, int | float):
            try:
                v = float(value)
            except OverflowError:
                return math.inf, IS_TEXT
            return (v, OK) if not math.isnan(v) else (v, IS_MISSING)
        if isinstance(value, str):
            text = value.strip()
            if not text or text in self._markers:
                return math.nan, IS_MISSING
            got = self._numbers.one(text)
            return (got, OK) if got is not None else (math.nan, IS_TEXT)
        return math.nan, IS_TEXT

    def flush(self) -> ParsedChunk | None:
        """The rows collected since the last flush, checked and accounted; None if none."""
        if not self._rows:
            return None
        rows = sorted(self._rows, key=self._rows.__getitem__)
        rules, clock = self._rules, self._clock
        tally = Tally(rows, rules.cap)
        for k, sensor_id, raw, reason, detail, count in self._faults:
            tally.reject_row(k, sensor_id, raw, reason, detail, count)
        segments: list[Segment] = []
        ks_all: list[int] = []  # the values that go on to the rulebook, segment by segment
        utc_all: list[int] = []
        values_all: list[float] = []
        codes_all: list[int] = []
        raws_all: list[str] = []
        for (key, unit), rec in self._keys.items():
            spec = self.mapping.sensors.get(key)
            sensor = SensorRule.of(spec, key, unit)
            ks = np.asarray(rec.ks, dtype=np.int64)
            utc = np.asarray(rec.utc, dtype=np.int64)
            faults: list[tuple[str, str] | None] = [None] * len(rec.ks)
            pending = [j for j, s in enumerate(rec.stamps) if s is not None]
            if pending:
                got, got_faults = clock.to_utc([rec.stamps[j] for j in pending],
                                               [key] * len(pending))
                utc[pending] = got
                for j, f in zip(pending, got_faults, strict=True):
                    faults[j] = f
            rules.time_faults(utc, faults)
            sensor_id = spec.id if spec else key
            for j, f in enumerate(faults):
                if f is not None:
                    stamp = rec.stamps[j]
                    shown = str(stamp[0]) if stamp is not None else str(int(utc[j]))
                    tally.reject_row(int(ks[j]), sensor_id, shown, *f)
            good = [j for j, f in enumerate(faults) if f is None]
            if not good:
                continue
            if isinstance(sensor, str):
                reason, _, detail = sensor.partition("|")
                tally.reject_cells(sensor_id, [rec.ks[j] for j in good], [reason] * len(good),
                                   [unit or ""] * len(good), detail)
                continue
            segments.append(Segment(sensor, len(good)))
            times = utc.tolist()
            if len(good) == len(faults):
                ks_all += rec.ks
                utc_all += times
                values_all += rec.values
                codes_all += rec.codes
                raws_all += rec.raws
            else:
                ks_all += [rec.ks[j] for j in good]
                utc_all += [times[j] for j in good]
                values_all += [rec.values[j] for j in good]
                codes_all += [rec.codes[j] for j in good]
                raws_all += [rec.raws[j] for j in good]
        if segments:  # every sensor's values through the rulebook in one pass
            rules.values_of(tally, segments, np.asarray(ks_all, dtype=np.int64),
                            np.asarray(utc_all, dtype=np.int64),
                            np.asarray(values_all, dtype=np.float64),
                            np.asarray(codes_all, dtype=np.int8), raws_all,
                            non_numeric="expected a number")
        self._reset()
        return tally.finish()

    def finish(self) -> ParsedChunk:
        """Everything still collected, as one chunk (an empty one if there is none)."""
        return self.flush() or Tally([], self._rules.cap).finish()
