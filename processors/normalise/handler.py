"""Raw intake in; SI readings batches, rejections and the upload's accounting out.

``intake.received`` -> ``readings.normalised`` (batches of at most ``MAX_VALUES``
readings), ``readings.rejected`` (one reason per rejected item), then exactly one of
``intake.parsed`` (the counts: received = accepted + rejected + missing) or
``intake.failed`` (the upload as a whole could not be read).
A weather forecast (a weather poll, or a file whose mapping has a ``weather`` section)
becomes ``weather.forecast_received`` instead, with the same accounting (``weather.py``).

Pure: the runner hands over the stored bytes (``ctx.resources["payload"]``, a binary
file) and the tenant's current mapping text (``ctx.resources["mapping"]``).  Output ids
derive from the intake id *and the mapping version*, so re-parsing under a corrected
mapping yields new events instead of being dropped as duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from bus.components import Context
from contracts.base import Event
from contracts.errors import ContractError, TenantConfigError
from contracts.intake import COUNTERS, IntakeFailed, IntakeParsed, RawIntakeReceived
from contracts.readings import ReadingsNormalised, ReadingsRejected, Series
from processors.normalise import dispatch, weather
from processors.normalise.rules import ParsedChunk

NAME = "normalise"
ACCEPTS = (RawIntakeReceived,)
NEEDS = ("payload", "mapping")

MAX_VALUES = 100_000  # readings per message: ~1.8 MB of msgpack, under NATS' 8 MB limit
MAX_REJECTED = 10_000  # rejection entries per message
ALONE_BYTES = 4 * 1024 * 1024  # a larger upload is parsed with no other in flight


def handled_alone(event: RawIntakeReceived) -> bool:
    """The runner may overlap small uploads (their time is NATS round trips); a large
    one is parsed alone, so memory stays that of one large file."""
    return event.size_bytes > ALONE_BYTES


def handle(event: RawIntakeReceived, ctx: Context) -> Iterator[Event]:
    payload: BinaryIO | None = ctx.resources.get("payload")
    mapping_text: bytes | None = ctx.resources.get("mapping")
    if weather.is_forecast(event, mapping_text):  # forecasts, not readings: weather.py
        yield from weather.handle(event, ctx)
        return
    version = event.mapping_version or "-"

    def failed(reason: str, detail: str) -> IntakeFailed:
        return ctx.derive(IntakeFailed, key=version, intake_id=event.event_id,
                          reason=reason, detail=detail, source=event.source,
                          filename=event.filename)

    if payload is None:
        yield failed("payload_missing", f"object {event.object_name} is not in bucket "
                                        f"{event.bucket} (deleted or never stored)")
        return
    try:
        chunks = dispatch.parse(event.content_type, payload, mapping_text, event.params,
                                received_at_ns=_ns(event.occurred_at), source=event.source)
    except TenantConfigError as e:
        yield failed("invalid_mapping", str(e))
        return
    except dispatch.UnsupportedFormat as e:
        yield failed("unsupported_format", str(e))
        return
    except ContractError as e:
        yield failed("unparseable", str(e))
        return

    totals = _Totals()
    try:
        for i, chunk in enumerate(chunks):
            totals.add(chunk)
            for j, series in enumerate(_split(chunk.series, MAX_VALUES)):
                yield ctx.derive(ReadingsNormalised, key=f"{version}/{i}/{j}",
                                 source=event.source, series=series)
            for j in range(0, len(chunk.rejected), MAX_REJECTED):
                yield ctx.derive(ReadingsRejected, key=f"{version}/{i}/{j}",
                                 source=event.source,
                                 rejected=chunk.rejected[j:j + MAX_REJECTED])
    except ContractError as e:  # UnparseableFile, possibly part-way through a streamed file
        after = (f" (after {totals.rows_received} rows were read: {totals.values_accepted} "
                 "values accepted and published)") if totals.rows_received else ""
        yield failed("unparseable", f"{e}{after}")
        return
    if totals.rows_received == 0:
        yield failed("no_data", "the file has a header but no data rows")
        return
    yield ctx.derive(IntakeParsed, key=version, intake_id=event.event_id,
                     mapping_version=event.mapping_version, source=event.source,
                     filename=event.filename, **totals.fields())


def _ns(moment) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _split(series: list[Series], max_values: int) -> Iterator[list[Series]]:
    """Group series into batches of at most ``max_values`` readings, cutting long ones."""
    batch: list[Series] = []
    room = max_values
    for s in series:
        start = 0
        while start < len(s.values):
            take = min(room, len(s.values) - start)
            end = start + take
            batch.append(Series(sensor_id=s.sensor_id, unit=s.unit,
                                timestamps_ns=s.timestamps_ns[start:end],
                                values=s.values[start:end],
                                quality=s.quality[start:end] if s.quality else []))
            room -= take
            start = end
            if room == 0:
                yield batch
                batch, room = [], max_values
    if batch:
        yield batch


class _Totals:
    """The running accounting of one upload, chunk by chunk (outputs go out meanwhile)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.reasons: dict[str, int] = {}
        self.sensors: set[str] = set()
        self.first: int | None = None
        self.last: int | None = None

    @property
    def rows_received(self) -> int:
        return self.counts["rows_received"]

    @property
    def values_accepted(self) -> int:
        return self.counts["values_accepted"]

    def add(self, c: ParsedChunk) -> None:
        for k in COUNTERS:
            self.counts[k] += getattr(c, k)
        for r in c.rejected:
            self.reasons[r.reason] = self.reasons.get(r.reason, 0) + r.count
        for s in c.series:
            self.sensors.add(s.sensor_id)
            if s.timestamps_ns:
                lo, hi = min(s.timestamps_ns), max(s.timestamps_ns)
                self.first = lo if self.first is None else min(self.first, lo)
                self.last = hi if self.last is None else max(self.last, hi)

    def fields(self) -> dict[str, Any]:
        return dict(self.counts, reasons=dict(sorted(self.reasons.items())),
                    sensors=sorted(self.sensors), first_ts_ns=self.first, last_ts_ns=self.last)
