"""JSON push bodies (and polled JSON) -> readings in SI units.  Pure: no I/O.

Two shapes, both allowed in one body::

    {"readings": [{"sensor": "p227", "ts": "2024-01-01T00:00:00Z", "value": 1.2, "unit": "l/s"}]}
    {"series": [{"sensor": "p227", "unit": "l/s", "ts": [...], "values": [...]}]}

``ts`` is an RFC 3339 / ISO 8601 string or epoch milliseconds (a number), unless the
mapping's ``timestamp`` says otherwise; wall-clock times need the mapping's
``timestamp.timezone`` (else ``naive_time``) and go through the one DST clock.  Each item
of ``readings`` and each item of ``series`` is one row of the accounting; ``row`` in a
rejection is the item's 1-based position (``readings`` first, then ``series``).

An item that does not match its schema, a series whose ``ts`` and ``values`` differ in
length (``count`` = its values) or an empty series: ``malformed_row``.  Values: numbers;
null or a missing-value marker is ``missing``; other text and booleans ``non_numeric``.
Then the one rulebook (``processors.normalise.push``).

``parse_polled`` reads a poller's response with its ``PollMapping`` (JSON paths).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from pydantic import ValidationError

from contracts.errors import ContractError, TenantConfigError
from contracts.mapping import PollMapping, SourceMapping, compile_path, select
from contracts.push import decode_push_body
from processors.normalise.push import CHUNK_ROWS, PushRecords
from processors.normalise.rules import ParsedChunk, merge


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


def parse_json_push(body: bytes, **kw) -> ParsedChunk:
    """The whole of a (small) body as one chunk; see ``iter_json_push``."""
    return merge(iter_json_push(body, **kw))


def iter_json_push(body: bytes, *, mapping: SourceMapping | None = None,
                   received_at_ns: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[ParsedChunk]:
    """Parse a JSON push body into SI readings (see the module doc), ``chunk_rows`` items
    per chunk.  Raises ContractError when the body itself is not a push body (then
    nothing in it can be accounted for).
    """
    doc = decode_push_body(body)
    records = PushRecords(mapping, received_at_ns, chunk_rows=chunk_rows)
    for row, raw in enumerate(doc.readings or (), start=1):
        if records.full():
            yield records.flush()
        records.row(row)
        try:
            item = _reading_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            records.reject(row=row, sensor_id=None, raw=_raw_text(raw), reason="malformed_row",
                           detail=f"readings[{row - 1}]: {e}")
            continue
        records.add(row=row, key=item.sensor, raw=_json_text(item.value), value=item.value,
                    unit=item.unit, stamp=item.ts)
    for row, raw in enumerate(doc.series or (), start=len(doc.readings or ()) + 1):
        if records.full():
            yield records.flush()
        records.row(row)
        try:
            cols = _columns_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            records.reject(row=row, sensor_id=None, raw=_raw_text(raw), reason="malformed_row",
                           detail=f"series item: {e}")
            continue
        sensor_id = records.sensor_id(cols.sensor)
        if len(cols.ts) != len(cols.values):
            records.reject(row=row, sensor_id=sensor_id, raw=cols.sensor, reason="malformed_row",
                           count=max(len(cols.values), 1),
                           detail=f"{len(cols.ts)} timestamps but {len(cols.values)} values")
        elif not cols.values:
            records.reject(row=row, sensor_id=sensor_id, raw=cols.sensor, reason="malformed_row",
                           detail="'ts' and 'values' are empty")
        else:
            for ts, value in zip(cols.ts, cols.values, strict=True):
                records.add(row=row, key=cols.sensor, raw=_json_text(value), value=value,
                            unit=cols.unit, stamp=ts)
    yield records.finish()


def parse_polled(body: bytes, params: Mapping[str, str], **kw) -> ParsedChunk:
    """The whole of a (small) polled body as one chunk; see ``iter_polled``."""
    return merge(iter_polled(body, params, **kw))


def iter_polled(body: bytes, params: Mapping[str, str], *, received_at_ns: int,
                chunk_rows: int = CHUNK_ROWS) -> Iterator[ParsedChunk]:
    """Readings in SI units from a polled response and its intake params (pure).

    Each item reached by ``items`` is one row of the accounting.  Raises
    TenantConfigError when ``params`` lack a valid mapping and ContractError when
    ``body`` is not JSON.
    """
    try:
        poll = PollMapping.model_validate_json(params["mapping"])
    except KeyError:
        raise TenantConfigError("intake params lack 'mapping' (not a poller intake?)") \
            from None
    except ValidationError as e:
        raise TenantConfigError(f"poller mapping in the intake params is invalid: {e}") \
            from None
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise ContractError(f"polled body is not JSON: {e}") from None
    records = PushRecords(poll.source_mapping(), received_at_ns, chunk_rows=chunk_rows)
    paths = {name: compile_path(p) for name, p in (
        ("sensor", poll.sensor), ("ts", poll.ts), ("value", poll.value),
        ("unit", poll.unit or ""))}
    for row, item in enumerate(select(doc, compile_path(poll.items)), start=1):
        if records.full():
            yield records.flush()
        records.row(row)
        sensor = poll.sensor_id or _first(item, paths["sensor"])
        if isinstance(sensor, int) and not isinstance(sensor, bool):
            sensor = str(sensor)
        if not isinstance(sensor, str) or not sensor:
            records.reject(row=row, sensor_id=None, raw=_json_text(item), reason="malformed_row",
                           detail=f"no sensor name at path {poll.sensor!r}")
            continue
        unit = _first(item, paths["unit"]) if poll.unit else None
        value = _first(item, paths["value"])
        records.add(row=row, key=sensor, raw=_json_text(value), value=value,
                    unit=unit if isinstance(unit, str) else None,
                    stamp=_first(item, paths["ts"]))
    yield records.finish()


def _first(item: Any, steps) -> Any:
    found = select(item, steps)
    return found[0] if found else None


def _raw_text(raw: msgspec.Raw) -> str:
    return bytes(raw)[:200].decode(errors="replace")


def _json_text(value: object) -> str:
    try:
        return msgspec.json.encode(value).decode()[:200]
    except (TypeError, OverflowError):
        return repr(value)[:200]
