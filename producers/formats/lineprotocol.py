"""InfluxDB / Telegraf line protocol -> readings in SI units.  Pure: no I/O.

One reading per numeric field::

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

Escapes follow InfluxDB (docs.influxdata.com, "line protocol"): in measurements, tag
keys/values and field keys a backslash escapes ``,``, ``=``, space and ``\\``; string
field values are double-quoted with ``\\"`` and ``\\\\``.  Field values: floats
(``1.5``, ``-2e3``), integers ``3i``, unsigned ``3u``, booleans (``t``, ``true``,
``F``...), strings.  Only numbers become readings; booleans and strings are rejected
(``non_numeric``).

The sensor key of a field is ``measurement.<tag values sorted by tag key>.field``
(the ``unit`` tag is not part of it), e.g. ``flow,site=p227 value=3.2`` ->
``flow.p227.value``.  A ``mapping`` (``{sensor_key: {"id", "unit", "range"}}``) renames
the sensor, sets its unit and bounds its values; the mapping's unit wins over a
``unit=`` tag.  A value whose unit is unknown is rejected (``unknown_unit``).

Accounting: a line (blank lines and ``#`` comments do not count) is accepted when at
least one of its values is.  A line that cannot be parsed at all counts as one value
received and rejected (``malformed_line``), so ``sum(r.count for r in rejected) ==
values_rejected`` always holds.

``ParseResult``, ``SensorRule`` and ``ReadingCollector`` are shared by the other push
formats (``jsonpush``, the poller).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from contracts.errors import ContractError, TenantConfigError
from contracts.push import PRECISION_NS, normalise_precision
from contracts.readings import RejectedReading, Series
from contracts.units import known_units, to_si

MAX_LINE_BYTES = 64 * 1024
_RAW_KEEP = 200  # characters of offending input kept in a RejectedReading
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# ---------------------------------------------------------------- shared by push formats

@dataclass(frozen=True, slots=True)
class ParseResult:
    """Readings parsed from one upload.

    ``series``: accepted values in SI units, timestamps UTC epoch ns.  ``rejected``: one
    entry per refused value (or group, see ``count``).  ``lines_*`` count input records
    (a line of line protocol, an item of a JSON body); ``lines_received =
    lines_accepted + lines_rejected`` and ``values_received = values_accepted +
    values_rejected``.
    """

    series: list[Series]
    rejected: list[RejectedReading]
    lines_received: int
    lines_accepted: int
    lines_rejected: int
    values_received: int
    values_accepted: int
    values_rejected: int

    def reasons(self) -> dict[str, int]:
        """Rejected values by reason code (summing ``count``)."""
        out: dict[str, int] = {}
        for r in self.rejected:
            out[r.reason] = out.get(r.reason, 0) + r.count
        return out


@dataclass(frozen=True, slots=True)
class SensorRule:
    """What a mapping says about one sensor key: its id, unit and bounds (in ``unit``)."""

    sensor_id: str
    unit: str | None = None
    low: float | None = None
    high: float | None = None


def sensor_rules(mapping: Mapping[str, Mapping[str, Any]] | None) -> dict[str, SensorRule]:
    """Validate a plain ``{sensor_key: {"id", "unit", "range": [low, high]}}`` dict.

    Every entry field is optional; ``range`` bounds are inclusive, in the source unit,
    either may be null.  Raises TenantConfigError on a malformed entry.
    """
    rules: dict[str, SensorRule] = {}
    for key, spec in (mapping or {}).items():
        if not isinstance(spec, Mapping):
            raise TenantConfigError(f"mapping entry {key!r}: expected an object, got {spec!r}")
        sensor_id, unit, rng = spec.get("id") or key, spec.get("unit"), spec.get("range")
        if not isinstance(sensor_id, str) or (unit is not None and not isinstance(unit, str)):
            raise TenantConfigError(f"mapping entry {key!r}: 'id' and 'unit' must be strings")
        low = high = None
        if rng is not None:
            if (not isinstance(rng, list | tuple) or len(rng) != 2 or not all(
                    b is None or (isinstance(b, int | float) and not isinstance(b, bool))
                    for b in rng)):
                raise TenantConfigError(
                    f"mapping entry {key!r}: 'range' must be [low, high] numbers or null; "
                    f"got {rng!r}")
            low, high = rng
        if unit is not None and to_si(unit) is None:
            raise TenantConfigError(
                f"mapping entry {key!r}: unit {unit!r} is unknown; known: {known_units()}")
        rules[key] = SensorRule(sensor_id, unit, low, high)
    return rules


class ReadingCollector:
    """Accumulates one upload's readings and its accounting; ``result()`` freezes it.

    Call ``start_line()`` / ``end_line()`` around each input record and ``add`` /
    ``reject`` for each value in between.
    """

    def __init__(self, rules: Mapping[str, SensorRule] | None = None) -> None:
        self._rules = rules or {}
        self._series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self._units: dict[str, tuple[str, float, float] | None] = {}
        self._rejected: list[RejectedReading] = []
        self._line_ok = False
        self.lines_received = self.lines_accepted = 0
        self.values_accepted = self.values_rejected = 0

    def sensor_id(self, key: str) -> str:
        """The id a sensor key is published under (the mapping's, or the key itself)."""
        rule = self._rules.get(key)
        return rule.sensor_id if rule else key

    def start_line(self) -> None:
        self.lines_received += 1
        self._line_ok = False

    def end_line(self) -> None:
        if self._line_ok:
            self.lines_accepted += 1

    def reject(self, *, row: int | None, sensor_id: str | None, raw: str, reason: str,
               detail: str = "", count: int = 1) -> None:
        self.values_rejected += count
        self._rejected.append(RejectedReading(row=row, sensor_id=sensor_id, raw=raw[:_RAW_KEEP],
                                              reason=reason, detail=detail, count=count))

    def add(self, *, row: int, key: str, raw: str, value: float, unit: str | None,
            ts_ns: int) -> None:
        """Convert ``value`` (in ``unit``, or the mapping's unit) to SI and keep it, or reject."""
        rule = self._rules.get(key)
        sensor_id = rule.sensor_id if rule else key
        if rule and rule.unit:
            unit = rule.unit
        if not unit:
            return self.reject(row=row, sensor_id=sensor_id, raw=raw, reason="unknown_unit",
                               detail="no unit: send a 'unit' or map the sensor to one")
        conv = self._units.get(unit, ...)
        if conv is ...:
            conv = self._units[unit] = to_si(unit)
        if conv is None:
            return self.reject(row=row, sensor_id=sensor_id, raw=raw, reason="unknown_unit",
                               detail=f"unit {unit!r} has no SI conversion")
        if not math.isfinite(value) or (rule and (
                (rule.low is not None and value < rule.low)
                or (rule.high is not None and value > rule.high))):
            bounds = f"[{rule.low}, {rule.high}] {unit}" if rule else "finite numbers"
            return self.reject(row=row, sensor_id=sensor_id, raw=raw, reason="out_of_range",
                               detail=f"expected a value in {bounds}, got {value!r}")
        si_unit, factor, offset = conv
        ts, values = self._series.setdefault((sensor_id, si_unit), ([], []))
        ts.append(ts_ns)
        values.append(value * factor + offset)
        self.values_accepted += 1
        self._line_ok = True

    def result(self) -> ParseResult:
        series = [Series(sensor_id=sid, unit=unit, timestamps_ns=ts, values=vals)
                  for (sid, unit), (ts, vals) in self._series.items()]
        return ParseResult(
            series=series, rejected=self._rejected,
            lines_received=self.lines_received, lines_accepted=self.lines_accepted,
            lines_rejected=self.lines_received - self.lines_accepted,
            values_received=self.values_accepted + self.values_rejected,
            values_accepted=self.values_accepted, values_rejected=self.values_rejected)


# ---------------------------------------------------------------- line protocol

_MEASUREMENT = re.compile(r"(?:[^\\, ]|\\.)*", re.S)
_NAME = re.compile(r"(?:[^\\,= ]|\\.)*", re.S)
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_UNQUOTED = re.compile(r"[^, ]*")
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[-+]?\d+", re.ASCII)
_UNSIGNED = re.compile(r"\d+", re.ASCII)
_TIMESTAMP = re.compile(r"-?\d+", re.ASCII)
_ESCAPE = re.compile(r"\\([,= \\])")
_STRING_ESCAPE = re.compile(r'\\(["\\])')
_BOOLEANS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True,
             "f": False, "F": False, "false": False, "False": False, "FALSE": False}


class _Malformed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    raw: str
    value: float | bool | str


def _unescape(s: str) -> str:
    return _ESCAPE.sub(r"\1", s) if "\\" in s else s


def _field_value(token: str) -> float | bool:
    if _FLOAT.fullmatch(token):
        return float(token)
    if token in _BOOLEANS:
        return _BOOLEANS[token]
    suffix, digits = token[-1:], token[:-1]
    if suffix == "i" and _INTEGER.fullmatch(digits) and _INT64_MIN <= int(digits) <= _INT64_MAX:
        return float(int(digits))
    if suffix == "u" and _UNSIGNED.fullmatch(digits) and int(digits) < 2**64:
        return float(int(digits))
    raise _Malformed(f"field value {token!r} is not a number (1.5, 3i, 3u), boolean or "
                     f"quoted string")


_Parsed = tuple[str, list[tuple[str, str]], list[_Field], str | None]


def _parse_line(line: str) -> _Parsed:
    """(measurement, tags, fields, timestamp text or None); _Malformed on a syntax error."""
    return _parse_plain(line) or _parse_escaped(line)


def _parse_plain(line: str) -> _Parsed | None:
    """Fast path for the common line without escapes or strings; None: use the full scanner."""
    if "\\" in line or '"' in line:
        return None
    parts = line.split(" ")
    if not 2 <= len(parts) <= 3:
        return None
    measurement, *tag_items = parts[0].split(",")
    if not measurement:
        return None
    tags, fields = [], []
    for item in tag_items:
        key, _, value = item.partition("=")
        if not key or not value or "=" in value:
            return None
        tags.append((key, value))
    for item in parts[1].split(","):
        key, _, raw = item.partition("=")
        if not key or not raw or "=" in raw:
            return None
        try:
            fields.append(_Field(key, raw, _field_value(raw)))
        except _Malformed:
            return None
    return measurement, tags, fields, parts[2] if len(parts) == 3 else None


def _parse_escaped(line: str) -> _Parsed:
    n = len(line)
    m = _MEASUREMENT.match(line)
    i = m.end()
    if i == 0:
        raise _Malformed("line starts without a measurement name")
    measurement, tags, fields = _unescape(m.group()), [], []
    while i < n and line[i] == ",":
        k = _NAME.match(line, i + 1)
        j = k.end()
        if j == i + 1 or j >= n or line[j] != "=":
            raise _Malformed(f"expected tag 'key=value' at column {i + 2}")
        v = _NAME.match(line, j + 1)
        if v.end() == j + 1:
            raise _Malformed(f"tag {k.group()!r} has an empty value")
        tags.append((_unescape(k.group()), _unescape(v.group())))
        i = v.end()
    if i >= n or line[i] != " ":
        raise _Malformed("expected a space and then fields after the measurement and tags")
    while i < n and line[i] == " ":
        i += 1
    while True:
        k = _NAME.match(line, i)
        j = k.end()
        if j == i or j >= n or line[j] != "=":
            raise _Malformed(f"expected field 'key=value' at column {i + 1}")
        j += 1
        if j < n and line[j] == '"':
            s = _STRING.match(line, j)
            if s is None:
                raise _Malformed(f"unterminated string value for field {k.group()!r}")
            raw, value, i = s.group(), _STRING_ESCAPE.sub(r"\1", s.group(1)), s.end()
        else:
            u = _UNQUOTED.match(line, j)
            raw, i = u.group(), u.end()
            value = _field_value(raw)
        fields.append(_Field(_unescape(k.group()), raw, value))
        if i < n and line[i] == ",":
            i += 1
            continue
        break
    if i >= n:
        return measurement, tags, fields, None
    if line[i] != " ":
        raise _Malformed(f"unexpected {line[i]!r} after field {fields[-1].key!r}")
    ts = line[i:].strip(" ")
    if " " in ts:
        raise _Malformed(f"unexpected text after the timestamp: {ts!r}")
    return measurement, tags, fields, ts


def _iter_lines(data: bytes | Iterable[bytes], max_line_bytes: int
                ) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, line bytes or None if longer than ``max_line_bytes``).

    Memory stays bounded by one line plus one chunk, whatever the input size.
    """
    chunks = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    lineno, buf, too_long = 0, bytearray(), False
    for chunk in chunks:
        chunk = bytes(chunk)
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                if not too_long:
                    buf += chunk[start:]
                    if len(buf) > max_line_bytes:
                        too_long = True
                        buf.clear()
                break
            lineno += 1
            if too_long or len(buf) + nl - start > max_line_bytes:
                yield lineno, None
            elif buf:
                buf += chunk[start:nl]
                yield lineno, bytes(buf)
            else:
                yield lineno, chunk[start:nl]
            buf.clear()
            too_long, start = False, nl + 1
    if buf or too_long:
        yield lineno + 1, None if too_long else bytes(buf)


def parse_line_protocol(
    data: bytes | Iterable[bytes], *, received_at_ns: int, precision: str = "ns",
    mapping: Mapping[str, Mapping[str, Any]] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ParseResult:
    """Parse line protocol (bytes, or an iterable of byte chunks) into SI readings.

    ``precision``: unit of the timestamps (see ``normalise_precision``); a line without
    one is stamped ``received_at_ns`` (UTC epoch ns).  ``mapping``: see the module doc.
    Raises ContractError for an unknown precision and TenantConfigError for a bad
    mapping; everything wrong inside the data becomes a ``RejectedReading``.
    """
    factor = PRECISION_NS[normalise_precision(precision)]
    collector = ReadingCollector(sensor_rules(mapping))
    for lineno, raw in _iter_lines(data, max_line_bytes):
        if raw is None:
            collector.start_line()
            collector.reject(row=lineno, sensor_id=None, raw="", reason="malformed_line",
                             detail=f"line longer than {max_line_bytes} bytes")
            collector.end_line()
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            collector.start_line()
            collector.reject(row=lineno, sensor_id=None, raw=raw[:_RAW_KEEP].decode("latin-1"),
                             reason="malformed_line", detail=f"not UTF-8: {e.reason}")
            collector.end_line()
            continue
        line = line.strip(" \t\r\ufeff" if lineno == 1 else " \t\r")
        if not line or line.startswith("#"):
            continue
        collector.start_line()
        _collect_line(collector, lineno, line, factor, received_at_ns)
        collector.end_line()
    return collector.result()


def _collect_line(collector: ReadingCollector, lineno: int, line: str, factor: int,
                  received_at_ns: int) -> None:
    try:
        measurement, tags, fields, ts_text = _parse_line(line)
    except _Malformed as e:
        collector.reject(row=lineno, sensor_id=None, raw=line, reason="malformed_line",
                         detail=str(e))
        return
    unit = None
    parts = [measurement]
    for key, value in sorted(tags):
        if key == "unit":
            unit = value
        else:
            parts.append(value)
    prefix = ".".join(parts)
    ts_ns, ts_error = received_at_ns, ""
    if ts_text is not None:
        if not _TIMESTAMP.fullmatch(ts_text):
            ts_error = f"timestamp {ts_text[:40]!r} is not an integer"
        elif not _INT64_MIN <= (ts_ns := int(ts_text) * factor) <= _INT64_MAX:
            ts_error = f"timestamp {ts_text!r} x {factor} ns is outside the int64 ns range"
    for f in fields:
        key = f"{prefix}.{f.key}"
        if ts_error:
            collector.reject(row=lineno, sensor_id=collector.sensor_id(key), raw=f.raw,
                             reason="bad_timestamp",
                             detail=ts_error)
        elif isinstance(f.value, bool | str):
            collector.reject(row=lineno, sensor_id=collector.sensor_id(key), raw=f.raw,
                             reason="non_numeric",
                             detail=f"field {f.key!r} is a {type(f.value).__name__}, "
                                    f"not a number")
        else:
            collector.add(row=lineno, key=key, raw=f.raw, value=f.value, unit=unit, ts_ns=ts_ns)
