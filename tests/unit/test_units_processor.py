"""The unit-normalising processor, on literal events (no servers)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from bus.components import Context
from contracts.readings import ReadingsNormalised, ReadingsRejected, ReadingsReported, Series
from contracts.units import to_si
from processors.normalise import reported as units

T = datetime(2024, 1, 1, tzinfo=UTC)


def event(*series: Series) -> ReadingsReported:
    return ReadingsReported(event_id="in-1", tenant="acme", occurred_at=T, recorded_at=T,
                            correlation_id="corr", source="test", series=list(series))


def ctx(e) -> Context:
    return Context(processor=units.NAME, now=T, input=e)


@pytest.mark.parametrize("unit,value,si_unit,expected", [
    ("l/s", 79.0, "m3/s", 0.079), ("m3/h", 3600.0, "m3/s", 1.0), ("bar", 2.5, "Pa", 250000.0),
    ("kW", 55.0, "W", 55000.0), ("degF", 212.0, "degC", 100.0), ("K", 273.15, "degC", 0.0),
    ("km/h", 36.0, "m/s", 10.0), ("%", 55.0, "1", 0.55), ("mm", 2.0, "m", 0.002),
])
def test_conversions(unit, value, si_unit, expected):
    si, factor, offset = to_si(unit)
    assert si == si_unit
    assert value * factor + offset == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_converts_and_accounts_for_every_value():
    e = event(Series(sensor_id="q", unit="L/s", timestamps_ns=[1, 2, 3],
                     values=[1.0, math.nan, 3.0]),
              Series(sensor_id="x", unit="bogus", timestamps_ns=[1, 2], values=[1.0, 2.0]))
    out = units.handle(e, ctx(e))
    norm, rej = out
    assert isinstance(norm, ReadingsNormalised) and isinstance(rej, ReadingsRejected)
    assert norm.series[0].values == [0.001, 0.003] and norm.series[0].timestamps_ns == [1, 3]
    assert norm.series[0].unit == "m3/s"
    assert {(r.reason, r.count) for r in rej.rejected} == {("missing", 1), ("unknown_unit", 2)}
    received = sum(len(s.values) for s in e.series)
    assert norm.reading_count + sum(r.count for r in rej.rejected) == received
    assert norm.causation_id == "in-1" and norm.correlation_id == "corr"


def test_same_input_same_output_ids():
    e = event(Series(sensor_id="q", unit="m", timestamps_ns=[1], values=[1.0]))
    a = units.handle(e, ctx(e))
    b = units.handle(e, Context(processor=units.NAME, now=datetime.now(UTC), input=e))
    assert [o.event_id for o in a] == [o.event_id for o in b]


def test_nothing_rejected_means_no_rejection_event():
    e = event(Series(sensor_id="q", unit="m", timestamps_ns=[1], values=[1.0]))
    assert [type(o) for o in units.handle(e, ctx(e))] == [ReadingsNormalised]
