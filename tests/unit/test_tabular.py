"""parse_tabular against the real shared files and against broken ones.

Expected values are computed independently of the parser (csv module + Decimal, openpyxl +
zoneinfo), then converted with the same SI factor from ``contracts.units``.
"""

from __future__ import annotations

import csv
import io
import os
import random
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.units import to_si
from processors.normalise.tabular import ParsedChunk, UnparseableFile, parse_tabular, summarise
from contracts.mapping import SourceMapping

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
ROME = ZoneInfo("Europe/Rome")


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def shared_data() -> Path:
    env = os.environ.get("TAGUS_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (path / "battledim").is_dir() or not (path / "bwdf").is_dir():
        pytest.skip(f"shared data not found at {path} (set TAGUS_SHARED_DATA)")
    return path


def mapping(name: str, **replace: str) -> SourceMapping:
    text = (MAPPINGS / f"{name}.yaml").read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return SourceMapping.from_yaml(text)


def parse(data: bytes, m: SourceMapping, **kw) -> list[ParsedChunk]:
    chunks = list(parse_tabular(io.BytesIO(data), m, **kw))
    for c in chunks:
        assert_balanced(c)
    return chunks


def assert_balanced(c: ParsedChunk) -> None:
    assert c.rows_received == c.rows_accepted + c.rows_rejected
    assert c.values_received == c.values_accepted + c.values_rejected + c.values_missing
    assert sum(r.count for r in c.rejected) == c.values_rejected + c.values_missing
    assert sum(r.count for r in c.rejected if r.reason == "missing") == c.values_missing
    assert sum(len(s.values) for s in c.series) == c.values_accepted
    assert all(r.count >= 1 and len(r.raw) <= 200 for r in c.rejected)
    assert all(len(s.values) == len(s.timestamps_ns) > 0 for s in c.series)


def collect(chunks: list[ParsedChunk]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for c in chunks:
        for s in c.series:
            out.setdefault(s.sensor_id, []).extend(zip(s.timestamps_ns, s.values, strict=True))
    return out


def rejections(chunks: list[ParsedChunk]) -> set[tuple]:
    return {(r.row, r.sensor_id, r.reason, r.count) for c in chunks for r in c.rejected}


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


SMALL = """
format: csv
delimiter: ";"
decimal: ","
timestamp: {column: Time, format: "%Y-%m-%d %H:%M", timezone: Europe/Rome}
missing_values: ["#N/A", "-"]
sensors:
  Q: {id: q1, unit: l/s, range: [0, 100]}
  H: {id: h1, unit: m, range: [0, 10]}
"""


def small(extra: str = "") -> SourceMapping:
    return SourceMapping.from_yaml(SMALL + extra)


# ---------------------------------------------------------------- 1. BattLeDIM CSV


@pytest.mark.parametrize("name, file", [("battledim_flows", "2019-01_SCADA_Flows.csv"),
                                        ("battledim_levels", "2019-01_SCADA_Levels.csv")])
def test_battledim_values_match_an_independent_reading(shared_data, name, file):
    raw = (shared_data / "battledim" / file).read_bytes()
    m = mapping(name)
    got = collect(parse(raw, m))

    rows = list(csv.reader(io.StringIO(raw.decode("utf-8")), delimiter=";"))
    header, body = rows[0], rows[1:]
    for j, column in enumerate(header[1:], start=1):
        numbers = [Decimal(r[j].replace(",", ".")) for r in body]
        factor = to_si(m.sensors[column].unit)[1]
        values = [v for _, v in got[m.sensors[column].id]]
        assert len(values) == len(numbers) == 8928
        assert sum(values) == pytest.approx(float(sum(numbers)) * factor, rel=1e-9)
        assert min(values) == float(min(numbers)) * factor
        assert max(values) == float(max(numbers)) * factor
    stamps = [t for t, _ in got[m.sensors[header[1]].id]]
    assert stamps[0] == ns("2019-01-01T00:00:00+00:00")
    assert stamps[-1] == ns("2019-01-31T23:55:00+00:00")
    assert {b - a for a, b in zip(stamps, stamps[1:])} == {300 * 10**9}


def test_battledim_flows_in_si_and_fully_accounted(shared_data):
    chunks = parse((shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes(),
                   mapping("battledim_flows"))
    total = summarise(chunks)
    assert total["rows_received"] == total["rows_accepted"] == 8928
    assert total["values_received"] == total["values_accepted"] == 3 * 8928
    assert {s.unit for c in chunks for s in c.series} == {"m3/s"}
    first = {s.sensor_id: s.values[0] for s in chunks[0].series}
    assert first["p227"] == pytest.approx(88.14 / 3600, rel=1e-15)


# ---------------------------------------------------------------- 2. BWDF XLSX, Rome time


def read_sheet(path: Path) -> tuple[list[str], list[tuple]]:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    while rows and all(c is None for c in rows[-1]):  # styled but empty rows at the end
        rows.pop()
    assert all(r[0] is not None for r in rows)
    return list(rows[0]), rows[1:]


def rome_to_utc_ns(texts: list[str]) -> list[int]:
    """Independent DST rule: the first pass through a repeated wall time is summer time."""
    seen: set[datetime] = set()
    out = []
    for text in texts:
        wall = datetime.strptime(text, "%d/%m/%Y %H:%M")
        local = wall.replace(tzinfo=ROME, fold=1 if wall in seen else 0)
        seen.add(wall)
        assert local.astimezone(UTC).astimezone(ROME).replace(tzinfo=None) == wall  # exists
        out.append(int(local.timestamp()) * 10**9)
    return out


@pytest.fixture(scope="module")
def inflow(shared_data):
    path = shared_data / "bwdf" / "InflowData_1.xlsx"
    return read_sheet(path), parse(path.read_bytes(), mapping("bwdf_inflow"))


def test_bwdf_inflow_every_value_at_its_utc_instant(inflow):
    (header, rows), chunks = inflow
    m = mapping("bwdf_inflow")
    instants = rome_to_utc_ns([r[0] for r in rows])
    expected = {}
    for j, column in enumerate(header[1:], start=1):
        sensor = m.sensors[column]
        factor = to_si(sensor.unit)[1]
        for t, r in zip(instants, rows, strict=True):
            if isinstance(r[j], float | int):
                expected[(sensor.id, t)] = r[j] * factor
    got = {(sid, t): v for sid, pairs in collect(chunks).items() for t, v in pairs}
    assert got == expected
    assert {s.unit for c in chunks for s in c.series} == {"m3/s"}


def test_bwdf_inflow_dst_cells(inflow):
    (_, rows), chunks = inflow
    texts = [r[0] for r in rows]
    dma_c = dict(collect(chunks)["dma_c"])
    autumn = [r for r in rows if r[0] == "31/10/2021 02:00"]
    assert len(autumn) == 2
    assert dma_c[ns("2021-10-31T00:00:00+00:00")] == pytest.approx(autumn[0][3] / 1000, rel=1e-15)
    assert dma_c[ns("2021-10-31T01:00:00+00:00")] == pytest.approx(autumn[1][3] / 1000, rel=1e-15)
    assert "28/03/2021 02:00" not in texts
    three = next(r for r in rows if r[0] == "28/03/2021 03:00")
    one = next(r for r in rows if r[0] == "28/03/2021 01:00")
    assert dma_c[ns("2021-03-28T01:00:00+00:00")] == pytest.approx(three[3] / 1000, rel=1e-15)
    assert dma_c[ns("2021-03-28T00:00:00+00:00")] == pytest.approx(one[3] / 1000, rel=1e-15)
    assert ns("2021-03-28T01:30:00+00:00") not in dma_c


def test_bwdf_inflow_missing_reported_not_invented(inflow):
    (header, rows), chunks = inflow
    m = mapping("bwdf_inflow")
    total = summarise(chunks)
    assert total["rows_received"] == len(rows) == 13679
    assert total["values_received"] == len(rows) * 10
    assert total["rejected_by_reason"] == {"missing": total["values_missing"]}
    for j, column in enumerate(header[1:], start=1):
        sid = m.sensors[column].id
        independent = sum(1 for r in rows if r[j] in (None, "", "#N/A"))
        reported = sum(r.count for c in chunks for r in c.rejected
                       if r.sensor_id == sid and r.reason == "missing")
        assert reported == independent > 0
        assert total["accepted_by_sensor"][sid] == len(rows) - independent


def test_bwdf_weather_units_and_missing(shared_data):
    path = shared_data / "bwdf" / "WeatherData_1.xlsx"
    header, rows = read_sheet(path)
    m = mapping("bwdf_weather")
    chunks = parse(path.read_bytes(), m)
    got = collect(chunks)
    instants = rome_to_utc_ns([r[0] for r in rows])
    for j, column in enumerate(header[1:], start=1):
        sensor = m.sensors[column]
        si_unit, factor, offset = to_si(sensor.unit)
        expected = [(t, r[j] * factor + offset) for t, r in zip(instants, rows, strict=True)
                    if isinstance(r[j], float | int)]
        assert got[sensor.id] == expected
        missing = sum(r.count for c in chunks for r in c.rejected if r.sensor_id == sensor.id)
        assert missing == sum(1 for r in rows if r[j] in (None, "", "#N/A"))
    units = {s.sensor_id: s.unit for c in chunks for s in c.series}
    assert units == {"rain_depth": "m", "air_temp": "degC", "air_humidity": "1",
                     "wind_speed": "m/s"}


# ---------------------------------------------------------------- 3. broken input


def test_row_and_cell_rejections_are_precise():
    body = ("Time;Q;H\r\n"
            "2021-01-01 00:00;1,5;2\r\n"      # row 2: fine
            "2021-01-01 01:00;abc;2,5\r\n"    # row 3: Q non-numeric
            "2021-01-01 02:00;150;3\r\n"      # row 4: Q out of range
            "2021-01-01 00:00;7;8\r\n"        # row 5: same instant as row 2
            "2021-01-01 03:00;#N/A;-\r\n"     # row 6: missing
            "2021-01-01 04:00; ;\r\n"         # row 7: missing (run continues)
            "2021-03-28 02:30;1;1\r\n"        # row 8: clocks jump 02:00 -> 03:00 in Rome
            "28/03/2021 03:00;1;1\r\n"        # row 9: wrong time format
            "2021-01-01 05:00;1;2;3\r\n"      # row 10: one field too many
            "\r\n"                            # blank line: not a row
            "2021-01-01 06:00;1.000,5;3\r\n")  # row 12: '.' is no decimal mark here
    chunks = parse(body.encode(), small())
    assert rejections(chunks) == {
        (3, "q1", "non_numeric", 1), (4, "q1", "out_of_range", 1),
        (5, "q1", "duplicate", 1), (5, "h1", "duplicate", 1),
        (6, "q1", "missing", 2), (6, "h1", "missing", 2),
        (8, None, "nonexistent_local_time", 2), (9, None, "unparseable_time", 2),
        (10, None, "malformed_row", 2), (12, "q1", "non_numeric", 1)}
    total = summarise(chunks)
    assert (total["rows_received"], total["rows_accepted"]) == (10, 4)
    assert total["values_accepted"] == 5
    assert (total["values_missing"], total["values_rejected"]) == (4, 11)
    got = collect(chunks)
    assert got["q1"] == [(ns("2020-12-31T23:00:00+00:00"), 1.5e-3)]
    assert [v for _, v in got["h1"]] == [2.0, 2.5, 3.0, 3.0]
    raws = {(r.row, r.reason): r.raw for c in chunks for r in c.rejected}
    assert raws[(3, "non_numeric")] == "abc" and raws[(9, "unparseable_time")] == "28/03/2021 03:00"


def test_truncated_csv_rejects_the_cut_row(shared_data):
    raw = (shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes()
    lines = raw.split(b"\r\n")
    cut = len(b"\r\n".join(lines[:101])) + 2 + len(lines[101]) - 2  # line 102 loses 2 bytes
    m = mapping("battledim_flows")
    chunks = parse(raw[:cut], m)
    assert rejections(chunks) == {(102, None, "truncated_row", 3)}
    assert summarise(chunks)["rows_accepted"] == 100
    tolerant = mapping("battledim_flows", **{
        "unknown_columns: reject": "unknown_columns: reject\nrequire_final_newline: false"})
    assert summarise(parse(raw[:-2], tolerant))["rows_accepted"] == 8928


def test_wrong_delimiter(shared_data):
    raw = (shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes()
    with pytest.raises(UnparseableFile, match=r"wrong delimiter\? mapping says ','"):
        parse(raw, mapping("battledim_flows", **{'delimiter: ";"': 'delimiter: ","'}))


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_garbage_bytes(encoding):
    garbage = random.Random(20240607).randbytes(200_000)
    with pytest.raises(UnparseableFile):
        parse(garbage, small(f"encoding: {encoding}\n"))


def test_utf16_file_is_named():
    data = "Time;Q;H\r\n2021-01-01 00:00;1;2\r\n".encode("utf-16")
    with pytest.raises(UnparseableFile, match="UTF-16"):
        parse(data, small())
    assert summarise(parse(data, small("encoding: utf-16\n")))["values_accepted"] == 2


class EndlessLine(io.RawIOBase):
    """``size`` bytes without a line break, produced lazily; counts what was read."""

    def __init__(self, size: int) -> None:
        self.left, self.consumed = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        self.consumed += n
        return n


def test_huge_single_line_stops_early():
    stream = EndlessLine(50 * 2**20)
    with pytest.raises(UnparseableFile, match="line 1 is longer than 1048576 characters"):
        list(parse_tabular(stream, small()))
    assert stream.consumed <= 2**20 + 2**17


def test_long_line_further_down():
    data = b"Time;Q;H\r\n2021-01-01 00:00;1;2\r\n2021-01-01 01:00;" + b"9" * 3000 + b";1\r\n"
    with pytest.raises(UnparseableFile, match="line 3 is longer than 1024"):
        parse(data, small(), max_line_chars=1024)


@pytest.mark.parametrize("data, message", [
    (b"", "file is empty"),
    (b"\r\n\r\n", "no column of the mapping"),
    (b"Zeit;Q;H\r\n2021-01-01 00:00;1;2\r\n", "column 'Time' of the mapping not found"),
    (b"Time;A;B\r\n2021-01-01 00:00;1;2\r\n", "none of the mapped sensor columns"),
    (b"Time;Q;Q\r\n2021-01-01 00:00;1;2\r\n", "column 'Q' appears 2 times"),
    (b'Time;Q;H\r\n"2021-01-01 00:00;1;2\r\n' + b"2021-01-01 01:00;1;2\r\n" * 10_000,
     "field larger than field limit"),  # an unclosed quote swallows the rest of the file
])
def test_whole_file_problems(data, message):
    with pytest.raises(UnparseableFile, match=message):
        parse(data, small())


def test_unclosed_quote_on_the_last_line_is_a_malformed_row():
    chunks = parse(b'Time;Q;H\r\n2021-01-01 00:00;1;2\r\n"2021-01-01 01:00;1;2\r\n', small())
    assert rejections(chunks) == {(3, None, "malformed_row", 2)}


def test_header_only_file_yields_nothing():
    assert parse(b"Time;Q;H\r\n", small()) == []


def test_mapping_for_another_file(shared_data):
    flows = (shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes()
    inflow = (shared_data / "bwdf" / "InflowData_1.xlsx").read_bytes()
    with pytest.raises(UnparseableFile, match="mapping for another file"):
        parse(flows, mapping("battledim_levels"))
    with pytest.raises(UnparseableFile, match="mapping says xlsx"):
        parse(flows, mapping("bwdf_inflow"))
    with pytest.raises(UnparseableFile, match="mapping says csv but the file is a spreadsheet"):
        parse(inflow, mapping("battledim_flows"))
    with pytest.raises(UnparseableFile, match="another file"):
        parse(inflow, mapping("bwdf_weather"))
    with pytest.raises(UnparseableFile, match=r"sheet 'Nope', workbook has \['InflowData'\]"):
        parse(inflow, mapping("bwdf_inflow", **{"sheet: 0": "sheet: Nope"}))


def test_truncated_xlsx(shared_data):
    inflow = (shared_data / "bwdf" / "InflowData_1.xlsx").read_bytes()
    for size in (len(inflow) // 2, len(inflow) - 100, 30):
        with pytest.raises(UnparseableFile, match="cannot read the workbook"):
            parse(inflow[:size], mapping("bwdf_inflow"))


def test_format_auto_detects_the_workbook(shared_data):
    inflow = (shared_data / "bwdf" / "InflowData_1.xlsx").read_bytes()
    auto = mapping("bwdf_inflow", **{"format: xlsx": "format: auto"})
    assert summarise(parse(inflow, auto, chunk_rows=5000))["values_accepted"] == 126_866


def test_unknown_columns_reject_or_ignore(shared_data):
    raw = (shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes()
    text = (MAPPINGS / "battledim_flows.yaml").read_text()
    others = [line for line in text.splitlines(keepends=True)
              if line.startswith(("  p235", "  PUMP_1"))]
    assert len(others) == 2
    strict = mapping("battledim_flows", **{line: "" for line in others})
    chunks = parse(raw, strict, chunk_rows=5000)
    assert sorted((r.row, r.count, r.reason) for c in chunks for r in c.rejected) == [
        (2, 5000, "unknown_column"), (2, 5000, "unknown_column"),
        (5002, 3928, "unknown_column"), (5002, 3928, "unknown_column")]
    total = summarise(chunks)
    assert total["values_received"] == 3 * 8928 and total["rows_accepted"] == 8928
    loose = mapping("battledim_flows", **{**{line: "" for line in others},
                                          "unknown_columns: reject": "unknown_columns: ignore"})
    assert summarise(parse(raw, loose))["values_received"] == 8928


PLAIN = """
delimiter: ";"
decimal: ","
thousands: "."
timestamp: {column: Time, format: "%Y-%m-%d %H:%M", timezone: UTC}
sensors:
  Q: {id: q1, unit: m}
"""


@pytest.mark.parametrize("cell, value", [
    (" 12,5 ", 12.5), ("1.234,5", 1234.5), (",5", 0.5), ("+1e1", 10.0), ("-0", 0.0),
    ("1.234.567", 1234567.0), ("1.23", "non_numeric"), ("1,2,3", "non_numeric"),
    ("1.5,", "non_numeric"), ("inf", "non_numeric"), ("1e999", "non_numeric"),
    ("1_000", "non_numeric"), ("\u0663", "non_numeric"), ("12 m", "non_numeric"),
    ("NaN", "missing"), ("#N/A", "missing"), ("  ", "missing"), ("-", "missing"),
])
def test_numbers_in_local_notation(cell, value):
    chunks = parse(f"Time;Q\n2021-01-01 00:00;{cell}\n".encode("utf-8"),
                   SourceMapping.from_yaml(PLAIN))
    if isinstance(value, float):
        assert collect(chunks)["q1"] == [(ns("2021-01-01T00:00:00+00:00"), value)]
    else:
        assert [(r.reason, r.raw) for r in chunks[0].rejected] == [(value, cell)]


# ---------------------------------------------------------------- layouts, times, encodings


LONG = """
format: csv
layout: long
sensor_column: tag
value_column: value
unit_column: unit
timestamp: {column: time, format: iso, timezone: Europe/Rome}
sensors:
  P1: {id: pressure_1, unit: bar, range: [0, 16]}
  F1: {id: flow_1, unit: l/s}
"""


def test_long_layout():
    body = ("tag,time,value,unit\n"
            "P1,2021-01-01T00:00:00Z,1.5,bar\n"        # row 2
            "P1,2021-01-01T01:00:00+01:00,1.6,bar\n"   # row 3: same instant as row 2
            "P1,2021-01-01 03:00:00,200,kPa\n"         # row 4: Rome time, other pressure unit
            "X9,2021-01-01T00:00:00Z,1,bar\n"          # row 5: unknown sensor
            "X9,2021-01-01T01:00:00Z,1,bar\n"          # row 6: unknown sensor (run)
            "P1,2021-01-01T05:00:00Z,1,m3/h\n"         # row 7: not a pressure unit
            "F1,2021-01-01T00:00:00Z,10,\n"            # row 8: blank unit = the mapping's
            "F1,yesterday,10,\n"                       # row 9
            "P1,2021-01-01T06:00:00Z,17,bar\n")        # row 10: above 16 bar
    chunks = parse(body.encode(), SourceMapping.from_yaml(LONG))
    assert rejections(chunks) == {
        (3, "pressure_1", "duplicate", 1), (5, None, "unknown_sensor", 2),
        (7, "pressure_1", "unknown_unit", 1), (9, "flow_1", "unparseable_time", 1),
        (10, "pressure_1", "out_of_range", 1)}
    got = collect(chunks)
    assert got["pressure_1"] == [(ns("2021-01-01T00:00:00+00:00"), 1.5e5),
                                 (ns("2021-01-01T02:00:00+00:00"), 2e5)]
    assert got["flow_1"] == [(ns("2021-01-01T00:00:00+00:00"), 0.01)]


def quarter_hours_around_autumn(descending: bool = False) -> bytes:
    """Rome wall clock 00:00-04:00 on 31/10/2021, every 15 min; 02:00-02:45 happens twice."""
    walls = [f"{h:02d}:{m:02d}" for h in range(4) for m in (0, 15, 30, 45)]
    walls = walls[:12] + walls[8:12] + walls[12:] + ["04:00"]
    lines = [f"31/10/2021 {w};{i}" for i, w in enumerate(walls)]
    if descending:
        lines.reverse()
    return ("Time;Q\n" + "\n".join(lines) + "\n").encode()


DST = """
delimiter: ";"
timestamp: {column: Time, format: "%d/%m/%Y %H:%M", timezone: Europe/Rome}
sensors:
  Q: {id: q, unit: m}
"""


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 50_000])
@pytest.mark.parametrize("descending", [False, True])
def test_repeated_autumn_hour_resolved_across_chunks(chunk_rows, descending):
    chunks = parse(quarter_hours_around_autumn(descending), SourceMapping.from_yaml(DST),
                   chunk_rows=chunk_rows)
    pairs = sorted(collect(chunks)["q"])
    start = ns("2021-10-30T22:00:00+00:00")  # 00:00 summer time
    assert pairs == [(start + i * 900 * 10**9, float(i)) for i in range(21)]


@pytest.mark.parametrize("policy, instant", [("dst", "2021-10-31T00:00:00+00:00"),
                                             ("standard", "2021-10-31T01:00:00+00:00")])
def test_ambiguous_policy_dst_or_standard(policy, instant):
    m = SourceMapping.from_yaml(DST.replace("Europe/Rome}", f"Europe/Rome, ambiguous: {policy}}}"))
    chunks = parse(b"Time;Q\n31/10/2021 02:00;1\n31/10/2021 02:00;2\n", m)
    assert collect(chunks)["q"] == [(ns(instant), 1.0)]
    assert rejections(chunks) == {(3, "q", "duplicate", 1)}


def test_spring_gap_times_are_rejected_not_shifted():
    body = (b"Time;Q\n28/03/2021 01:45;1\n28/03/2021 02:00;2\n28/03/2021 02:59;3\n"
            b"28/03/2021 03:00;4\n")
    chunks = parse(body, SourceMapping.from_yaml(DST))
    assert rejections(chunks) == {(3, None, "nonexistent_local_time", 1),
                                  (4, None, "nonexistent_local_time", 1)}
    assert collect(chunks)["q"] == [(ns("2021-03-28T00:45:00+00:00"), 1.0),
                                    (ns("2021-03-28T01:00:00+00:00"), 4.0)]


def test_date_and_time_columns_joined_with_preamble_and_units_row():
    m = SourceMapping.from_yaml("""
delimiter: "\\t"
header_row: 2
skip_rows: 1
timestamp: {column: [Date, Time], format: "%d.%m.%Y %H:%M:%S", timezone: Europe/Berlin}
sensors:
  Level: {id: lvl, unit: cm}
""")
    body = b"Export SCADA\tv2\nsite 7\nDate\tTime\tLevel\n\t\tcm\n01.07.2021\t12:00:00\t250\n"
    chunks = parse(body, m)
    assert collect(chunks)["lvl"] == [(ns("2021-07-01T10:00:00+00:00"), 2.5)]
    assert (chunks[0].first_row, chunks[0].last_row) == (5, 5)


@pytest.mark.parametrize("encoding, data", [
    ("cp1252", "Zeit;Température °C\r\n2021-01-01 00:00;-1,5\r\n".encode("cp1252")),
    ("utf-8", "\ufeffZeit;Température °C\r\n2021-01-01 00:00;-1,5\r\n".encode("utf-8")),
])
def test_encodings_and_byte_order_mark(encoding, data):
    m = SourceMapping.from_yaml(f"""
encoding: {encoding}
delimiter: ";"
decimal: ","
timestamp: {{column: Zeit, format: "%Y-%m-%d %H:%M", timezone: UTC}}
sensors:
  "Température °C": {{id: temp, unit: degC}}
""")
    assert collect(parse(data, m))["temp"] == [(ns("2021-01-01T00:00:00+00:00"), -1.5)]


@pytest.mark.parametrize("fmt, cell, instant", [
    ("excel-serial", "44197,5", "2021-01-01T11:00:00+00:00"),  # Rome wall clock 12:00
    ("epoch-s", "1609502400", "2021-01-01T12:00:00+00:00"),   # epochs are UTC already
    ("epoch-ms", "1609502400000", "2021-01-01T12:00:00+00:00"),
    ("iso", "2021-01-01T12:00:00+00:00", "2021-01-01T12:00:00+00:00"),
    ("iso", "2021-01-01 12:00", "2021-01-01T11:00:00+00:00"),
])
def test_timestamp_keyword_formats(fmt, cell, instant):
    m = SourceMapping.from_yaml(DST.replace('format: "%d/%m/%Y %H:%M"', f"format: {fmt}")
                                + 'decimal: ","\n')
    assert collect(parse(f"Time;Q\n{cell};1\n".encode(), m))["q"] == [(ns(instant), 1.0)]


# ---------------------------------------------------------------- properties, chunking, memory


FIXED = SourceMapping.from_yaml(SMALL)
BODY_CHARS = st.sampled_from(list("0123456789;,.:- \r\n\"#NA/eE+Tx")
                             + ["2021-10-31 02:00", "\x00", "é"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(st.text(max_size=300), st.lists(BODY_CHARS, max_size=200).map("".join)),
       with_header=st.booleans(), chunk_rows=st.integers(1, 5))
def test_any_text_either_unparseable_or_balanced(body, with_header, chunk_rows):
    data = (("Time;Q;H\r\n" if with_header else "") + body).encode("utf-8")
    try:
        chunks = list(parse_tabular(io.BytesIO(data), FIXED, chunk_rows=chunk_rows))
    except UnparseableFile as exc:
        assert "\n" not in str(exc)
        return
    for c in chunks:
        assert_balanced(c)
        assert c.values_received == 2 * c.rows_received


def test_chunk_size_does_not_change_totals(shared_data):
    raw = (shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes()
    m = mapping("battledim_flows")
    default, small_chunks = parse(raw, m), parse(raw, m, chunk_rows=7)
    assert len(small_chunks) == -(-8928 // 7)
    assert summarise(small_chunks) == summarise(default)
    assert collect(small_chunks) == collect(default)


def test_chunk_size_does_not_change_bwdf(shared_data, inflow):
    _, default = inflow
    small_chunks = parse((shared_data / "bwdf" / "InflowData_1.xlsx").read_bytes(),
                         mapping("bwdf_inflow"), chunk_rows=7)
    assert summarise(small_chunks) == summarise(default)
    assert collect(small_chunks) == collect(default)


class ManyRows(io.RawIOBase):
    """A 5-minute CSV of ``rows`` rows, generated lazily."""

    def __init__(self, rows: int) -> None:
        self.rows, self.i, self.pending = rows, -1, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while len(self.pending) < len(buffer) and self.i < self.rows:
            if self.i < 0:
                self.pending += b"Time;Q;H\r\n"
                self.i = 0
            batch = range(self.i, min(self.i + 500, self.rows))
            self.pending += "".join(
                f"{datetime.fromtimestamp(1.6e9 + 300 * j, UTC):%Y-%m-%d %H:%M};"
                f"{j % 97},5;{j % 10}\r\n" for j in batch).encode()
            self.i = batch.stop
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n


def peak_bytes(rows: int) -> int:
    m = small().model_copy(update={"timestamp": small().timestamp.model_copy(
        update={"timezone": "UTC"})})
    tracemalloc.start()
    try:
        total = summarise(parse_tabular(io.BufferedReader(ManyRows(rows)), m, chunk_rows=500))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total["values_accepted"] == 2 * rows
    return peak


def test_csv_memory_does_not_grow_with_file_size():
    peak_bytes(1_000)  # first use allocates caches (regexes, pandas) once
    small_file, big_file = peak_bytes(4_000), peak_bytes(40_000)  # ~0.15 MB and ~1.5 MB of CSV
    assert big_file < 1.5 * small_file


def test_undecodable_line_far_down_is_named_after_earlier_chunks():
    good = "".join(f"2021-01-0{d} {h:02d}:{m:02d};1;2\r\n"
                   for d in (1, 2, 3) for h in range(24) for m in range(60))  # > one 64 KiB block
    data = b"Time;Q;H\r\n" + good.encode() + "2021-01-04 00:00;1;2 °C\r\n".encode("cp1252")
    stream = parse_tabular(io.BytesIO(data), small(), chunk_rows=100)
    assert next(stream).rows_received == 100  # streaming: earlier rows arrive first
    expected = r"^line 4322: bytes b'\\xb0C\\r\\n' are not valid utf-8"
    with pytest.raises(UnparseableFile, match=expected):
        list(stream)


def test_old_mac_line_ends():
    with pytest.raises(UnparseableFile, match="bare carriage return"):
        parse(b"Time;Q;H\r2021-01-01 00:00;1;2\r2021-01-01 01:00;1;2\r", small())


@settings(max_examples=150, deadline=None)
@given(minutes=st.lists(st.integers(0, 40), max_size=60), chunk_rows=st.integers(1, 9))
def test_duplicates_first_wins_in_any_order(minutes, chunk_rows):
    m = SourceMapping.from_yaml(DST.replace("Europe/Rome", "UTC"))
    body = "".join(f"01/01/2021 00:{x:02d};{i}\n" for i, x in enumerate(minutes))
    chunks = parse(("Time;Q\n" + body).encode(), m, chunk_rows=chunk_rows)
    firsts = {}
    for i, x in enumerate(minutes):
        firsts.setdefault(x, i)
    expected = [(ns(f"2021-01-01T00:{x:02d}:00+00:00"), float(i)) for x, i in firsts.items()]
    assert collect(chunks).get("q", []) == sorted(expected, key=lambda p: p[1])
    dupes = {r.row for c in chunks for r in c.rejected if r.reason == "duplicate"}
    assert dupes == {i + 2 for i, x in enumerate(minutes) if firsts[x] != i}


def test_workbook_with_native_dates_offset_start_and_unnamed_columns(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Export"
    sheet["B3"], sheet["C3"], sheet["D3"] = "Day", "Hour", "Flow"  # header on spreadsheet row 3
    sheet["B4"], sheet["C4"], sheet["D4"] = datetime(2021, 7, 1), time_of(12, 0), 36
    sheet["B5"], sheet["C5"], sheet["D5"] = datetime(2021, 7, 1), time_of(13, 0), "n/a"
    sheet["F5"] = "note"  # a stray cell in a column without a name
    sheet["B6"], sheet["C6"], sheet["D6"] = datetime(2021, 7, 1), time_of(14, 0), True
    path = tmp_path / "export.xlsx"
    book.save(path)
    m = SourceMapping.from_yaml("""
format: xlsx
sheet: Export
header_row: 2
timestamp: {column: [Day, Hour], format: "%Y-%m-%d %H:%M:%S", timezone: Europe/Lisbon}
missing_values: [n/a]
sensors:
  Flow: {id: f, unit: m3/h}
""")
    chunks = parse(path.read_bytes(), m)
    assert collect(chunks)["f"] == [(ns("2021-07-01T11:00:00+00:00"), 0.01)]
    assert rejections(chunks) == {(5, "f", "missing", 1), (5, None, "unknown_column", 1),
                                  (6, "f", "non_numeric", 1)}
    detail = next(r.detail for r in chunks[0].rejected if r.reason == "unknown_column")
    assert "#6 (no name)" in detail


def time_of(hour: int, minute: int):
    from datetime import time

    return time(hour, minute)


def test_long_layout_sorted_by_sensor_resolves_each_autumn_hour_separately():
    m = SourceMapping.from_yaml(LONG.replace("format: iso", 'format: "%d/%m/%Y %H:%M"'))
    hours = ["01:00", "02:00", "02:00", "03:00"]
    body = "".join(f"{tag},31/10/2021 {h},{i},\n" for tag in ("P1", "F1")
                   for i, h in enumerate(hours))
    got = collect(parse(("tag,time,value,unit\n" + body).encode(), m, chunk_rows=3))
    expected = [ns("2021-10-30T23:00:00+00:00") + i * 3600 * 10**9 for i in range(4)]
    assert [t for t, _ in got["pressure_1"]] == expected
    assert [t for t, _ in got["flow_1"]] == expected
