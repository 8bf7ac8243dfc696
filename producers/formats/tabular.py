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
  ``malformed_row`` (CSV field count differs from the header's), ``truncated_row`` (an
  unterminated last line: the file was probably cut): one entry for all of the row's cells.
- ``unknown_column`` (wide layout, non-blank cells of columns the mapping does not name,
  when ``unknown_columns: reject``), ``unknown_sensor`` and ``unknown_unit`` (long layout).

A row is accepted when at least one of its values is.  Problems with the file as a whole
raise ``UnparseableFile``.  Because CSV is streamed, that can happen after earlier chunks
were yielded (an undecodable line far down the file); callers that need all-or-nothing
must hold back what they got until the iterator ends.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import io
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from python_calamine import CalamineError, CalamineWorkbook

from contracts.errors import ContractError
from contracts.intake import COUNTERS
from contracts.readings import RejectedReading, Series
from contracts.units import to_si
from producers.mapping import SensorSpec, SourceMapping, TimestampSpec

MAX_LINE_CHARS = 1 << 20  # one CSV line longer than this (1 Mi characters) is a whole-file error
_BLOCK = 1 << 16
_BOOK_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")  # zip (xlsx, ods), OLE (xls)
_EXCEL_EPOCH_DAYS = 25_569  # 1899-12-30 .. 1970-01-01
_YEAR_1900_NS, _YEAR_2200_NS = -2_208_988_800 * 10**9, 7_258_118_400 * 10**9
_DAY_NS = 86_400 * 10**9
_RAW_MAX = 200
_NAT = int(np.iinfo(np.int64).min)  # "no time" in int64 ns arrays (pandas' NaT)
_MISSING, _NON_NUMERIC = "missing", "non_numeric"
_OK, _IS_MISSING, _IS_TEXT, _OUT_OF_RANGE, _DUPLICATE = range(5)  # cell outcome codes
_REASONS = ("accepted", _MISSING, _NON_NUMERIC, "out_of_range", "duplicate")
_DETAILS = {_MISSING: "no value (blank or a missing-value marker)",
            "duplicate": "an earlier row of this upload has a value for this sensor and instant"}

_Record = tuple[int, list, bool]  # (1-based row in the file, cells, complete)

__all__ = ["MAX_LINE_CHARS", "ParsedChunk", "UnparseableFile", "parse_tabular", "summarise"]


class UnparseableFile(ContractError):
    """The file as a whole cannot be read with its mapping; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class ParsedChunk:
    """What consecutive file rows ``first_row``..``last_row`` (1-based) yielded.

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


def parse_tabular(stream: BinaryIO, mapping: SourceMapping, *, chunk_rows: int = 50_000,
                  max_line_chars: int = MAX_LINE_CHARS) -> Iterator[ParsedChunk]:
    """Yield ``ParsedChunk``s of at most ``chunk_rows`` data rows each, in file order.

    Reads ``stream`` lazily; raises ``UnparseableFile`` for whole-file problems.
    """
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
    records = (_book_records(head + stream.read(), mapping) if is_book
               else _csv_records(head, stream, mapping, max_line_chars))
    header, data = _split_header(records, mapping)
    parser = _Parser(mapping, header, kind)
    data = (r for r in data if not _is_blank(r[1]))
    while batch := list(itertools.islice(data, chunk_rows)):
        yield parser.chunk(batch)


def summarise(chunks: Iterable[ParsedChunk]) -> dict[str, Any]:
    """Totals over chunks: the counters, rejected cells by reason, accepted values by sensor."""
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    by_reason: dict[str, int] = {}
    by_sensor: dict[str, int] = {}
    for c in chunks:
        for k in COUNTERS:
            out[k] += getattr(c, k)
        for r in c.rejected:
            by_reason[r.reason] = by_reason.get(r.reason, 0) + r.count
        for s in c.series:
            by_sensor[s.sensor_id] = by_sensor.get(s.sensor_id, 0) + len(s.values)
    out["rejected_by_reason"] = dict(sorted(by_reason.items()))
    out["accepted_by_sensor"] = dict(sorted(by_sensor.items()))
    return out


# ---------------------------------------------------------------- reading records


class _Lines:
    """Decoded text lines of a byte stream, counted, none longer than ``limit`` characters."""

    def __init__(self, head: bytes, stream: BinaryIO, encoding: str, limit: int) -> None:
        self._head, self._stream, self._encoding, self._limit = head, stream, encoding, limit
        self.count = 0
        self.unterminated = False

    def __iter__(self) -> Iterator[str]:
        codec = "utf-8-sig" if codecs.lookup(self._encoding).name == "utf-8" else self._encoding
        decoder = codecs.getincrementaldecoder(codec)(errors="strict")
        buf, block = "", self._head
        while True:
            final = not block
            try:
                buf += decoder.decode(block, final)
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start:exc.start + 4]
                guess = ("UTF-16 text (it starts with a UTF-16 byte-order mark)"
                         if self._head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
                         else "a binary file, or text in another encoding")
                line = self.count + 1 + exc.object[:exc.start].count(b"\n")
                raise UnparseableFile(
                    f"line {line}: bytes {bad!r} are not valid "
                    f"{self._encoding} (mapping says encoding {self._encoding!r}): {guess}?"
                ) from None
            start = 0
            while (end := buf.find("\n", start)) >= 0:
                yield self._checked(buf[start:end + 1])
                start = end + 1
            buf = buf[start:]
            if len(buf) > self._limit:
                self._checked(buf)
            if final:
                break
            block = self._stream.read(_BLOCK) or b""
        if buf:
            self.unterminated = True
            yield self._checked(buf)

    def _checked(self, line: str) -> str:
        self.count += 1
        if len(line) > self._limit:
            raise UnparseableFile(f"line {self.count} is longer than {self._limit} characters: "
                                  f"expected delimited text lines (a binary file?)")
        if "\x00" in line:
            raise UnparseableFile(f"line {self.count} contains NUL characters: a binary file, or "
                                  f"UTF-16 text (mapping says encoding {self._encoding!r})?")
        return line


def _csv_records(head: bytes, stream: BinaryIO, m: SourceMapping, limit: int) -> Iterator[_Record]:
    lines = _Lines(head, stream, m.encoding, limit)
    reader = csv.reader(lines, delimiter=m.delimiter, quotechar=m.quotechar)
    start = 1
    try:
        for cells in reader:
            yield start, cells, not (lines.unterminated and m.require_final_newline)
            start = lines.count + 1
    except csv.Error as exc:
        why = ("a bare carriage return inside a field: expected LF or CRLF line ends (old Mac "
               "file?)" if "new-line character" in str(exc) else str(exc))
        raise UnparseableFile(f"line {lines.count}: {why} (delimiter {m.delimiter!r}, "
                              f"quote {m.quotechar!r})") from None


def _book_records(data: bytes, m: SourceMapping) -> Iterator[_Record]:
    """Rows of the mapped sheet, numbered as the spreadsheet numbers them (1-based)."""
    book = _calamine(CalamineWorkbook.from_filelike, io.BytesIO(data))
    names = book.sheet_names
    if isinstance(m.sheet, str) and m.sheet not in names:
        raise UnparseableFile(f"mapping asks for sheet {m.sheet!r}, workbook has {names}")
    if not isinstance(m.sheet, str) and (m.sheet or 0) >= len(names):
        raise UnparseableFile(f"mapping asks for sheet index {m.sheet or 0}, workbook has {names}")
    sheet = (_calamine(book.get_sheet_by_name, m.sheet) if isinstance(m.sheet, str)
             else _calamine(book.get_sheet_by_index, m.sheet or 0))
    rows = _calamine(sheet.to_python, skip_empty_area=False)
    for i, cells in enumerate(rows):
        yield i + 1, cells, True


def _calamine(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except (CalamineError, ValueError, IndexError, OSError) as exc:
        found = " ".join(str(exc).split())
        raise UnparseableFile(f"cannot read the workbook ({found}): expected a complete "
                              f"xlsx/xls/ods file (truncated upload?)") from None


def _split_header(records: Iterator[_Record], m: SourceMapping
                  ) -> tuple[list[str], Iterator[_Record]]:
    it = iter(records)
    if m.header_row is None:
        for rec in it:
            if not _is_blank(rec[1]):
                return [str(i) for i in range(len(rec[1]))], itertools.chain([rec], it)
        raise UnparseableFile("file has no rows: expected data rows")
    for row, cells, _ in it:
        if row - 1 >= m.header_row:
            break
    else:
        raise UnparseableFile(f"file ends before its header: expected column names on row "
                              f"{m.header_row + 1}")
    header = [_cell_text(c) for c in cells]
    if header:
        header[0] = header[0].lstrip("\ufeff")
    for _ in itertools.islice(it, m.skip_rows):
        pass
    return header, it


# ---------------------------------------------------------------- the parser


@dataclass(frozen=True, slots=True)
class _Sensor:
    """A mapped sensor with its SI conversion (si = value * factor + offset) and SI range."""

    id: str
    unit: str
    si_unit: str
    factor: float
    offset: float
    lo: float
    hi: float

    @classmethod
    def of(cls, spec: SensorSpec) -> _Sensor:
        si_unit, factor, offset = to_si(spec.unit)  # type: ignore[misc]  (validated)
        return cls(spec.id, spec.unit, si_unit, factor, offset, *spec.si_range())


class _Parser:
    """Holds what must survive chunk boundaries: DST folds seen, instants accepted per sensor."""

    def __init__(self, m: SourceMapping, header: list[str], kind: str) -> None:
        self.m, self.header, self.width = m, header, len(header)
        self.numbers = _Numbers(m)
        self.clock = _Clock(m.timestamp, self.numbers)
        self.seen: dict[str, _Instants] = {}
        self.sensors = {name: _Sensor.of(spec) for name, spec in m.sensors.items()}
        where: dict[str, list[int]] = {}
        for i, name in enumerate(header):
            where.setdefault(name, []).append(i)
        needed = list(m.timestamp.columns)
        if m.layout == "long":
            needed += [c for c in (m.sensor_column, m.value_column, m.unit_column) if c]
        mapped = [n for n in self.sensors if n in where] if m.layout == "wide" else []
        shown = _clip(repr(header))
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
                                  f"{_clip(repr(sorted(m.sensors)))} found in header {shown}: "
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

    def chunk(self, records: list[_Record]) -> ParsedChunk:
        rows = [r[0] for r in records]
        tally = _Tally(rows)
        shape = [self._shape_fault(cells, complete) for _, cells, complete in records]
        keys = None
        if self.m.layout == "long":
            keys = [None if bad else _cell_text(cells[self.sensor_idx])
                    for (_, cells, _), bad in zip(records, shape, strict=True)]
        stamps = [None if bad else tuple(cells[i] for i in self.time_idx)
                  for (_, cells, _), bad in zip(records, shape, strict=True)]
        utc, time_faults = self.clock.to_utc(stamps, keys)
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
        if len(cells) == self.width or (len(cells) > self.width and _is_blank(cells[self.width:])):
            return None
        return "malformed_row", f"row has {len(cells)} fields, header has {self.width}"

    def _wide(self, tally: _Tally, records: list[_Record], shape: list, utc: np.ndarray,
              time_faults: list, stamps: list) -> None:
        formed = [k for k, bad in enumerate(shape) if not bad]
        for i in self.unknown:
            ks = [k for k in formed if not _is_blank((records[k][1][i],))]
            tally.reject_cells(None, ks, ["unknown_column"] * len(ks),
                               [records[k][1][i] for k in ks],
                               f"column {self.header[i] or f'#{i + 1} (no name)'!r} is not in "
                               f"the mapping")
        good = []
        for k in formed:
            if time_faults[k]:
                tally.reject_row(k, None, _stamp_text(stamps[k]), *time_faults[k],
                                 count=len(self.columns))
            else:
                good.append(k)
        ks = np.array(good, dtype=np.int64)
        for i, sensor in self.columns:
            cells = [records[k][1][i] for k in good]
            self._values(tally, sensor, ks, utc[ks], cells, sensor.factor, sensor.offset)

    def _long(self, tally: _Tally, records: list[_Record], shape: list, utc: np.ndarray,
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
                tally.reject_row(k, sensor.id, _stamp_text(stamps[k]), *time_faults[k])
            else:
                unit = _cell_text(records[k][1][self.unit_idx]) if self.unit_idx is not None else ""
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

    def _values(self, tally: _Tally, sensor: _Sensor, ks: np.ndarray, t: np.ndarray, cells: list,
                factor: float, offset: float) -> None:
        """Classify one sensor's cells (rows ``ks``, instants ``t``), accept the good ones."""
        values, reasons = self.numbers.column(cells)
        si = values * factor + offset
        ok = reasons == _OK
        reasons[ok & ~((si >= sensor.lo) & (si <= sensor.hi))] = _OUT_OF_RANGE
        ok = np.flatnonzero(reasons == _OK)
        seen = self.seen.get(sensor.id)
        if seen is None:
            seen = self.seen[sensor.id] = _Instants()
        reasons[ok[~seen.add_many(t[ok])]] = _DUPLICATE
        keep = reasons == _OK
        tally.accept(sensor.id, sensor.si_unit, ks[keep], t[keep], si[keep])
        bad = np.flatnonzero(~keep)
        if bad.size:
            names = [_REASONS[r] for r in reasons[bad].tolist()]
            details = {"out_of_range": f"outside the physical range [{sensor.lo:g}, {sensor.hi:g}] "
                                       f"{sensor.si_unit} ({sensor.unit} converted to SI)",
                       _NON_NUMERIC: f"expected a number with decimal mark {self.m.decimal!r}"
                                    + (f" and thousands separator {self.m.thousands!r}"
                                       if self.m.thousands else "")}
            tally.reject_cells(sensor.id, ks[bad].tolist(), names, [cells[j] for j in bad.tolist()],
                               details)


def _stamp_text(stamp: tuple | None) -> str:
    return " ".join(_cell_text(c) for c in stamp or ())


# ---------------------------------------------------------------- numbers and times


class _Numbers:
    """Reads cells as floats in the file's notation (decimal mark, thousands separator)."""

    def __init__(self, m: SourceMapping) -> None:
        d, t = re.escape(m.decimal), m.thousands
        whole = r"\d+" if t is None else rf"(?:\d{{1,3}}(?:{re.escape(t)}\d{{3}})+|\d+)"
        num = rf"[+-]?(?:{whole}(?:{d}\d*)?|{d}\d+)(?:[eE][+-]?\d+)?"
        self._match = re.compile(num, re.ASCII).fullmatch
        self._match_all = re.compile(rf"(?:{num}\n)*{num}", re.ASCII).fullmatch
        self._decimal, self._thousands = m.decimal, t
        self._missing = frozenset(m.missing_values)
        # a missing-value marker that looks like a number ("-9999") needs the per-cell path
        self._fast = not any(self._match(x) for x in self._missing)

    def column(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """(values, outcome codes) of a column of cells; a value is NaN unless its code is _OK."""
        fast = self._column_of_plain_numbers(cells) if self._fast and cells else None
        return fast if fast is not None else self._column_cell_by_cell(cells)

    def _column_of_plain_numbers(self, cells: list) -> tuple[np.ndarray, np.ndarray] | None:
        """The common case in one regex pass: every cell is number text, nothing else
        (no blanks, markers, spaces or spreadsheet numbers); None otherwise."""
        try:
            text = "\n".join(cells)
        except TypeError:  # spreadsheet numbers or empty cells: not plain text
            return None
        if text.count("\n") != len(cells) - 1 or not self._match_all(text):
            return None
        if self._thousands:
            text = text.replace(self._thousands, "")
        if self._decimal != ".":
            text = text.replace(self._decimal, ".")
        values = np.fromiter(map(float, text.split("\n")), dtype=np.float64, count=len(cells))
        outcome = np.full(len(cells), _OK, dtype=np.int8)
        outcome[~np.isfinite(values)] = _IS_TEXT
        return values, outcome

    def _column_cell_by_cell(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        values: list[float] = []
        codes: list[int] = []
        match, markers = self._match, self._missing
        thousands, decimal = self._thousands, self._decimal
        nan = math.nan
        for cell in cells:
            kind = type(cell)
            if kind is str:
                text = cell.strip()
                if not text or text in markers:
                    values.append(nan)
                    codes.append(_IS_MISSING)
                elif match(text) is None:
                    values.append(nan)
                    codes.append(_IS_TEXT)
                else:
                    if thousands:
                        text = text.replace(thousands, "")
                    values.append(float(text.replace(decimal, ".")))
                    codes.append(_OK)
            elif kind is float or kind is int:
                values.append(cell)
                codes.append(_OK)
            else:
                values.append(nan)
                codes.append(_IS_MISSING if cell is None else _IS_TEXT)
        array, outcome = np.array(values, dtype=np.float64), np.array(codes, dtype=np.int8)
        outcome[(outcome == _OK) & ~np.isfinite(array)] = _IS_TEXT
        return array, outcome

    def one(self, cell: Any) -> float | None:
        values, codes = self.column([cell])
        return float(values[0]) if codes[0] == _OK else None


class _Clock:
    """Raw timestamp cells -> UTC epoch ns, resolving the repeated autumn hour across chunks.

    ``infer`` takes the first pass through an ambiguous hour as summer time and switches
    to winter time when the wall clock goes back (per sensor in long layout); a file in
    descending time order is recognised and resolved the other way round.
    """

    def __init__(self, spec: TimestampSpec, numbers: _Numbers) -> None:
        self.spec, self.numbers = spec, numbers
        self.prev: dict[Any, int] = {}  # last valid wall time per key
        self.folds: dict[tuple[Any, int], list] = {}  # (key, local day) -> [last, switched, desc]
        zone = ZoneInfo(spec.timezone)  # does the zone change its offset over the year?
        offsets = {zone.utcoffset(datetime(y, mo, 1)) for y in (2000, 2024) for mo in (1, 7)}
        self.shifts = len(offsets) > 1

    def to_utc(self, stamps: list[tuple | None], keys: list | None
               ) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
        """UTC epoch ns per row (_NAT where a fault is given) and the fault (reason, detail)."""
        n = len(stamps)
        wall = np.full(n, _NAT, np.int64)
        fixed = np.full(n, _NAT, np.int64)  # instants that carry their own offset (epoch, %z)
        texts: list[str] = []
        where: list[int] = []
        for k, cells in enumerate(stamps):
            if cells is None:
                continue
            if len(cells) == 1 and type(cells[0]) is str:
                texts.append(cells[0].strip())
                where.append(k)
                continue
            native = self._native(cells)
            if native is None:
                texts.append(_stamp_text(cells))
                where.append(k)
            elif native[0]:
                fixed[k] = native[1]
            else:
                wall[k] = native[1]
        if texts:
            w, f = self._parse_texts(texts)
            wall[where], fixed[where] = w, f
        utc, faults = self._localize(wall, keys)
        utc = np.where(fixed != _NAT, fixed, utc)
        detail = f"expected a time in format {self.spec.format!r}"
        for k in np.flatnonzero((wall == _NAT) & (fixed == _NAT)).tolist():
            faults[k] = ("unparseable_time", detail)
        return utc, faults

    def _native(self, cells: tuple) -> tuple[bool, int] | None:
        """(is_utc, ns) for spreadsheet datetimes and numbers; None means parse as text."""
        first = cells[0]
        if len(cells) == 1 and isinstance(first, datetime):
            return (first.tzinfo is not None, _ns(first))
        if isinstance(first, date) and (len(cells) == 1 or isinstance(cells[1], time)):
            moment = datetime.combine(first if not isinstance(first, datetime) else first.date(),
                                      cells[1] if len(cells) > 1 else time())
            return (False, _ns(moment)) if len(cells) <= 2 else None
        if len(cells) == 1 and type(first) in (int, float) and self.spec.format != "iso":
            return self._number_time(float(first))
        return None

    def _number_time(self, v: float) -> tuple[bool, int] | None:
        fmt = self.spec.format
        if not math.isfinite(v) or "%" in fmt:
            return None
        ms = (v - _EXCEL_EPOCH_DAYS) * 86_400_000 if fmt == "excel-serial" else (
            v * 1000 if fmt == "epoch-s" else v)
        ns = round(ms) * 10**6
        return (fmt != "excel-serial", ns) if _YEAR_1900_NS <= ns < _YEAR_2200_NS else (False, _NAT)

    def _parse_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        fmt, n = self.spec.format, len(texts)
        wall, fixed = np.full(n, _NAT, np.int64), np.full(n, _NAT, np.int64)
        if fmt in ("excel-serial", "epoch-s", "epoch-ms"):
            for k, text in enumerate(texts):
                v = self.numbers.one(text)
                got = self._number_time(v) if v is not None else None
                if got:
                    (fixed if got[0] else wall)[k] = got[1]
            return wall, fixed
        s = pd.Series(texts, dtype=object)
        if fmt == "iso":
            aware = s.str.contains(r"(?:Z|[+-]\d\d(?::?\d\d)?)$", regex=True).to_numpy(bool)
        else:
            aware = np.full(n, "%z" in fmt)
        for mask, target, utc in ((~aware, wall, False), (aware, fixed, True)):
            if mask.any():
                got = pd.to_datetime(s[mask], format="ISO8601" if fmt == "iso" else fmt,
                                     errors="coerce", utc=utc)
                if utc:
                    got = got.dt.tz_localize(None)
                got = got.where(got.notna() & (got >= pd.Timestamp("1900-01-01"))
                                & (got < pd.Timestamp("2200-01-01")))
                target[mask] = got.astype("datetime64[ns]").to_numpy().view(np.int64)
        return wall, fixed

    def _localize(self, wall: np.ndarray, keys: list | None
                  ) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
        n, zone = len(wall), self.spec.timezone
        faults: list[tuple[str, str] | None] = [None] * n
        index = pd.DatetimeIndex(wall.view("M8[ns]"))
        summer = index.tz_localize(zone, ambiguous=np.ones(n, bool), nonexistent="NaT").asi8
        winter = index.tz_localize(zone, ambiguous=np.zeros(n, bool), nonexistent="NaT").asi8
        valid = wall != _NAT
        for k in np.flatnonzero(valid & (summer == _NAT)).tolist():
            faults[k] = ("nonexistent_local_time",
                         f"this wall-clock time does not exist in {zone} (clocks jump forward)")
        utc = summer.copy()
        ambiguous = valid & (summer != _NAT) & (summer != winter)
        if self.spec.ambiguous == "standard":
            utc[ambiguous] = winter[ambiguous]
        elif self.spec.ambiguous == "infer" and self.shifts:
            amb = ambiguous.tolist()
            for k, t in enumerate(wall.tolist()):
                if t == _NAT:
                    continue
                key = keys[k] if keys else None
                if amb[k] and not self._is_summer(key, t):
                    utc[k] = winter[k]
                self.prev[key] = t
        return utc, faults

    def _is_summer(self, key: Any, t: int) -> bool:
        fold = self.folds.get((key, t // _DAY_NS))
        if fold is None:
            prev = self.prev.get(key)
            fold = self.folds[(key, t // _DAY_NS)] = [t, False, prev is not None and prev > t]
        elif not fold[1] and (t >= fold[0] if fold[2] else t <= fold[0]):
            fold[1] = True
        fold[0] = t
        return fold[1] == fold[2]  # ascending: summer until the switch; descending: after it


def _ns(moment: datetime) -> int:
    """Epoch ns of a spreadsheet datetime, rounded to the millisecond (Excel's float noise)."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if not pd.Timestamp("1900") <= stamp < pd.Timestamp("2200"):
        return _NAT
    return round(stamp.as_unit("ns").value / 10**6) * 10**6


# ---------------------------------------------------------------- bookkeeping


class _Tally:
    """One chunk's outcomes; like rejections of one sensor in consecutive rows become one entry."""

    _ANY_RAW = frozenset({_MISSING, "unknown_column"})  # aggregate even when the raw text differs

    def __init__(self, rows: list[int]) -> None:
        self.rows = rows  # chunk index k -> 1-based row in the file
        self.row_ok = np.zeros(len(rows), dtype=bool)
        self.parts: dict[str, tuple[str, list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {}
        self.rejected: list[RejectedReading] = []
        self.accepted = self.refused = self.missing = 0

    def accept(self, sensor_id: str, si_unit: str, ks: np.ndarray, t: np.ndarray,
               values: np.ndarray) -> None:
        if ks.size:
            unit, kss, ts, vs = self.parts.setdefault(sensor_id, (si_unit, [], [], []))
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
            raw = _clip(str(cell))
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
        if reason == _MISSING:
            self.missing += count
        else:
            self.refused += count
        self.rejected.append(RejectedReading(row=row, sensor_id=sensor_id, raw=_clip(raw),
                                             reason=reason, detail=detail, count=count))

    def finish(self) -> ParsedChunk:
        series = []
        for sensor_id, (unit, kss, ts, vs) in self.parts.items():
            order = np.argsort(np.concatenate(kss), kind="stable")
            series.append(Series(sensor_id=sensor_id, unit=unit,
                                 timestamps_ns=np.concatenate(ts)[order].tolist(),
                                 values=np.concatenate(vs)[order].tolist()))
        self.rejected.sort(key=lambda r: (r.row or 0, r.sensor_id or ""))
        accepted_rows = int(self.row_ok.sum())
        return ParsedChunk(
            series=series, rejected=self.rejected, rows_received=len(self.rows),
            rows_accepted=accepted_rows, rows_rejected=len(self.rows) - accepted_rows,
            values_received=self.accepted + self.refused + self.missing,
            values_accepted=self.accepted, values_rejected=self.refused,
            values_missing=self.missing, first_row=self.rows[0], last_row=self.rows[-1])


class _Instants:
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


def _clip(text: str) -> str:
    return text[:_RAW_MAX]


def _cell_text(cell: Any) -> str:
    """A cell as stripped text; spreadsheet numbers that are whole print without '.0'."""
    if isinstance(cell, str):
        return cell.strip()
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def _is_blank(cells: Iterable[Any]) -> bool:
    for c in cells:
        if c is not None and (type(c) is not str or c.strip()):
            return False
    return True
