"""Convert reported readings to SI units; reject what cannot be converted.

Pure: no I/O, no NATS.  ``ReadingsReported`` in, ``ReadingsNormalised`` (values in the
SI unit of their quantity) and, if anything was refused, ``ReadingsRejected`` out.
"""

from __future__ import annotations

import math

from bus.runner import Context
from contracts.base import Event
from contracts.readings import (
    ReadingsNormalised, ReadingsRejected, ReadingsReported, RejectedReading, Series,
)

NAME = "normalise-units"
ACCEPTS = (ReadingsReported,)

# unit as reported (lower-cased) -> (SI unit, factor, offset): si = value * factor + offset
_UNITS: dict[str, tuple[str, float, float]] = {
    # volumetric flow
    "m3/s": ("m3/s", 1.0, 0.0), "m³/s": ("m3/s", 1.0, 0.0),
    "m3/h": ("m3/s", 1 / 3600, 0.0), "m³/h": ("m3/s", 1 / 3600, 0.0),
    "m3/d": ("m3/s", 1 / 86400, 0.0), "l/s": ("m3/s", 1e-3, 0.0),
    "l/min": ("m3/s", 1e-3 / 60, 0.0), "ml/d": ("m3/s", 1e3 / 86400, 0.0),
    "gpm": ("m3/s", 6.309019640e-5, 0.0),
    # length: levels, heads, rainfall depth
    "m": ("m", 1.0, 0.0), "cm": ("m", 1e-2, 0.0), "mm": ("m", 1e-3, 0.0),
    "ft": ("m", 0.3048, 0.0),
    # pressure
    "pa": ("Pa", 1.0, 0.0), "kpa": ("Pa", 1e3, 0.0), "bar": ("Pa", 1e5, 0.0),
    "mbar": ("Pa", 1e2, 0.0), "psi": ("Pa", 6894.757293168, 0.0),
    # power, energy
    "w": ("W", 1.0, 0.0), "kw": ("W", 1e3, 0.0), "mw": ("W", 1e6, 0.0),
    "j": ("J", 1.0, 0.0), "kwh": ("J", 3.6e6, 0.0), "mwh": ("J", 3.6e9, 0.0),
    # temperature (degree Celsius is the SI-derived unit operators read)
    "degc": ("degC", 1.0, 0.0), "°c": ("degC", 1.0, 0.0), "c": ("degC", 1.0, 0.0),
    "k": ("degC", 1.0, -273.15), "degf": ("degC", 5 / 9, -32 * 5 / 9),
    # speed, ratios
    "m/s": ("m/s", 1.0, 0.0), "km/h": ("m/s", 1 / 3.6, 0.0),
    "%": ("1", 1e-2, 0.0), "1": ("1", 1.0, 0.0),
    # prices
    "eur/mwh": ("EUR/MWh", 1.0, 0.0), "eur/kwh": ("EUR/MWh", 1e3, 0.0),
}


def to_si(unit: str) -> tuple[str, float, float] | None:
    """(SI unit, factor, offset) for ``unit``, or None if it is not known."""
    return _UNITS.get(unit.strip().lower())


def handle(event: ReadingsReported, ctx: Context) -> list[Event]:
    accepted: list[Series] = []
    rejected: list[RejectedReading] = []
    for s in event.series:
        conv = to_si(s.unit)
        if conv is None:
            rejected.append(RejectedReading(
                row=None, sensor_id=s.sensor_id, raw=s.unit, reason="unknown_unit",
                detail=f"unit {s.unit!r} has no SI conversion; known: {sorted(set(_UNITS))}",
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
