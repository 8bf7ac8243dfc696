"""Real utility files through the whole intake path, checked against an independent reading.

``ops.ingest.ingest`` submits the file (object store + ``intake.received``) and runs
every component in-process: normalise -> ``readings.normalised`` -> the QuestDB
projections.  What lands in QuestDB is compared with what this test computes from the
source file on its own (``csv`` + ``Decimal`` for BattLeDIM, ``openpyxl`` + ``zoneinfo``
for BWDF), never with the product's parser.  Tenants are unique per run: the session's
QuestDB is shared by every test.
"""

from __future__ import annotations

import csv
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from contracts.intake import IntakeParsed
from ops import wiring
from ops.ingest import ingest
from ops.wiring import questdb
from tests.conftest import REPO
from tests.helpers import reset_jetstream

pytestmark = pytest.mark.servers

MAPPINGS = REPO / "tests" / "mappings"
RUN = uuid.uuid4().hex[:8]
ROME = ZoneInfo("Europe/Rome")
REL = 1e-9


@pytest.fixture
async def clean_bus(settings):
    """Empty JetStream (streams, consumers, buckets); ``ingest`` recreates the topology."""
    conn = await wiring.nats_connection(settings, name="tagus-e2e")
    await reset_jetstream(conn)
    yield conn
    await conn.drain()


def _close(a: float, b: float, rel: float = REL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def _us(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime (QuestDB's timestamp resolution)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _intake_log(db, tenant: str) -> list[dict]:
    db.wait_for_wal("intake_log")
    cols = ("intake_id", "status", "filename", "rows_received", "rows_accepted",
            "rows_rejected", "values_received", "values_accepted", "values_rejected",
            "values_missing", "reasons", "detail")
    rows = db.rows(f"select {', '.join(cols)} from intake_log where tenant = '{tenant}'")
    return [dict(zip(cols, r, strict=True)) for r in rows]


# ---------------------------------------------------------------- BattLeDIM (CSV)


@dataclass(frozen=True)
class _Stats:
    count: int
    total: Decimal
    low: Decimal
    high: Decimal
    first_us: int
    last_us: int


def _battledim_expected(path: Path, si_divisor: Decimal) -> tuple[dict[str, _Stats], int]:
    """Per column: count, sum, min, max in SI, first/last UTC instant; and the data rows.

    Read with the csv module: ``;`` separated, decimal comma, naive timestamps = UTC.
    """
    with open(path, newline="", encoding="utf-8") as f:
        records = list(csv.reader(f, delimiter=";"))
    header, data = records[0], records[1:]
    stamps = [_us(datetime.strptime(r[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
              for r in data]
    out = {}
    for j, name in enumerate(header[1:], start=1):
        values = [Decimal(r[j].replace(",", ".")) / si_divisor for r in data]
        out[name] = _Stats(len(values), sum(values), min(values), max(values),
                           min(stamps), max(stamps))
    return out, len(data)


@pytest.mark.parametrize("name, mapping, unit, divisor", [
    ("2019-01_SCADA_Flows.csv", "battledim_flows.yaml", "m3/s", Decimal(3600)),  # m3/h
    ("2019-01_SCADA_Levels.csv", "battledim_levels.yaml", "m", Decimal(1)),
])
async def test_battledim_csv_lands_whole_in_si(clean_bus, settings, shared_data, name,
                                               mapping, unit, divisor):
    path = shared_data / "battledim" / name
    tenant = f"e2e-bd-{RUN}-{name.split('_')[-1][:4].lower()}"
    expected, data_rows = _battledim_expected(path, divisor)

    result = await ingest(settings, path, tenant, MAPPINGS / mapping, process="yes",
                          progress=False, timeout_s=120)

    assert isinstance(result.outcome, IntakeParsed), result.outcome
    db = questdb(settings)
    db.wait_for_wal("readings")
    got = {s: (n, total, lo, hi, first, last, distinct, u) for s, n, total, lo, hi, first, last,
           distinct, u in db.rows(
               "select sensor, count(), sum(value), min(value), max(value), "
               "cast(min(ts) as long), cast(max(ts) as long), count_distinct(ts), "
               f"first(unit) from readings where tenant = '{tenant}'")}
    assert sorted(got) == sorted(expected)
    for sensor, want in expected.items():
        n, total, lo, hi, first, last, distinct, got_unit = got[sensor]
        assert n == distinct == want.count == data_rows, (sensor, n, distinct, want.count)
        assert _close(total, float(want.total)), (sensor, total, want.total)
        assert _close(lo, float(want.low)), (sensor, lo, want.low)
        assert _close(hi, float(want.high)), (sensor, hi, want.high)
        assert (first, last) == (want.first_us, want.last_us), sensor
        assert got_unit == unit

    (log_row,) = _intake_log(db, tenant)
    assert log_row["intake_id"] == result.intake.event_id
    assert (log_row["status"], log_row["filename"]) == ("parsed", name)
    assert log_row["values_received"] == (log_row["values_accepted"] + log_row["values_rejected"]
                                          + log_row["values_missing"])
    assert log_row["rows_received"] == log_row["rows_accepted"] + log_row["rows_rejected"]
    assert log_row["rows_received"] == data_rows
    assert log_row["values_received"] == data_rows * len(expected)
    assert log_row["values_accepted"] == sum(s.count for s in expected.values())
    assert (log_row["values_rejected"], log_row["values_missing"]) == (0, 0)


# ---------------------------------------------------------------- BWDF (XLSX, local time)


@dataclass(frozen=True)
class _Workbook:
    values: dict[tuple[int, str], float]  # (UTC epoch us, sensor id) -> SI value
    missing: int  # '#N/A' cells
    by_local: dict[tuple[str, int], int]  # (local wall text, occurrence) -> UTC us


def _bwdf_expected(path: Path, sensors: dict[str, tuple[str, Decimal]]) -> _Workbook:
    """Every non-missing cell at its UTC instant, read with openpyxl and zoneinfo.

    The wall clock is Europe/Rome; the repeated autumn hour's first occurrence is summer
    time (fold=0, +02:00), the second standard time (fold=1, +01:00).
    """
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    header = [str(h) for h in rows[0]]
    seen: dict[str, int] = {}
    values: dict[tuple[int, str], float] = {}
    by_local: dict[tuple[str, int], int] = {}
    missing = 0
    for row in rows[1:]:
        if all(c is None for c in row):
            continue  # the sheet's trailing empty rows are not data
        text = row[0]
        wall = datetime.strptime(text, "%d/%m/%Y %H:%M")
        occurrence = seen.get(text, 0)
        seen[text] = occurrence + 1
        moment = wall.replace(tzinfo=ROME, fold=occurrence)
        assert moment.astimezone(UTC).astimezone(ROME).replace(tzinfo=None) == wall, text
        utc_us = _us(moment.astimezone(UTC))
        by_local[(text, occurrence)] = utc_us
        for j, column in enumerate(header[1:], start=1):
            sensor, factor = sensors[column]
            cell = row[j]
            if cell == "#N/A":
                missing += 1
                continue
            assert isinstance(cell, int | float), (text, column, cell)
            values[(utc_us, sensor)] = float(Decimal(str(cell)) * factor)
    return _Workbook(values, missing, by_local)


def _questdb_values(db, tenant: str, sensors) -> dict[tuple[int, str], float]:
    out = {}
    for sensor in sorted(sensors):  # one query per sensor keeps every answer small
        for ts, value in db.rows(f"select cast(ts as long), value from readings "
                                 f"where tenant = '{tenant}' and sensor = '{sensor}'"):
            assert (ts, sensor) not in out, ("duplicate row", ts, sensor)
            out[(ts, sensor)] = value
    return out


INFLOW = {f"DMA {c} (L/s)": (f"dma_{c.lower()}", Decimal("0.001")) for c in "ABCDEFGHIJ"}
WEATHER = {
    "Rainfall depth (mm)": ("rain_depth", Decimal("0.001")),  # mm -> m
    "Air temperature (°C)": ("air_temp", Decimal(1)),  # degC
    "Air humidity (%)": ("air_humidity", Decimal("0.01")),  # % -> fraction
    "Windspeed (km/h)": ("wind_speed", Decimal(1) / Decimal("3.6")),  # km/h -> m/s
}


@pytest.mark.parametrize("name, mapping, sensors", [
    ("InflowData_1.xlsx", "bwdf_inflow.yaml", INFLOW),
    ("WeatherData_1.xlsx", "bwdf_weather.yaml", WEATHER),
])
async def test_bwdf_xlsx_every_value_at_its_utc_instant(clean_bus, settings, shared_data, name,
                                                        mapping, sensors):
    path = shared_data / "bwdf" / name
    tenant = f"e2e-bwdf-{RUN}-{name[:4].lower()}"
    want = _bwdf_expected(path, sensors)

    result = await ingest(settings, path, tenant, MAPPINGS / mapping, process="yes",
                          progress=False, timeout_s=180)

    assert isinstance(result.outcome, IntakeParsed), result.outcome
    db = questdb(settings)
    db.wait_for_wal("readings")
    ids = {sid for sid, _ in sensors.values()}
    got = _questdb_values(db, tenant, ids)

    # nothing invented, nothing lost: the same (instant, sensor) keys, per sensor too
    assert len(got) == len(want.values)
    missing_keys = sorted(set(want.values) - set(got))[:5]
    extra_keys = sorted(set(got) - set(want.values))[:5]
    assert not missing_keys and not extra_keys, (missing_keys, extra_keys)
    wrong = [(k, got[k], v) for k, v in want.values.items() if not _close(got[k], v, 1e-12)]
    assert not wrong, wrong[:5]
    counts = dict(db.rows(f"select sensor, count() from readings where tenant = '{tenant}'"))
    assert counts == {s: sum(1 for _, sid in want.values if sid == s) for s in ids}

    # the repeated autumn hour: both occurrences, one UTC hour apart, with their own values
    first_utc = want.by_local[("31/10/2021 02:00", 0)]
    second_utc = want.by_local[("31/10/2021 02:00", 1)]
    assert first_utc == _us(datetime(2021, 10, 31, 0, 0, tzinfo=UTC))  # 02:00 CEST
    assert second_utc == _us(datetime(2021, 10, 31, 1, 0, tzinfo=UTC))  # 02:00 CET
    for sensor in ids:
        for instant in (first_utc, second_utc):
            if (instant, sensor) in want.values:
                assert _close(got[(instant, sensor)], want.values[(instant, sensor)], 1e-12)
    around = [_us(datetime(2021, 10, 30, 23, tzinfo=UTC)), first_utc, second_utc,
              _us(datetime(2021, 10, 31, 2, tzinfo=UTC))]  # local 01:00, 02:00, 02:00, 03:00
    first_sensor = sensors[next(iter(sensors))][0]
    assert [(t, first_sensor) in got for t in around] == [True] * 4
    # the two occurrences are told apart: some sensor reads differently in them
    assert any(got.get((first_utc, s)) != got.get((second_utc, s)) for s in ids)
    # the spring-forward gap: no 02:00 local on 28/03/2021, so 01:00 CET -> 03:00 CEST
    assert ("28/03/2021 02:00", 0) not in want.by_local
    assert (want.by_local[("28/03/2021 03:00", 0)]
            - want.by_local[("28/03/2021 01:00", 0)]) == 3_600_000_000

    (log_row,) = _intake_log(db, tenant)
    assert (log_row["intake_id"], log_row["status"]) == (result.intake.event_id, "parsed")
    assert log_row["values_received"] == (log_row["values_accepted"] + log_row["values_rejected"]
                                          + log_row["values_missing"])
    assert log_row["values_missing"] == want.missing
    assert log_row["values_accepted"] == len(want.values)
    assert log_row["values_rejected"] == 0, log_row["reasons"]
    assert json.loads(log_row["reasons"]) == ({"missing": want.missing} if want.missing else {})
