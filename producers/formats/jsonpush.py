"""JSON push bodies -> readings in SI units.  Pure: no I/O.

Two shapes, both allowed in one body::

    {"readings": [{"sensor": "p227", "ts": "2024-01-01T00:00:00Z", "value": 1.2, "unit": "l/s"}]}
    {"series": [{"sensor": "p227", "unit": "l/s", "ts": [...], "values": [...]}]}

``ts`` is an RFC 3339 / ISO 8601 string with a zone (naive ones are rejected,
``naive_time``) or epoch milliseconds (a number).  Each item of ``readings`` and each
item of ``series`` is one "line" of the accounting in ``ParseResult``; ``row`` in a
rejection is the item's 1-based position (``readings`` first, then ``series``).

An item that does not match its schema is one value rejected (``invalid_item``); a
series whose ``ts`` and ``values`` differ in length is rejected whole
(``length_mismatch``, ``count`` = its values, at least 1); an empty series is one value
rejected (``empty_series``).  Values: numbers only (strings and booleans:
``non_numeric``; null: ``missing_value``).  Units and the optional ``mapping`` work as
in ``lineprotocol`` (the sensor key is ``sensor``).

``timestamp_ns`` and ``add_json_value`` are shared with the poller.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgspec

from contracts.errors import ContractError
from contracts.push import decode_push_body
from producers.formats.lineprotocol import ParseResult, ReadingCollector, sensor_rules

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH_NS = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000,
             "epoch_ns": 1}
_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")


class TimestampRejected(Exception):
    """A timestamp could not be turned into epoch ns; ``reason`` is a rejection code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _localise(naive: datetime, tz: tzinfo) -> datetime:
    """Attach ``tz`` to a wall-clock time, refusing the repeated and the skipped DST hour."""
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
            raise TimestampRejected("nonexistent_time",
                                    f"{naive} does not exist in {tz} (DST gap)")
        raise TimestampRejected("ambiguous_time",
                                f"{naive} happens twice in {tz} (DST end); send a zone offset")
    return first


def _datetime_ns(dt: datetime, extra_ns: int = 0) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000 \
        + extra_ns


def _text_ns(text: str, fmt: str, tz: tzinfo | None) -> int:
    extra_ns = 0
    try:
        if fmt == "iso8601":
            # datetime keeps microseconds: split off the fraction to keep nanoseconds
            m = _FRACTION.search(text)
            if m:
                digits = m.group(2)[:9].ljust(9, "0")
                extra_ns = int(digits)
                text = text[:m.start()] + m.group(1) + text[m.end():]
            dt = datetime.fromisoformat(text)
        else:
            dt = datetime.strptime(text, fmt)
    except ValueError as e:
        raise TimestampRejected("bad_timestamp", f"{text[:60]!r} is not a {fmt} time: {e}") \
            from None
    if dt.tzinfo is None:
        if tz is None:
            raise TimestampRejected("naive_time", f"{text[:60]!r} has no time zone; add 'Z' "
                                                  f"or an offset such as +01:00")
        dt = _localise(dt, tz)
    return _datetime_ns(dt, extra_ns)


def _scaled(number: int | float, factor: int) -> int:
    """``number * factor`` as an int, without float rounding in the whole part."""
    if isinstance(number, int):
        return number * factor
    whole = math.floor(number)  # OverflowError / ValueError for inf / nan
    return whole * factor + round((number - whole) * factor)


def timestamp_ns(raw: object, *, fmt: str = "auto", tz: tzinfo | None = None) -> int:
    """UTC epoch ns of a JSON timestamp; raises TimestampRejected.

    ``fmt``: ``auto`` (string -> ISO 8601, number -> epoch ms), ``iso8601``,
    ``epoch_s`` / ``epoch_ms`` / ``epoch_us`` / ``epoch_ns`` (number or numeric string),
    or a ``strptime`` pattern.  ``tz``: zone for wall-clock times without an offset
    (without it they are rejected, ``naive_time``).
    """
    if fmt == "auto":
        fmt = "iso8601" if isinstance(raw, str) else "epoch_ms"
    if fmt in _EPOCH_NS:
        number: int | float
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise TimestampRejected("bad_timestamp", f"expected a number ({fmt}), got {raw!r}")
        try:
            number = raw if not isinstance(raw, str) else (
                int(raw) if raw.strip().lstrip("-").isdigit() else float(raw))
            ns = _scaled(number, _EPOCH_NS[fmt])
        except (ValueError, OverflowError):
            raise TimestampRejected("bad_timestamp", f"{raw!r} is not a {fmt} number") \
                from None
        if not _INT64_MIN <= ns <= _INT64_MAX:
            raise TimestampRejected("bad_timestamp", f"{raw!r} ({fmt}) is out of range")
        return ns
    if not isinstance(raw, str):
        raise TimestampRejected("bad_timestamp", f"expected a {fmt} string, got {raw!r}")
    ns = _text_ns(raw, fmt, tz)
    if not _INT64_MIN <= ns <= _INT64_MAX:
        raise TimestampRejected("bad_timestamp", f"{raw!r} is out of the int64 ns range")
    return ns


def number_value(raw: object) -> tuple[float | None, str]:
    """(value, "") for a JSON number; (None, reason) for anything else."""
    if raw is None:
        return None, "missing_value"
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None, "non_numeric"
    try:
        return float(raw), ""
    except OverflowError:
        return float("inf"), ""  # rejected as out_of_range by the collector


class _Reading(msgspec.Struct):
    sensor: str
    ts: str | int | float
    value: Any = None
    unit: str | None = None


class _Columns(msgspec.Struct):
    sensor: str
    ts: list[Any]
    values: list[Any]
    unit: str | None = None


_reading_decoder = msgspec.json.Decoder(_Reading)
_columns_decoder = msgspec.json.Decoder(_Columns)


def parse_json_push(body: bytes, *, mapping: Mapping[str, Mapping[str, Any]] | None = None
                    ) -> ParseResult:
    """Parse a JSON push body into SI readings (see the module doc).

    Raises ContractError when the body itself is not a push body (then nothing in it
    can be accounted for) and TenantConfigError for a bad mapping.
    """
    doc = decode_push_body(body)
    collector = ReadingCollector(sensor_rules(mapping))
    for row, raw in enumerate(doc.readings or (), start=1):
        collector.start_line()
        try:
            item = _reading_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            collector.reject(row=row, sensor_id=None, raw=_raw_text(raw), reason="invalid_item",
                             detail=f"readings[{row - 1}]: {e}")
        else:
            add_json_value(collector, row, item.sensor, item.ts, item.value, item.unit)
        collector.end_line()
    for row, raw in enumerate(doc.series or (), start=len(doc.readings or ()) + 1):
        collector.start_line()
        try:
            cols = _columns_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            collector.reject(row=row, sensor_id=None, raw=_raw_text(raw), reason="invalid_item",
                             detail=f"series item: {e}")
        else:
            sensor_id = collector.sensor_id(cols.sensor)
            if len(cols.ts) != len(cols.values):
                collector.reject(
                    row=row, sensor_id=sensor_id, raw=cols.sensor, reason="length_mismatch",
                    count=max(len(cols.values), 1),
                    detail=f"{len(cols.ts)} timestamps but {len(cols.values)} values")
            elif not cols.values:
                collector.reject(row=row, sensor_id=sensor_id, raw=cols.sensor,
                                 reason="empty_series", detail="'ts' and 'values' are empty")
            else:
                for ts, value in zip(cols.ts, cols.values, strict=True):
                    add_json_value(collector, row, cols.sensor, ts, value, cols.unit)
        collector.end_line()
    return collector.result()


def _raw_text(raw: msgspec.Raw) -> str:
    return bytes(raw)[:200].decode(errors="replace")


def _json_text(value: object) -> str:
    try:
        return msgspec.json.encode(value).decode()[:200]
    except (TypeError, OverflowError):
        return repr(value)[:200]


def add_json_value(collector: ReadingCollector, row: int, sensor: str, ts: object,
                   value: object, unit: str | None, *, fmt: str = "auto",
                   tz: tzinfo | None = None) -> None:
    """Add one decoded JSON reading to ``collector``, or reject it with a reason."""
    raw = _json_text(value)
    try:
        ts_ns = timestamp_ns(ts, fmt=fmt, tz=tz)
    except TimestampRejected as e:
        return collector.reject(row=row, sensor_id=collector.sensor_id(sensor),
                                raw=_json_text(ts), reason=e.reason, detail=e.detail)
    number, reason = number_value(value)
    if number is None:
        return collector.reject(row=row, sensor_id=collector.sensor_id(sensor), raw=raw,
                                reason=reason, detail=f"expected a number, got {raw[:60]}")
    collector.add(row=row, key=sensor, raw=raw, value=number, unit=unit, ts_ns=ts_ns)
