"""JSON push parser: both shapes, per-item reasons, time zones, accounting identities."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ContractError
from contracts.push import check_push_shape
from producers.formats.jsonpush import (
    TimestampRejected, parse_json_push, timestamp_ns,
)
from producers.formats.lineprotocol import ParseResult

JAN1_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z


def push(doc: object, **kw) -> ParseResult:
    return parse_json_push(msgspec.json.encode(doc), **kw)


def assert_identities(r: ParseResult) -> None:
    assert r.lines_received == r.lines_accepted + r.lines_rejected
    assert r.values_received == r.values_accepted + r.values_rejected
    assert r.values_accepted == sum(len(s.values) for s in r.series)
    assert r.values_rejected == sum(x.count for x in r.rejected)


def test_readings_with_iso_and_epoch_ms_timestamps():
    r = push({"readings": [
        {"sensor": "p227", "ts": "2024-01-01T00:00:00Z", "value": 1.2, "unit": "l/s"},
        {"sensor": "p227", "ts": "2024-01-01T01:00:00.5+01:00", "value": 2, "unit": "l/s"},
        {"sensor": "p227", "ts": 1704067260000, "value": 3.0, "unit": "l/s"},
        {"sensor": "t1", "ts": 1704067200000.25, "value": 250, "unit": "cm"},
    ]})
    [p227, t1] = r.series
    assert (p227.sensor_id, p227.unit) == ("p227", "m3/s")
    assert p227.timestamps_ns == [JAN1_NS, JAN1_NS + 500_000_000, JAN1_NS + 60 * 10**9]
    assert p227.values == pytest.approx([0.0012, 0.002, 0.003])
    assert (t1.unit, t1.values, t1.timestamps_ns) == ("m", [2.5], [JAN1_NS + 250_000])
    assert (r.lines_received, r.lines_accepted, r.rejected) == (4, 4, [])


def test_nanosecond_fractions_are_kept():
    r = push({"readings": [{"sensor": "a", "ts": "2024-01-01T00:00:00.123456789Z",
                            "value": 1, "unit": "m"}]})
    assert r.series[0].timestamps_ns == [JAN1_NS + 123_456_789]


def test_columnar_series():
    r = push({"series": [{"sensor": "T1", "unit": "m",
                          "ts": ["2024-01-01T00:00:00Z", 1704067500000], "values": [1.5, 1.6]}]})
    assert r.series[0].timestamps_ns == [JAN1_NS, JAN1_NS + 300 * 10**9]
    assert r.series[0].values == [1.5, 1.6]
    assert (r.lines_received, r.values_received) == (1, 2)


def test_both_shapes_in_one_body_number_rows_in_order():
    r = push({"readings": [{"sensor": "a", "ts": 0, "value": 1, "unit": "m"}],
              "series": [{"sensor": "b", "ts": [0], "values": ["x"], "unit": "m"}]})
    assert [(x.row, x.sensor_id, x.reason) for x in r.rejected] == [(2, "b", "non_numeric")]


def test_per_item_reasons():
    r = push({"readings": [
        {"sensor": "a", "ts": "2024-01-01T00:00:00", "value": 1, "unit": "m"},
        {"sensor": "a", "ts": "2024-13-01T00:00:00Z", "value": 1, "unit": "m"},
        {"sensor": "a", "ts": 0, "value": "1.5", "unit": "m"},
        {"sensor": "a", "ts": 0, "value": True, "unit": "m"},
        {"sensor": "a", "ts": 0, "value": None, "unit": "m"},
        {"sensor": "a", "ts": 0, "value": 1},
        {"sensor": "a", "ts": 0, "value": 1, "unit": "furlong"},
        {"ts": 0, "value": 1, "unit": "m"},
        "p227",
        {"sensor": "a", "ts": [0], "value": 1, "unit": "m"},
        {"sensor": "a", "ts": 1e30, "value": 1, "unit": "m"},
        {"sensor": "a", "ts": 0, "value": 1, "unit": "m"},
    ]})
    assert [(x.row, x.reason) for x in r.rejected] == [
        (1, "naive_time"), (2, "bad_timestamp"), (3, "non_numeric"), (4, "non_numeric"),
        (5, "missing_value"), (6, "unknown_unit"), (7, "unknown_unit"), (8, "invalid_item"),
        (9, "invalid_item"), (10, "invalid_item"), (11, "bad_timestamp")]
    assert "`sensor`" in r.rejected[7].detail
    assert (r.lines_received, r.lines_accepted, r.lines_rejected) == (12, 1, 11)
    assert_identities(r)


def test_columnar_length_mismatch_and_empty_series_are_rejected_whole():
    r = push({"series": [
        {"sensor": "a", "unit": "m", "ts": [0, 1], "values": [1, 2, 3]},
        {"sensor": "b", "unit": "m", "ts": [], "values": []},
        {"sensor": "c", "unit": "m", "ts": [0, 1], "values": [1, None]},
    ]})
    assert [(x.row, x.sensor_id, x.reason, x.count) for x in r.rejected] == [
        (1, "a", "length_mismatch", 3), (2, "b", "empty_series", 1),
        (3, "c", "missing_value", 1)]
    assert (r.values_received, r.values_accepted, r.lines_accepted) == (6, 1, 1)
    assert_identities(r)


def test_mapping_applies_to_json_sensors():
    mapping = {"p227": {"id": "dma-a-inflow", "unit": "m3/h", "range": [0, 360]}}
    r = push({"readings": [{"sensor": "p227", "ts": 0, "value": 36},
                           {"sensor": "p227", "ts": 1, "value": 400}]}, mapping=mapping)
    assert (r.series[0].sensor_id, r.series[0].values) == ("dma-a-inflow", [0.01])
    assert [(x.sensor_id, x.reason) for x in r.rejected] == [("dma-a-inflow", "out_of_range")]


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b'{"readings": 3}', b'{"other": []}', b'{"readings": [1,]}',
    b"\xff\xfe",
])
def test_bodies_that_are_not_push_bodies_raise(body):
    with pytest.raises(ContractError):
        check_push_shape(body)
    with pytest.raises(ContractError):
        parse_json_push(body)


def test_check_shape_counts_items_without_parsing_them():
    assert check_push_shape(b'{"readings": [1, {"x": 2}], "series": [null]}') == 3


@pytest.mark.parametrize(("raw", "fmt", "expected"), [
    ("2024-01-01T00:00:00Z", "auto", JAN1_NS),
    ("2024-01-01 01:00:00+01:00", "iso8601", JAN1_NS),
    (1704067200, "epoch_s", JAN1_NS),
    ("1704067200", "epoch_s", JAN1_NS),
    (1704067200.5, "epoch_s", JAN1_NS + 500_000_000),
    (1704067200000000, "epoch_us", JAN1_NS),
    (JAN1_NS, "epoch_ns", JAN1_NS),
    ("01/01/2024 00:00 +0000", "%d/%m/%Y %H:%M %z", JAN1_NS),
])
def test_timestamp_formats(raw, fmt, expected):
    assert timestamp_ns(raw, fmt=fmt) == expected


def test_wall_clock_times_need_a_zone_and_refuse_dst_edges():
    rome = ZoneInfo("Europe/Rome")
    assert timestamp_ns("2024-01-01 01:00", fmt="%Y-%m-%d %H:%M", tz=rome) == JAN1_NS
    cases = [("2024-01-01 01:00", None, "naive_time"),
             ("2021-10-31 02:30", rome, "ambiguous_time"),
             ("2021-03-28 02:30", rome, "nonexistent_time"),
             ("31/12/2024", None, "bad_timestamp")]
    for raw, tz, reason in cases:
        with pytest.raises(TimestampRejected) as info:
            timestamp_ns(raw, fmt="%Y-%m-%d %H:%M", tz=tz)
        assert info.value.reason == reason


@pytest.mark.parametrize("raw", [True, None, "abc", [1], 1e300])
def test_bad_epoch_timestamps(raw):
    with pytest.raises(TimestampRejected) as info:
        timestamp_ns(raw, fmt="epoch_ms")
    assert info.value.reason == "bad_timestamp"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10) | st.sampled_from(["m", "l/s", "2024-01-01T00:00:00Z", "p1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["sensor", "ts", "value", "values", "unit", "x"]), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.lists(_json, max_size=6), st.lists(_json, max_size=4))
def test_arbitrary_items_never_crash_and_identities_hold(readings, series):
    r = push({"readings": readings, "series": series})
    assert r.lines_received == len(readings) + len(series)
    assert_identities(r)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_contract_errors(data):
    try:
        r = parse_json_push(data)
    except ContractError:
        return
    assert_identities(r)
