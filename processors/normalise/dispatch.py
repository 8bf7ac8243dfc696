"""Pick the parser for a stored upload by its content type; every parser yields ParsedChunks.

Every door reads the tenant's mapping with the one model (``contracts.mapping``):
tabular files need one; line protocol and JSON push bodies use it if registered
(``sensors``, ``timestamp``, ``missing_values``, ``window``); poller bodies carry their
``PollMapping`` in the intake event's params.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import BinaryIO

from contracts.errors import ContractError, TenantConfigError
from contracts.mapping import SourceMapping
from processors.normalise.jsonpush import iter_json_push, iter_polled
from processors.normalise.lineprotocol import iter_line_protocol
from processors.normalise.rules import ParsedChunk
from processors.normalise.tabular import parse_tabular

TABULAR = {"text/csv", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
LINE_PROTOCOL = "text/x-influx-line-protocol"
JSON = "application/json"
VALUES_PER_CHUNK = 200_000  # rows per chunk = this / number of sensors in the mapping


class UnsupportedFormat(ContractError):
    """No parser handles this content type."""


def parse(content_type: str, payload: BinaryIO, mapping_text: bytes | None,
          params: Mapping[str, str], *, received_at_ns: int,
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
        return parse_tabular(payload, mapping, chunk_rows=rows, received_at_ns=received_at_ns)
    mapping = SourceMapping.from_yaml(mapping_text) if mapping_text is not None else None
    if content_type == LINE_PROTOCOL:
        return iter_line_protocol(
            iter(lambda: payload.read(1 << 20), b""), received_at_ns=received_at_ns,
            precision=params.get("precision", "ns"), mapping=mapping)
    if content_type == JSON:
        body = payload.read()
        if source.startswith("poller:"):
            return iter_polled(body, dict(params), received_at_ns=received_at_ns)
        return iter_json_push(body, mapping=mapping, received_at_ns=received_at_ns)
    raise UnsupportedFormat(f"no parser for content type {content_type!r}; known: "
                            f"{sorted(TABULAR | {LINE_PROTOCOL, JSON})}")
