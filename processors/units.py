"""Convert reported readings to SI units; reject what cannot be converted.

Pure: no I/O, no NATS.  ``ReadingsReported`` in, ``ReadingsNormalised`` (values in the
SI unit of their quantity) and, if anything was refused, ``ReadingsRejected`` out.
"""

from __future__ import annotations

import math

from bus.components import Context
from contracts.base import Event
from contracts.units import known_units, to_si
from contracts.readings import (
    ReadingsNormalised, ReadingsRejected, ReadingsReported, RejectedReading, Series,
)

NAME = "normalise-units"
ACCEPTS = (ReadingsReported,)

def handle(event: ReadingsReported, ctx: Context) -> list[Event]:
    accepted: list[Series] = []
    rejected: list[RejectedReading] = []
    for s in event.series:
        conv = to_si(s.unit)
        if conv is None:
            rejected.append(RejectedReading(
                row=None, sensor_id=s.sensor_id, raw=s.unit, reason="unknown_unit",
                detail=f"unit {s.unit!r} has no SI conversion; known: {known_units()}",
                count=len(s.values)))
            continue
        si_unit, factor, offset = conv
        ts, values, quality = [], [], []
        for i, (t, v) in enumerate(zip(s.timestamps_ns, s.values, strict=True)):
            if not math.isfinite(v):
                rejected.append(RejectedReading(
                    row=i, sensor_id=s.sensor_id, raw=repr(v), reason="not_finite",
                    detail="value is NaN or infinite"))
                continue
            ts.append(t)
            values.append(v * factor + offset)
            if s.quality:
                quality.append(s.quality[i])
        if values:
            accepted.append(Series(sensor_id=s.sensor_id, unit=si_unit, timestamps_ns=ts,
                                   values=values, quality=quality))
    out: list[Event] = []
    if accepted:
        out.append(ctx.derive(ReadingsNormalised, source=event.source, series=accepted))
    if rejected:
        out.append(ctx.derive(ReadingsRejected, source=event.source, rejected=rejected))
    return out
