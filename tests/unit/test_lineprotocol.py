"""Line protocol parser: escapes, precisions, bad lines, accounting identities."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ContractError, TenantConfigError
from contracts.mapping import SourceMapping
from contracts.push import normalise_precision
from processors.normalise.lineprotocol import parse_line_protocol
from processors.normalise.rules import ParsedChunk as ParseResult

RECEIVED_NS = 1_700_000_000_123_456_789
T0 = 1_700_000_000


def parse(text: str | bytes, **kw) -> ParseResult:
    data = text.encode() if isinstance(text, str) else text
    kw.setdefault("received_at_ns", RECEIVED_NS)
    return parse_line_protocol(data, **kw)


def assert_identities(r: ParseResult) -> None:
    assert r.rows_received == r.rows_accepted + r.rows_rejected
    assert r.values_received == r.values_accepted + r.values_rejected + r.values_missing
    assert r.values_accepted == sum(len(s.values) for s in r.series)
    assert r.values_rejected + r.values_missing == sum(x.count for x in r.rejected)
    assert all(len(s.values) == len(s.timestamps_ns) for s in r.series)


def by_id(r: ParseResult) -> dict[str, tuple[str, list[int], list[float]]]:
    return {s.sensor_id: (s.unit, s.timestamps_ns, s.values) for s in r.series}


def test_fields_become_si_readings_with_deterministic_ids():
    r = parse(f"flow,zone=north,site=p227,unit=m3/h value=3600,spare=7200i {T0}000000000\n"
              f"flow,site=p227,zone=north,unit=m3/h value=1800 {T0 + 300}000000000\n")
    # tags sorted by key (site, zone), unit tag not part of the id
    assert by_id(r) == {
        "flow.p227.north.value": ("m3/s", [T0 * 10**9, (T0 + 300) * 10**9], [1.0, 0.5]),
        "flow.p227.north.spare": ("m3/s", [T0 * 10**9], [2.0]),
    }
    assert (r.rows_received, r.rows_accepted, r.values_accepted) == (2, 2, 3)
    assert r.rejected == []
    assert_identities(r)


def test_escapes_in_names_tags_and_strings():
    line = (r'my\ level\,x,site\ name=tank\ 1\,a,k\=1=v\=2,unit=m '
            r'lvl=2.5,note="say \"hi\", a=b \\ ok",fld\ x=1 1')
    # keys with spaces and commas break the one sensor-id rule: a mapping renames them
    mapping = SourceMapping.model_validate({"sensors": {
        "my level,x.v=2.tank 1,a.lvl": {"id": "tank1.level"},
        "my level,x.v=2.tank 1,a.fld x": {"id": "tank1.fld"},
        "my level,x.v=2.tank 1,a.note": {"id": "tank1.note"}}})
    r = parse(line, precision="s", mapping=mapping)
    assert by_id(r) == {"tank1.level": ("m", [10**9], [2.5]), "tank1.fld": ("m", [10**9], [1.0])}
    [rej] = r.rejected
    assert (rej.reason, rej.sensor_id, rej.raw) == (
        "non_numeric", "tank1.note", r'"say \"hi\", a=b \\ ok"')
    assert (r.rows_accepted, r.values_received) == (1, 3)
    assert_identities(r)
    unmapped = parse(line, precision="s")
    assert {(x.sensor_id, x.reason) for x in unmapped.rejected} == {
        ("my level,x.v=2.tank 1,a.lvl", "invalid_sensor_id"),
        ("my level,x.v=2.tank 1,a.fld x", "invalid_sensor_id"),
        ("my level,x.v=2.tank 1,a.note", "invalid_sensor_id")}
    assert "must match" in unmapped.rejected[0].detail


def test_double_backslash_is_one_backslash_and_does_not_escape_the_comma():
    r = parse("m,t=a\\\\,unit=m v=1 5")
    assert [(x.sensor_id, x.reason) for x in r.rejected] == [("m.a\\.v", "invalid_sensor_id")]


@pytest.mark.parametrize(("precision", "factor"), [
    ("ns", 1), ("n", 1), ("us", 10**3), ("u", 10**3), ("ms", 10**6), ("s", 10**9),
    ("m", 60 * 10**9), ("h", 3600 * 10**9), (None, 1), ("", 1),
])
def test_precisions(precision, factor):
    r = parse("m,unit=m v=1 1234\n", precision=precision)
    assert r.series[0].timestamps_ns == [1234 * factor]


def test_unknown_precision_is_a_contract_error():
    with pytest.raises(ContractError, match="precision"):
        parse("m,unit=m v=1", precision="d")
    assert normalise_precision("u") == "us"
    assert normalise_precision(None, default="s") == "s"


@pytest.mark.parametrize(("token", "value"), [
    ("1", 1.0), ("-1.5", -1.5), ("1.", 1.0), (".5", 0.5), ("+2e3", 2000.0), ("1E-2", 0.01),
    ("-42i", -42.0), ("42u", 42.0), ("9223372036854775807i", 9.223372036854776e18),
])
def test_numeric_field_forms(token, value):
    r = parse(f"m,unit=m v={token} 1")
    assert r.series[0].values == [value]


@pytest.mark.parametrize(("token", "reason"), [
    *((b, "non_numeric") for b in ("t", "T", "true", "True", "TRUE", "f", "F", "false",
                                    "False", "FALSE")),
    ('"abc"', "non_numeric"), ('""', "missing"), ('"#N/A"', "missing"), ('"NaN"', "missing"),
])
def test_booleans_strings_and_markers(token, reason):
    r = parse(f"m,unit=m v={token},w=2 1")
    assert [x.reason for x in r.rejected] == [reason]
    assert r.rows_accepted == 1
    assert_identities(r)


def test_a_string_holding_a_number_is_read_as_files_read_it():
    assert parse('m,unit=m v="1.5" 1').series[0].values == [1.5]


def test_missing_timestamp_uses_received_at():
    r = parse("m,unit=bar p=2\n")
    assert r.series[0].timestamps_ns == [RECEIVED_NS]
    assert (r.series[0].unit, r.series[0].values) == ("Pa", [200000.0])


@pytest.mark.parametrize("line", [
    "m", "m,t=1", "m v", "m v=", "m =1", "m v=abc", 'm v="open', "m,t v=1", "m,=1 v=1",
    "m,t= v=1", ",t=1 v=1", "m v=1i2", "m v=1 2 3", "m v=1,", "m v=1;", "m v=1x",
    "m v=-9223372036854775809i", "m v=18446744073709551616u", "m v=-1u", "m v=nan",
    "m\\", "m v=1\\", "m v=²u", "m v=٣", "m v=٣i",
])
def test_malformed_lines_are_rejected_whole(line):
    r = parse(f"{line}\nm,unit=m ok=1 1\n")
    [rej] = r.rejected
    assert (rej.row, rej.reason, rej.count, rej.sensor_id) == (1, "malformed_row", 1, None)
    assert rej.raw == line and rej.detail
    assert (r.rows_received, r.rows_rejected, r.values_received) == (2, 1, 2)
    assert_identities(r)


@pytest.mark.parametrize(("ts", "detail"), [
    ("12.5", "not an integer"), ("abc", "not an integer"), ("1e9", "not an integer"),
    ("9223372036854775808", "int64"), ("٣", "not an integer"),
])
def test_bad_timestamps_reject_every_field_of_the_line(ts, detail):
    r = parse(f"m,unit=m a=1,b=2 {ts}\n")
    assert [(x.reason, x.sensor_id) for x in r.rejected] == [("unparseable_time", "m.a"),
                                                            ("unparseable_time", "m.b")]
    assert detail in r.rejected[0].detail
    assert (r.rows_rejected, r.values_rejected) == (1, 2)


def test_timestamp_overflowing_after_precision_is_bad():
    r = parse(f"m,unit=m v=1 {10**13}", precision="s")
    assert r.rejected[0].reason == "unparseable_time"
    before_1970 = parse(f"m,unit=m v=1 -{T0}", precision="s")
    assert [x.reason for x in before_1970.rejected] == ["implausible_time"]


def test_unknown_or_missing_unit_is_rejected():
    r = parse("m v=1 1\nm,unit=bogus v=1 2\nm,unit=MW v=1 3\nm,unit=KW v=1 4\n")
    assert [(x.row, x.reason) for x in r.rejected] == [(1, "unknown_unit"), (2, "unknown_unit"),
                                                      (4, "unknown_unit")]
    assert "bogus" in r.rejected[1].detail
    assert "closest known: kW" in r.rejected[2].detail  # case-sensitive: KW is not kW
    assert by_id(r)["m.v"] == ("W", [3], [1e6])
    assert r.rows_rejected == 3


def test_mapping_renames_sets_unit_and_bounds_values():
    mapping = SourceMapping.model_validate({"sensors": {
        "scada.p227.flow": {"id": "p227", "unit": "l/s", "range": [0, 100]},
        "scada.t1.level": {"id": "T1"}}})
    r = parse("scada,site=p227,unit=m3/h flow=50 1\n"
              "scada,site=p227 flow=150 2\n"
              "scada,site=p227 flow=-1 3\n"
              "scada,site=t1,unit=cm level=250 4\n"
              "scada,site=t1 level=1 5\n", mapping=mapping)
    assert by_id(r) == {"p227": ("m3/s", [1], [0.05]), "T1": ("m", [4], [2.5])}
    assert [(x.row, x.sensor_id, x.reason) for x in r.rejected] == [
        (2, "p227", "out_of_range"), (3, "p227", "out_of_range"), (5, "T1", "unknown_unit")]
    assert_identities(r)


@pytest.mark.parametrize("mapping", [
    {"k": "p227"}, {"k": {"id": 3}}, {"k": {"range": [1]}}, {"k": {"range": ["a", 2]}},
    {"k": {"unit": "bogus"}}, {"k": {"unit": "KW"}}, {"k": {"range": [0, 1]}},
])
def test_invalid_mapping_is_a_tenant_config_error(mapping):
    import yaml

    with pytest.raises(TenantConfigError):
        SourceMapping.from_yaml(yaml.safe_dump({"sensors": mapping}))


def test_infinite_float_is_non_numeric_as_in_files():
    r = parse("m,unit=m v=1e999 1")
    assert r.rejected[0].reason == "non_numeric"


def test_comments_blank_lines_crlf_and_bom():
    r = parse(b"\xef\xbb\xbfm,unit=m v=1 1\r\n\r\n# a comment\n   \nm,unit=m v=2 2\r\n")
    assert r.series[0].values == [1.0, 2.0]
    assert (r.rows_received, r.rows_accepted) == (2, 2)


def test_last_line_without_newline_and_row_numbers_count_physical_lines():
    r = parse("# header\n\nm v=1 1\nm,unit=m v=2 2")
    assert r.rejected[0].row == 3
    assert r.series[0].timestamps_ns == [2]


def test_too_long_line_is_rejected_and_the_next_line_still_parsed():
    long_line = "m,unit=m " + ",".join(f"f{i}=1" for i in range(400))
    r = parse(f"{long_line}\nm,unit=m v=1 1\n{long_line}", max_line_bytes=1024)
    assert [(x.row, x.reason) for x in r.rejected] == [(1, "malformed_row"), (3, "malformed_row")]
    assert "1024" in r.rejected[0].detail
    assert r.series[0].values == [1.0]
    assert_identities(r)


def test_invalid_utf8_line_is_malformed():
    r = parse(b"m,unit=m v=1 1\nm,t=\xff\xfe v=1 1\n")
    assert [(x.row, x.reason) for x in r.rejected] == [(2, "malformed_row")]
    assert "UTF-8" in r.rejected[0].detail


def test_chunked_input_gives_the_same_result_as_whole_bytes():
    text = ("m,unit=m v=1 1\n" + "x" * 300 + "\n# c\nm,t=\\ a,unit=m v=2,w=3i 2\nbad\n" * 3
            ).encode()
    whole = parse(text, max_line_bytes=100)
    for size in (1, 2, 7, 64):
        chunks = (text[i:i + size] for i in range(0, len(text), size))
        assert parse(chunks, max_line_bytes=100) == whole


def test_many_lines_parse_linearly():
    def body(n: int) -> bytes:
        return "".join(f"flow,site=s{i % 10},unit=l/s v={i}.5,q={i}i {T0 + i}\n"
                       for i in range(n)).encode()

    def seconds(data: bytes) -> float:
        started = time.perf_counter()
        r = parse(data, precision="s")
        assert r.values_accepted == 2 * data.count(b"\n")
        return time.perf_counter() - started

    small, large = body(10_000), body(100_000)
    seconds(small)  # warm up
    # 10x the lines must cost about 10x the time; quadratic work would cost ~100x
    assert seconds(large) < 30 * seconds(small)
    assert len(parse(large, precision="s").series) == 20


_LP_ALPHABET = st.sampled_from(list('mv=,\\ "\t\r\n#1.5eEiu-+tTfF') + ["unit=m", "\xff", "é"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_LP_ALPHABET, max_size=80).map("".join), st.sampled_from(["ns", "s", "ms"]))
def test_lp_like_text_never_crashes_and_identities_hold(text, precision):
    r = parse(text, precision=precision, max_line_bytes=32)
    assert_identities(r)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_arbitrary_bytes_never_crash_and_chunking_does_not_matter(data, size):
    whole = parse(data, max_line_bytes=64)
    assert_identities(whole)
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    assert parse(chunks, max_line_bytes=64) == whole


@settings(max_examples=400, deadline=None)
@given(st.lists(_LP_ALPHABET.filter(lambda c: c not in "\r\n"), max_size=60).map("".join))
def test_fast_path_agrees_with_the_full_scanner(line):
    from processors.normalise.lineprotocol import _Malformed, _parse_escaped, _parse_plain

    line = line.strip(" \t")
    plain = _parse_plain(line)
    if plain is not None:
        assert plain == _parse_escaped(line)
    else:
        try:
            _parse_escaped(line)
        except _Malformed:
            pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_unicode_text_never_crashes(text):
    assert_identities(parse(text))
    assert_identities(parse("m,unit=m v=" + text))
