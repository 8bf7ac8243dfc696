"""Pick the parser for a stored upload by its content type; every parser yields ParsedChunks.

Tabular files (CSV, XLSX) need the tenant's ``SourceMapping``.  Line protocol and JSON
push bodies read their sensors from the data; a mapping, if registered, is optional and
only its ``sensors`` section is used (``{key: {id, unit, range}}``).  Poller bodies
carry their own mapping in the intake event's params.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import yaml

from contracts.errors import ContractError, TenantConfigError
from producers.formats.jsonpush import parse_json_push
from producers.formats.lineprotocol import ParseResult, parse_line_protocol
from producers.formats.tabular import ParsedChunk, parse_tabular
from producers.mapping import SourceMapping
from producers.poller import parse_polled

TABULAR = {"text/csv", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
LINE_PROTOCOL = "text/x-influx-line-protocol"
JSON = "application/json"
VALUES_PER_CHUNK = 200_000  # rows per chunk = this / number of sensors in the mapping


class UnsupportedFormat(ContractError):
    """No parser handles this content type."""


def parse(content_type: str, payload: BinaryIO, mapping_text: bytes | None,
          params: Mapping[str, str], *, received_at_ns: int = 0,
          source: str = "") -> Iterator[ParsedChunk]:
    """Chunks of an upload.  TenantConfigError: the mapping is missing or invalid;
    other ContractError (UnparseableFile): the bytes cannot be read as that format."""
    if content_type in TABULAR:
        if mapping_text is None:
            raise TenantConfigError(
                f"a {content_type} upload needs a source mapping; none is registered "
                "under the upload's mapping id")
        mapping = SourceMapping.from_yaml(mapping_text)
        rows = max(100, VALUES_PER_CHUNK // max(1, len(mapping.sensors)))
        return parse_tabular(payload, mapping, chunk_rows=rows)
    if content_type == LINE_PROTOCOL:
        result = parse_line_protocol(
            iter(lambda: payload.read(1 << 20), b""), received_at_ns=received_at_ns,
            precision=params.get("precision", "ns"), mapping=_sensors(mapping_text))
        return iter([_as_chunk(result)])
    if content_type == JSON:
        body = payload.read()
        if source.startswith("poller:"):
            return iter([_as_chunk(parse_polled(body, dict(params)))])
        return iter([_as_chunk(parse_json_push(body, mapping=_sensors(mapping_text)))])
    raise UnsupportedFormat(f"no parser for content type {content_type!r}; known: "
                            f"{sorted(TABULAR | {LINE_PROTOCOL, JSON})}")


def _sensors(mapping_text: bytes | None) -> dict[str, Any] | None:
    if mapping_text is None:
        return None
    try:
        doc = yaml.safe_load(mapping_text) or {}
    except yaml.YAMLError as e:
        raise TenantConfigError(f"mapping is not valid YAML: {e}") from e
    sensors = doc.get("sensors") if isinstance(doc, dict) else None
    if not isinstance(sensors, dict):
        raise TenantConfigError("mapping has no 'sensors' section (a mapping of key -> "
                                "{id, unit, range})")
    return sensors


def _as_chunk(r: ParseResult) -> ParsedChunk:
    """A push body is one chunk; its lines (or JSON items) are the rows."""
    return ParsedChunk(
        series=r.series, rejected=r.rejected, rows_received=r.lines_received,
        rows_accepted=r.lines_accepted, rows_rejected=r.lines_rejected,
        values_received=r.values_received, values_accepted=r.values_accepted,
        values_rejected=r.values_rejected, values_missing=0, first_row=1,
        last_row=r.lines_received)
