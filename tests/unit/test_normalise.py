"""The normalise processor on literal uploads (no servers): outputs, ids, accounting."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from bus.components import Context
from contracts.intake import IntakeFailed, IntakeParsed, RawIntakeReceived
from contracts.readings import ReadingsNormalised, ReadingsRejected, Series
from processors.normalise import handler as normalise

T = datetime(2024, 3, 31, tzinfo=UTC)
MAPPING = b"""
format: csv
delimiter: ";"
decimal: ","
layout: wide
timestamp: {column: Timestamp, format: "%Y-%m-%d %H:%M:%S", timezone: Europe/Rome}
sensors:
  Q: {id: q1, unit: l/s, range: [0, 100]}
  L: {id: t1, unit: m, range: [0, 10]}
"""
CSV = (b"Timestamp;Q;L\r\n2024-03-31 01:00:00;10,5;2,0\r\n2024-03-31 02:30:00;11;2,1\r\n"
       b"2024-03-31 03:00:00;abc;2,2\r\n2024-03-31 04:00:00;500;#N/A\r\n")


def raw(version: str = "v1", content_type: str = "text/csv") -> RawIntakeReceived:
    return RawIntakeReceived(event_id="intake-1", tenant="acme", occurred_at=T, recorded_at=T,
                             source="file", filename="x.csv", bucket="b", object_name="acme/x",
                             sha256="0" * 64, size_bytes=len(CSV), content_type=content_type,
                             mapping_id="m", mapping_version=version)


def run(event, payload: bytes | None = CSV, mapping: bytes | None = MAPPING):
    ctx = Context(processor=normalise.NAME, now=T, input=event,
                  resources={"payload": io.BytesIO(payload) if payload is not None else None,
                             "mapping": mapping})
    return list(normalise.handle(event, ctx))


def test_readings_rejections_and_accounting():
    out = run(raw())
    norm = [o for o in out if isinstance(o, ReadingsNormalised)]
    rej = [o for o in out if isinstance(o, ReadingsRejected)]
    (parsed,) = [o for o in out if isinstance(o, IntakeParsed)]
    values = {(s.sensor_id, t, v) for e in norm for s in e.series
              for t, v in zip(s.timestamps_ns, s.values, strict=True)}
    # 01:00 CET = 00:00Z; 03:00 CEST = 01:00Z; 02:30 does not exist on 31 March in Rome
    t0 = int(datetime(2024, 3, 31, 0, tzinfo=UTC).timestamp()) * 10**9
    t1 = int(datetime(2024, 3, 31, 1, tzinfo=UTC).timestamp()) * 10**9
    assert ("q1", t0, 0.0105) in values and ("t1", t1, 2.2) in values
    reasons = {r.reason: r.count for e in rej for r in e.rejected}
    assert reasons == {"nonexistent_local_time": 2, "non_numeric": 1, "out_of_range": 1,
                       "missing": 1}
    assert parsed.values_received == 8
    assert parsed.values_accepted == len(values) == 3
    assert parsed.values_received == (parsed.values_accepted + parsed.values_rejected
                                      + parsed.values_missing)
    assert parsed.rows_received == parsed.rows_accepted + parsed.rows_rejected == 4
    assert parsed.intake_id == "intake-1" and parsed.causation_id == "intake-1"
    assert parsed.reasons == reasons and parsed.sensors == ["q1", "t1"]


def test_output_ids_depend_on_input_and_mapping_version():
    a = [o.event_id for o in run(raw("v1"))]
    assert a == [o.event_id for o in run(raw("v1"))]
    b = [o.event_id for o in run(raw("v2"))]
    assert not set(a) & set(b)


def test_whole_file_failures_are_events_not_crashes():
    cases = {
        "payload_missing": run(raw(), payload=None),
        "invalid_mapping": run(raw(), mapping=b"format: csv\nsensors: 3\n"),
        "unparseable": run(raw(), payload=b""),
    }
    cases["invalid_mapping_none"] = run(raw(), mapping=None)
    for expected, out in cases.items():
        (failed,) = out
        assert isinstance(failed, IntakeFailed) and failed.detail
        assert failed.reason == expected.removesuffix("_none")


def test_unknown_content_type_fails_clearly():
    (failed,) = run(raw(content_type="application/pdf"))
    assert failed.reason == "unsupported_format" and "application/pdf" in failed.detail


def test_split_keeps_every_reading_and_respects_the_cap():
    series = [Series(sensor_id=f"s{i}", unit="m", timestamps_ns=list(range(n)),
                     values=[float(x) for x in range(n)]) for i, n in enumerate([5, 12, 1])]
    batches = list(normalise._split(series, 4))
    assert all(sum(len(s.values) for s in b) <= 4 for b in batches)
    got = [(s.sensor_id, t) for b in batches for s in b for t in s.timestamps_ns]
    want = [(s.sensor_id, t) for s in series for t in s.timestamps_ns]
    assert got == want
