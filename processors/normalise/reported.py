"""``normalise-units``: readings a source reported in its own units -> SI, by the one rulebook.

Pure: no I/O, no NATS.  ``readings.reported`` in, ``readings.normalised`` (values in the
SI unit of their quantity) and, if anything was refused, ``readings.rejected`` out.  The
same checks as every other door: sensor id, unit, time window (relative to the event's
``occurred_at``), finite values (NaN is ``missing``), duplicates within the event.
"""

from __future__ import annotations

from bus.components import Context
from contracts.base import Event
from contracts.readings import ReadingsNormalised, ReadingsRejected, ReadingsReported
from processors.normalise.push import PushRecords

NAME = "normalise-units"
ACCEPTS = (ReadingsReported,)


def handle(event: ReadingsReported, ctx: Context) -> list[Event]:
    received_ns = int(event.occurred_at.timestamp()) * 10**9
    records = PushRecords(None, received_ns + event.occurred_at.microsecond * 1000)
    row = 0
    for s in event.series:
        for t, v in zip(s.timestamps_ns, s.values, strict=True):
            row += 1
            records.row(row)
            records.add(row=row, key=s.sensor_id, raw=repr(v), value=v, unit=s.unit,
                        utc_ns=t)
    chunk = records.finish()
    out: list[Event] = []
    if chunk.series:
        out.append(ctx.derive(ReadingsNormalised, source=event.source, series=chunk.series))
    if chunk.rejected:
        out.append(ctx.derive(ReadingsRejected, source=event.source, rejected=chunk.rejected))
    return out
