"""Parse a utility's CSV/TXT or XLSX file into SI readings, chunk by chunk, as its mapping says.

Pure apart from reading ``stream``.  CSV is streamed: memory is bounded by ``chunk_rows``
and ``max_line_chars`` (plus the duplicate detector, which keeps runs of regular instants,
not every instant), never by the file size.  XLSX is read whole, then yielded in chunks too.

Every received cell ends up exactly once either as a value of a ``Series`` (float, in the
SI unit of its quantity: si = value * factor + offset from ``contracts.units.to_si``; time
as UTC epoch ns) or inside a ``RejectedReading`` (``count`` cells, stable ``reason``):

- ``missing``: blank cell (always) or one of ``missing_values``; consecutive rows of one
  sensor are one entry.  ``non_numeric``: not a number in the mapping's notation (decimal
  mark, thousands separator; no nan/inf).  ``out_of_range``: outside the sensor's range.
- ``duplicate``: this sensor already has an accepted value at this UTC instant in the
  upload (the first accepted value wins).
- ``unparseable_time``, ``nonexistent_local_time`` (spring-forward gap),
  ``ambiguous_local_time`` (policy ``reject``), ``implausible_time`` (outside the window),
  ``malformed_row`` (CSV field count differs from the header's), ``truncated_row`` (an
  unterminated last line: the file was probably cut): one entry for all of the row's cells.
- ``invalid_sensor_id``: a mapped id breaks the one sensor-id rule (all its cells).
- ``unknown_column`` (wide layout, non-blank cells of columns the mapping does not name,
  when ``unknown_columns: reject``), ``unknown_sensor`` and ``unknown_unit`` (long layout).

The checks are the one rulebook of every door (``processors.normalise.rules``).
A row is accepted when at least one of its values is.  Problems with the file as a whole
raise ``UnparseableFile``.  Because CSV is streamed, that can happen after earlier chunks
were yielded (an undecodable line far down the file); callers that need all-or-nothing
must hold back what they got until the iterator ends.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from contracts.errors import TenantConfigError
from contracts.mapping import SourceMapping
from contracts.units import to_si
from processors.normalise.clock import Clock
from processors.normalise.numbers import Numbers, cell_text, is_blank, stamp_text
from processors.normalise.rules import (
    ParsedChunk, Rulebook, SensorRule, Tally, Window, clip, summarise,
)
from processors.normalise.tabular.records import (
    Record, UnparseableFile, book_records, csv_records, split_header,
)

MAX_LINE_CHARS = 1 << 20  # one CSV line longer than this (1 Mi characters) is a whole-file error
_BLOCK = 1 << 16
_BOOK_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")  # zip (xlsx, ods), OLE (xls)

__all__ = ["MAX_LINE_CHARS", "ParsedChunk", "UnparseableFile", "parse_tabular", "summarise"]


def parse_tabular(stream: BinaryIO, mapping: SourceMapping, *, chunk_rows: int = 50_000,
                  max_line_chars: int = MAX_LINE_CHARS, received_at_ns: int | None = None
                  ) -> Iterator[ParsedChunk]:
    """Yield ``ParsedChunk``s of at most ``chunk_rows`` data rows each, in file order.

    Reads ``stream`` lazily; raises ``UnparseableFile`` for whole-file problems (and
    ``TenantConfigError`` if the mapping cannot read files).  ``received_at_ns``: when
    the upload arrived (the time window's reference; default now).
    """
    if (problem := mapping.file_problem()) is not None:
        raise TenantConfigError(f"the mapping cannot read a file: {problem}")
    if received_at_ns is None:
        received_at_ns = time.time_ns()
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    head = b""
    while len(head) < len(_BOOK_MAGIC[1]) and (more := stream.read(_BLOCK)):
        head += more  # a raw stream may return short reads; the signature needs 8 bytes
    if not head:
        raise UnparseableFile("file is empty: expected a header row and data rows")
    is_book = head.startswith(_BOOK_MAGIC)
    if mapping.format == "csv" and is_book:
        raise UnparseableFile("mapping says csv but the file is a spreadsheet (zip/OLE container)")
    if mapping.format == "xlsx" and not is_book:
        raise UnparseableFile(f"mapping says xlsx but the file does not start with a zip/OLE "
                              f"signature: found {head[:12]!r}")
    kind = "xlsx" if is_book else "csv"
    records = (book_records(head + stream.read(), mapping) if is_book
               else csv_records(head, stream, mapping, max_line_chars))
    header, data = split_header(records, mapping)
    parser = _Parser(mapping, header, kind, Rulebook(Window.of(mapping.window, received_at_ns)))
    data = (r for r in data if not is_blank(r[1]))
    while batch := list(itertools.islice(data, chunk_rows)):
        yield parser.chunk(batch)


# ---------------------------------------------------------------- the parser


class _Parser:
    """Holds what must survive chunk boundaries: DST folds seen, instants accepted per sensor."""

    def __init__(self, m: SourceMapping, header: list[str], kind: str, rules: Rulebook) -> None:
        self.m, self.header, self.width = m, header, len(header)
        self.numbers = Numbers(m)
        self.clock = Clock(m.timestamp, self.numbers)
        self.rules = rules
        self.sensors: dict[str, SensorRule] = {
            name: SensorRule.of(spec, name, None) for name, spec in m.sensors.items()}
        where: dict[str, list[int]] = {}
        for i, name in enumerate(header):
            where.setdefault(name, []).append(i)
        needed = list(m.timestamp.columns)
        if m.layout == "long":
            needed += [c for c in (m.sensor_column, m.value_column, m.unit_column) if c]
        mapped = [n for n in self.sensors if n in where] if m.layout == "wide" else []
        shown = clip(repr(header))
        for name in (*needed, *mapped):
            if len(where.get(name, ())) > 1:
                raise UnparseableFile(f"column {name!r} appears {len(where[name])} times in "
                                      f"header {shown}")
        absent = [c for c in needed if c not in where]
        if len(absent) == len(needed) and not mapped:
            hint = (f"wrong delimiter? mapping says {m.delimiter!r}" if kind == "csv"
                    and self.width <= 1 else "is this mapping for another file?")
            raise UnparseableFile(f"no column of the mapping found in header {shown}: {hint}")
        if absent:
            raise UnparseableFile(f"column {absent[0]!r} of the mapping not found in header "
                                  f"{shown}")
        if m.layout == "wide" and not mapped:
            raise UnparseableFile(f"none of the mapped sensor columns "
                                  f"{clip(repr(sorted(m.sensors)))} found in header {shown}: "
                                  f"a mapping for another file?")
        self.time_idx = [where[c][0] for c in m.timestamp.columns]
        self.columns = [(where[n][0], self.sensors[n]) for n in mapped]
        known = {*needed, *m.sensors}
        self.unknown = ([i for i, h in enumerate(header) if h not in known]
                        if m.layout == "wide" and m.unknown_columns == "reject" else [])
        if m.layout == "long":
            self.sensor_idx = where[m.sensor_column][0]
            self.value_idx = where[m.value_column][0]
            self.unit_idx = where[m.unit_column][0] if m.unit_column else None

    def chunk(self, records: list[Record]) -> ParsedChunk:
        rows = [r[0] for r in records]
        tally = Tally(rows, self.rules.cap)
        shape = [self._shape_fault(cells, complete) for _, cells, complete in records]
        keys = None
        if self.m.layout == "long":
            keys = [None if bad else cell_text(cells[self.sensor_idx])
                    for (_, cells, _), bad in zip(records, shape, strict=True)]
        stamps = [None if bad else tuple(cells[i] for i in self.time_idx)
                  for (_, cells, _), bad in zip(records, shape, strict=True)]
        utc, time_faults = self.clock.to_utc(stamps, keys)
        self.rules.time_faults(utc, time_faults)
        per_row = len(self.columns) if self.m.layout == "wide" else 1
        for k in (k for k, bad in enumerate(shape) if bad):
            tally.reject_row(k, None, self.m.delimiter.join(map(str, records[k][1])), *shape[k],
                             count=per_row)
        if self.m.layout == "wide":
            self._wide(tally, records, shape, utc, time_faults, stamps)
        else:
            self._long(tally, records, shape, utc, time_faults, stamps, keys)
        return tally.finish()

    def _shape_fault(self, cells: list, complete: bool) -> tuple[str, str] | None:
        if not complete:
            return "truncated_row", "last line has no line terminator: the file looks cut short"
        if len(cells) == self.width or (len(cells) > self.width and is_blank(cells[self.width:])):
            return None
        return "malformed_row", f"row has {len(cells)} fields, header has {self.width}"

    def _wide(self, tally: Tally, records: list[Record], shape: list, utc: np.ndarray,
              time_faults: list, stamps: list) -> None:
        formed = [k for k, bad in enumerate(shape) if not bad]
        for i in self.unknown:
            ks = [k for k in formed if not is_blank((records[k][1][i],))]
            tally.reject_cells(None, ks, ["unknown_column"] * len(ks),
                               [records[k][1][i] for k in ks],
                               f"column {self.header[i] or f'#{i + 1} (no name)'!r} is not in "
                               f"the mapping")
        good = []
        for k in formed:
            if time_faults[k]:
                tally.reject_row(k, None, stamp_text(stamps[k]), *time_faults[k],
                                 count=len(self.columns))
            else:
                good.append(k)
        ks = np.array(good, dtype=np.int64)
        for i, sensor in self.columns:
            cells = [records[k][1][i] for k in good]
            self._values(tally, sensor, ks, utc[ks], cells, sensor.factor, sensor.offset)

    def _long(self, tally: Tally, records: list[Record], shape: list, utc: np.ndarray,
              time_faults: list, stamps: list, keys: list) -> None:
        groups: dict[tuple[str, str], list[int]] = {}
        unknown: dict[str, list[int]] = {}
        for k, code in enumerate(keys):
            if shape[k]:
                continue
            sensor = self.sensors.get(code)
            if sensor is None:
                unknown.setdefault(code, []).append(k)
            elif time_faults[k]:
                tally.reject_row(k, sensor.id, stamp_text(stamps[k]), *time_faults[k])
            else:
                unit = cell_text(records[k][1][self.unit_idx]) if self.unit_idx is not None else ""
                groups.setdefault((code, unit), []).append(k)
        for code, ks in unknown.items():
            tally.reject_cells(None, ks, ["unknown_sensor"] * len(ks), [code] * len(ks),
                               f"sensor code {code!r} is not in the mapping")
        for (code, unit), good in groups.items():
            sensor = self.sensors[code]
            conv = to_si(unit) if unit else (sensor.si_unit, sensor.factor, sensor.offset)
            if conv is None or conv[0] != sensor.si_unit:
                tally.reject_cells(sensor.id, good, ["unknown_unit"] * len(good),
                                   [unit] * len(good),
                                   f"unit {unit!r} is not a known unit of {sensor.si_unit}")
                continue
            ks = np.array(good, dtype=np.int64)
            cells = [records[k][1][self.value_idx] for k in good]
            self._values(tally, sensor, ks, utc[ks], cells, conv[1], conv[2])

    def _values(self, tally: Tally, sensor: SensorRule, ks: np.ndarray, t: np.ndarray,
                cells: list, factor: float, offset: float) -> None:
        """Read one sensor's cells as numbers, then the rulebook's checks."""
        values, codes = self.numbers.column(cells)
        notation = (f"expected a number with decimal mark {self.m.decimal!r}"
                    + (f" and thousands separator {self.m.thousands!r}" if self.m.thousands
                       else ""))
        self.rules.values(tally, sensor, ks, t, values, codes, cells, factor=factor,
                          offset=offset, non_numeric=notation)
