"""JSON push parser: both shapes, per-item reasons, time zones, accounting identities."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ContractError
from contracts.push import check_push_shape
from contracts.mapping import SourceMapping
from processors.normalise.jsonpush import parse_json_push
from processors.normalise.rules import ParsedChunk as ParseResult

JAN1_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z


def push(doc: object, **kw) -> ParseResult:
    kw.setdefault("received_at_ns", JAN1_NS + 86_400 * 10**9)
    return parse_json_push(msgspec.json.encode(doc), **kw)


def assert_identities(r: ParseResult) -> None:
    assert r.rows_received == r.rows_accepted + r.rows_rejected
    assert r.values_received == r.values_accepted + r.values_rejected + r.values_missing
    assert r.values_accepted == sum(len(s.values) for s in r.series)
    assert r.values_rejected + r.values_missing == sum(x.count for x in r.rejected)


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
    assert (r.rows_received, r.rows_accepted, r.rejected) == (4, 4, [])


def test_nanosecond_fractions_are_kept():
    r = push({"readings": [{"sensor": "a", "ts": "2024-01-01T00:00:00.123456789Z",
                            "value": 1, "unit": "m"}]})
    assert r.series[0].timestamps_ns == [JAN1_NS + 123_456_789]


def test_columnar_series():
    r = push({"series": [{"sensor": "T1", "unit": "m",
                          "ts": ["2024-01-01T00:00:00Z", 1704067500000], "values": [1.5, 1.6]}]})
    assert r.series[0].timestamps_ns == [JAN1_NS, JAN1_NS + 300 * 10**9]
    assert r.series[0].values == [1.5, 1.6]
    assert (r.rows_received, r.values_received) == (1, 2)


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
        {"sensor": "a", "ts": 0, "value": 1, "unit": "bogus"},
        {"ts": 0, "value": 1, "unit": "m"},
        "p227",
        {"sensor": "a", "ts": [0], "value": 1, "unit": "m"},
        {"sensor": "a", "ts": 1e30, "value": 1, "unit": "m"},
        {"sensor": "a", "ts": 0, "value": 1, "unit": "m"},
    ]})
    # "1.5" is a number as text (as in files); the first value at an instant wins
    assert [(x.row, x.reason) for x in r.rejected] == [
        (1, "naive_time"), (2, "unparseable_time"), (4, "non_numeric"), (5, "missing"),
        (6, "unknown_unit"), (7, "unknown_unit"), (8, "malformed_row"), (9, "malformed_row"),
        (10, "malformed_row"), (11, "unparseable_time"), (12, "duplicate")]
    assert "`sensor`" in r.rejected[6].detail
    assert r.series[0].values == [1.5]
    assert (r.rows_received, r.rows_accepted, r.rows_rejected) == (12, 1, 11)
    assert_identities(r)


def test_columnar_length_mismatch_and_empty_series_are_rejected_whole():
    r = push({"series": [
        {"sensor": "a", "unit": "m", "ts": [0, 1], "values": [1, 2, 3]},
        {"sensor": "b", "unit": "m", "ts": [], "values": []},
        {"sensor": "c", "unit": "m", "ts": [0, 1], "values": [1, None]},
    ]})
    assert [(x.row, x.sensor_id, x.reason, x.count) for x in r.rejected] == [
        (1, "a", "malformed_row", 3), (2, "b", "malformed_row", 1),
        (3, "c", "missing", 1)]
    assert (r.values_received, r.values_accepted, r.rows_accepted) == (6, 1, 1)
    assert_identities(r)


def test_mapping_applies_to_json_sensors():
    mapping = SourceMapping.model_validate(
        {"sensors": {"p227": {"id": "dma-a-inflow", "unit": "m3/h", "range": [0, 360]}}})
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
        parse_json_push(body, received_at_ns=JAN1_NS)


def test_check_shape_counts_items_without_parsing_them():
    assert check_push_shape(b'{"readings": [1, {"x": 2}], "series": [null]}') == 3


def one_time(raw, fmt: str = "auto", tz: str | None = None) -> tuple[list[int], list[str]]:
    """(accepted instants, rejection reasons) of one reading stamped ``raw``."""
    mapping = SourceMapping.model_validate({"timestamp": {"format": fmt, "timezone": tz}})
    r = push({"readings": [{"sensor": "a", "ts": raw, "value": 1, "unit": "m"}]},
             mapping=mapping, received_at_ns=JAN1_NS)
    return [t for s in r.series for t in s.timestamps_ns], [x.reason for x in r.rejected]


@pytest.mark.parametrize(("raw", "fmt", "expected"), [
    ("2024-01-01T00:00:00Z", "auto", JAN1_NS),
    ("2024-01-01 01:00:00+01:00", "iso", JAN1_NS),
    (1704067200, "epoch-s", JAN1_NS),
    ("1704067200", "epoch-s", JAN1_NS),
    (1704067200.5, "epoch-s", JAN1_NS + 500_000_000),
    (1704067200000000, "epoch-us", JAN1_NS),
    (JAN1_NS, "epoch-ns", JAN1_NS),
    ("01/01/2024 00:00 +0000", "%d/%m/%Y %H:%M %z", JAN1_NS),
])
def test_timestamp_formats(raw, fmt, expected):
    assert one_time(raw, fmt) == ([expected], [])


def test_wall_clock_times_need_a_zone_and_follow_the_one_dst_clock():
    assert one_time("2024-01-01 01:00", "%Y-%m-%d %H:%M", "Europe/Rome") == ([JAN1_NS], [])
    cases = [("2024-01-01 01:00", None, "naive_time"),
             ("2021-03-28 02:30", "Europe/Rome", "nonexistent_local_time"),
             ("31/12/2024", "Europe/Rome", "unparseable_time")]
    for raw, tz, reason in cases:
        assert one_time(raw, "%Y-%m-%d %H:%M", tz) == ([], [reason])
    reject = SourceMapping.model_validate({"timestamp": {
        "format": "%Y-%m-%d %H:%M", "timezone": "Europe/Rome", "ambiguous": "reject"}})
    r = push({"readings": [{"sensor": "a", "ts": "2021-10-31 02:30", "value": 1, "unit": "m"}]},
             mapping=reject, received_at_ns=JAN1_NS)
    assert [x.reason for x in r.rejected] == ["ambiguous_local_time"]


@pytest.mark.parametrize("raw", ["abc", 1e300, "1.5.2", -1e300])
def test_bad_epoch_timestamps(raw):
    assert one_time(raw, "epoch-ms") == ([], ["unparseable_time"])


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
    assert r.rows_received == len(readings) + len(series)
    assert_identities(r)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_contract_errors(data):
    try:
        r = parse_json_push(data, received_at_ns=JAN1_NS)
    except ContractError:
        return
    assert_identities(r)
