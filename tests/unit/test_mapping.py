"""SourceMapping: the shipped mappings load; errors name the field that is wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from contracts.errors import TenantConfigError
from contracts.mapping import SourceMapping

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"

MINIMAL = """
timestamp: {column: Time, format: iso, timezone: UTC}
sensors:
  p1: {id: p1, unit: m3/h, range: [0, 100]}
"""


def load(text: str) -> SourceMapping:
    return SourceMapping.from_yaml(text)


def config_error(text: str) -> str:
    with pytest.raises(TenantConfigError) as info:
        SourceMapping.from_yaml(text)
    return str(info.value)


@pytest.mark.parametrize("name", ["battledim_flows", "battledim_levels", "bwdf_inflow",
                                  "bwdf_weather"])
def test_shipped_mappings_load_and_are_versioned_by_their_bytes(name):
    raw = (MAPPINGS / f"{name}.yaml").read_bytes()
    mapping = SourceMapping.from_yaml(raw)
    assert mapping.version == hashlib.sha256(raw).hexdigest()
    assert mapping.sensors


def test_bwdf_inflow_mapping_says_rome_time_and_litres_per_second():
    m = SourceMapping.from_yaml((MAPPINGS / "bwdf_inflow.yaml").read_bytes())
    assert m.format == "xlsx" and m.timestamp.timezone == "Europe/Rome"
    assert m.timestamp.ambiguous == "infer" and m.missing_values == ["#N/A"]
    assert {s.id for s in m.sensors.values()} == {f"dma_{c}" for c in "abcdefghij"}
    assert {s.unit for s in m.sensors.values()} == {"l/s"}


def test_defaults_and_si_range():
    m = load(MINIMAL)
    assert (m.format, m.delimiter, m.decimal) == ("auto", ",", ".")
    assert (m.header_row, m.skip_rows, m.layout) == (0, 0, "wide")
    assert m.unknown_columns == "reject" and "#N/A" in m.missing_values
    assert m.timestamp.columns == ("Time",)
    assert m.sensors["p1"].si_range() == (0.0, pytest.approx(100 / 3600))


def test_version_changes_with_any_byte_and_str_equals_bytes():
    assert load(MINIMAL).version == SourceMapping.from_yaml(MINIMAL.encode()).version
    assert load(MINIMAL).version != load(MINIMAL + "# comment\n").version


def test_numeric_column_names_and_markers_are_text():
    m = load("""
timestamp: {column: [1, 2], format: "%d/%m/%Y %H:%M", timezone: Europe/Rome}
missing_values: ["#N/A", -9999]
sensors:
  227: {id: p227, unit: l/s}
""")
    assert m.timestamp.columns == ("1", "2")
    assert list(m.sensors) == ["227"] and m.missing_values == ["#N/A", "-9999"]


@pytest.mark.parametrize("change, path", [
    ("range: [0, 100]", "sensors.p1.range: "),
    ("unit: m3/h", "sensors.p1.unit: unknown unit 'furlongz'"),
    ("id: p1", "sensors.p1.id: "),
])
def test_sensor_errors_name_the_sensor_field(change, path):
    bad = {"range: [0, 100]": "range: [100, 0]", "unit: m3/h": "unit: furlongz",
           "id: p1": "id: 'bad id!'"}[change]
    message = config_error(MINIMAL.replace(change, bad))
    assert message.startswith(path), message


@pytest.mark.parametrize("yaml_text, expected", [
    (MINIMAL.replace("timezone: UTC", "timezone: Europe/Rom"),
     "timestamp.timezone: expected an IANA"),
    (MINIMAL.replace("format: iso", "format: 'DD/MM/YYYY'"),
     "timestamp.format: expected a strptime"),
    (MINIMAL.replace("format: iso", "format: '%Q'"), "timestamp.format: "),
    (MINIMAL + "delimiter: ';;'\n", "delimiter: expected exactly one character"),
    (MINIMAL + "decimal: ';'\n", "decimal: "),
    (MINIMAL + "decimal: ','\nthousands: ','\n", "thousands: expected one character other"),
    (MINIMAL + "encoding: klingon\n", "encoding: unknown text encoding"),
    (MINIMAL + "delimter: ';'\n", "delimter: unknown field"),
    (MINIMAL + "missing_values: [NULL]\n", "missing_values: item 0: expected text, got None"),
    (MINIMAL + "layout: long\n", "sensor_column: required when layout is long"),
    (MINIMAL + "value_column: v\n", "value_column: only meaningful with layout long"),
    (MINIMAL + "header_row: -1\n", "header_row: "),
    ("format: csv\nsensors: {p1: {id: p1, unit: m}}\n", "timestamp.column: required to read"),
    ("format: xlsx\n" + MINIMAL.replace("p1: {id: p1, unit: m3/h, range: [0, 100]}", "{}"),
     "sensors: a file mapping needs at least one sensor"),
    ("format: csv\n" + MINIMAL.replace("unit: m3/h, range: [0, 100]", "range: [0, 1]"),
     "range: needs the sensor's unit"),
    (MINIMAL.replace("unit: m3/h", "unit: KW"), "closest known: kW"),
    (MINIMAL + "  p2: {id: p1, unit: m}\n", "sensors.p2.unit: sensor id 'p1' is also mapped"),
    (MINIMAL.replace("sensors:", "sensors:\n  Time: {id: t, unit: m}"), "also a timestamp column"),
])
def test_errors_name_the_field_and_what_was_wrong(yaml_text, expected):
    assert expected in config_error(yaml_text)


@pytest.mark.parametrize("text", ["", "just a string", "[1, 2]", "a: [unclosed", b"\xff\xfe\x00"])
def test_not_a_yaml_mapping(text):
    message = config_error(text)
    assert "YAML" in message or "expected a YAML mapping" in message or "required" in message
