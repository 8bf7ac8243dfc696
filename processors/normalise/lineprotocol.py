"""InfluxDB / Telegraf line protocol -> readings in SI units.  Pure: no I/O.

One reading per field::

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

Escapes follow InfluxDB (docs.influxdata.com, "line protocol"): in measurements, tag
keys/values and field keys a backslash escapes ``,``, ``=``, space and ``\\``; string
field values are double-quoted with ``\\"`` and ``\\\\``.  Field values: floats
(``1.5``, ``-2e3``), integers ``3i``, unsigned ``3u``, booleans (``t``, ``true``,
``F``...), strings.  Numbers become readings; a string that is one of the mapping's
missing-value markers is ``missing``; other strings and booleans are ``non_numeric``.

The sensor key of a field is ``measurement.<tag values sorted by tag key>.field``
(the ``unit`` tag is not part of it), e.g. ``flow,site=p227 value=3.2`` ->
``flow.p227.value``.  The mapping's ``sensors`` rename a key, set its unit (which wins
over a ``unit=`` tag) and bound its values.  Every value then goes through the one
rulebook (``processors.normalise.push``): sensor id, unit, time window, range, duplicates.

Accounting: a line (blank lines and ``#`` comments do not count) is accepted when at
least one of its values is.  A line that cannot be parsed at all counts as one value
received and rejected (``malformed_row``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from contracts.mapping import SourceMapping
from contracts.push import PRECISION_NS, normalise_precision
from processors.normalise.push import CHUNK_ROWS, PushRecords
from processors.normalise.rules import ParsedChunk, merge

MAX_LINE_BYTES = 64 * 1024
_RAW_KEEP = 200  # characters of offending input kept in a RejectedReading
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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


def parse_line_protocol(data: bytes | Iterable[bytes], **kw) -> ParsedChunk:
    """The whole of a (small) body as one chunk; see ``iter_line_protocol``."""
    return merge(iter_line_protocol(data, **kw))


def iter_line_protocol(
    data: bytes | Iterable[bytes], *, received_at_ns: int, precision: str = "ns",
    mapping: SourceMapping | None = None, max_line_bytes: int = MAX_LINE_BYTES,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[ParsedChunk]:
    """Parse line protocol (bytes, or an iterable of byte chunks) into SI readings,
    ``chunk_rows`` lines per chunk (memory does not grow with the body).

    ``precision``: unit of the timestamps (see ``contracts.push.normalise_precision``); a
    line without one is stamped ``received_at_ns`` (UTC epoch ns), as InfluxDB does.
    Raises ContractError for an unknown precision; everything wrong inside the data
    becomes a ``RejectedReading``.
    """
    factor = PRECISION_NS[normalise_precision(precision)]
    records = PushRecords(mapping, received_at_ns, chunk_rows=chunk_rows)
    for lineno, raw in _iter_lines(data, max_line_bytes):
        if records.full():
            yield records.flush()
        if raw is None:
            records.reject(row=lineno, sensor_id=None, raw="", reason="malformed_row",
                           detail=f"line longer than {max_line_bytes} bytes")
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            records.reject(row=lineno, sensor_id=None, raw=raw[:_RAW_KEEP].decode("latin-1"),
                           reason="malformed_row", detail=f"not UTF-8: {e.reason}")
            continue
        line = line.strip(" \t\r\ufeff" if lineno == 1 else " \t\r")
        if not line or line.startswith("#"):
            continue
        records.row(lineno)
        _collect_line(records, lineno, line, factor, received_at_ns)
    yield records.finish()


def _collect_line(records: PushRecords, lineno: int, line: str, factor: int,
                  received_at_ns: int) -> None:
    try:
        measurement, tags, fields, ts_text = _parse_line(line)
    except _Malformed as e:
        records.reject(row=lineno, sensor_id=None, raw=line, reason="malformed_row",
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
            records.reject(row=lineno, sensor_id=records.sensor_id(key), raw=f.raw,
                           reason="unparseable_time", detail=ts_error)
        else:
            records.add(row=lineno, key=key, raw=f.raw, value=f.value, unit=unit,
                        utc_ns=ts_ns)
