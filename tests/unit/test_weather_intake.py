"""Weather-forecast intake, pure: an Open-Meteo-shaped body, files by mapping, the handler."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bus.components import Context
from contracts.errors import TenantConfigError
from contracts.intake import IntakeParsed, RawIntakeReceived
from contracts.mapping import SourceMapping
from contracts.readings import ReadingsRejected
from contracts.weather import WeatherForecastReceived
from processors.normalise import handler
from processors.normalise.weather import parse_file, parse_polled
from producers.poller import PollerConfig, mapping_params

H = 3600 * 10**9
POLL = {"kind": "weather-forecast", "location": "rome-north"}


def ns(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 10**9


def open_meteo(times, **hourly) -> bytes:
    """A body in the shape of Open-Meteo's /v1/forecast (timezone=Europe/Rome in winter)."""
    units = {"time": "iso8601", "temperature_2m": "°C", "precipitation": "mm",
             "relative_humidity_2m": "%", "wind_speed_10m": "km/h", "cloud_cover": "%",
             "shortwave_radiation": "W/m²", "weather_code": "wmo code"}
    return json.dumps({
        "latitude": 41.9, "longitude": 12.5, "generationtime_ms": 0.05,
        "utc_offset_seconds": 3600, "timezone": "Europe/Rome", "timezone_abbreviation": "CET",
        "elevation": 21.0, "hourly_units": {k: units[k] for k in ("time", *hourly)},
        "hourly": {"time": times, **hourly}}).encode()


def test_open_meteo_body_in_si_at_its_fixed_offset_with_missing_and_rejected_values():
    # 2024-03-31 is the spring-forward day in Rome; Open-Meteo keeps the offset it answered
    # with (+01:00) for every time, so 02:00 exists and the UTC times stay hourly
    body = open_meteo(
        ["2024-03-31T01:00", "2024-03-31T02:00", "2024-03-31T03:00"],
        temperature_2m=[10.5, None, 9.0], precipitation=[0.0, 1.2, -3.0],
        relative_humidity_2m=[80, 85, 90], wind_speed_10m=[3.6, 7.2, 36],
        cloud_cover=[100, 50, 0], shortwave_radiation=[0, 0, 12.5], weather_code=[1, 2, None])
    received = ns(2024, 3, 30, 23, 40)
    p = parse_polled(body, POLL, received_at_ns=received)

    assert (p.location, p.latitude, p.longitude) == ("rome-north", 41.9, 12.5)
    [f] = p.forecasts
    assert f.issued_at_ns == received  # Open-Meteo states no issue time: the arrival
    assert f.valid_times_ns == [ns(2024, 3, 31, 0), ns(2024, 3, 31, 1), ns(2024, 3, 31, 2)]
    got = {s.variable: (s.unit, s.values) for s in f.series}
    assert got["air_temp"][0] == "degC" and got["air_temp"][1][0] == 10.5
    assert math.isnan(got["air_temp"][1][1])  # null: missing
    assert got["precipitation"][0] == "m"
    assert got["precipitation"][1][:2] == pytest.approx([0.0, 0.0012])
    assert math.isnan(got["precipitation"][1][2])  # negative depth: out of range
    assert got["relative_humidity"] == ("1", pytest.approx([0.8, 0.85, 0.9]))
    assert got["wind_speed"] == ("m/s", pytest.approx([1.0, 2.0, 10.0]))
    assert got["cloud_cover"] == ("1", pytest.approx([1.0, 0.5, 0.0]))
    assert got["ghi"] == ("W/m2", [0.0, 0.0, 12.5])

    a = p.accounting  # 6 mapped variables x 3 times + 2 weather codes
    assert (a.rows_received, a.rows_accepted, a.values_received) == (3, 3, 20)
    assert (a.values_accepted, a.values_rejected, a.values_missing) == (16, 3, 1)
    assert {(r.sensor_id, r.reason, r.count) for r in a.rejected} == {
        ("air_temp", "missing", 1), ("precipitation", "out_of_range", 1),
        (None, "unknown_column", 2)}


def test_open_meteo_unixtime_and_stated_issue_time():
    t0 = ns(2024, 6, 1, 0) // 10**9
    body = json.loads(open_meteo([t0, t0 + 3600], temperature_2m=[20.0, 21.0]))
    body["hourly_units"]["time"] = "unixtime"
    received = ns(2024, 6, 1, 5, 30)
    for stated, issued in (("2024-06-01T00:00:00Z", ns(2024, 6, 1, 0)),
                           ("2024-06-01T07:00:00+02:00", received - 30 * 60 * 10**9),
                           ("2024-06-02T00:00:00Z", received)):  # after the arrival: arrival
        body["issued_at"] = stated
        [f] = parse_polled(json.dumps(body).encode(), POLL, received_at_ns=received).forecasts
        assert (f.issued_at_ns, f.valid_times_ns) == (issued, [t0 * 10**9, t0 * 10**9 + H])


WEATHER_MAPPING = b"""
format: csv
delimiter: ";"
decimal: ","
timestamp: {column: Valid, format: "%d/%m/%Y %H:%M", timezone: Europe/Rome}
window: {future_days: 16}
weather:
  location: rome-north
  source: acme-meteo
  issued_at_column: Issued
  variables:
    "Temp (C)": {variable: air_temp, unit: degC}
    "Rain (mm)": {variable: precipitation, unit: mm}
"""

# 2024-10-27: Rome goes back from +02:00 to +01:00 at 03:00, so 02:00 happens twice
WEATHER_CSV = b"""Issued;Valid;Temp (C);Rain (mm)
27/10/2024 00:00;27/10/2024 01:00;12,5;0
27/10/2024 00:00;27/10/2024 02:00;12,0;0,2
27/10/2024 00:00;27/10/2024 02:00;11,8;#N/A
27/10/2024 00:00;27/10/2024 03:00;11,5;x
27/10/2024 06:00;27/10/2024 07:00;13,0;
31/03/2024 00:00;31/03/2024 02:30;5;0
soon;27/10/2024 08:00;13,0;1
"""


def test_file_by_mapping_groups_by_issue_time_through_the_dst_clock():
    p = parse_file(io.BytesIO(WEATHER_CSV), SourceMapping.from_yaml(WEATHER_MAPPING),
                   received_at_ns=ns(2024, 10, 27, 12))
    assert (p.location, p.source) == ("rome-north", "acme-meteo")
    first, second = p.forecasts
    assert first.issued_at_ns == ns(2024, 10, 26, 22)  # 00:00 CEST
    assert first.valid_times_ns == [ns(2024, 10, 26, 23), ns(2024, 10, 27, 0),
                                    ns(2024, 10, 27, 1), ns(2024, 10, 27, 2)]
    temp, rain = first.series
    assert (temp.variable, temp.values) == ("air_temp", [12.5, 12.0, 11.8, 11.5])
    assert rain.values[:2] == pytest.approx([0.0, 0.0002])
    assert math.isnan(rain.values[2]) and math.isnan(rain.values[3])
    assert (second.issued_at_ns, second.valid_times_ns) == (ns(2024, 10, 27, 5),
                                                            [ns(2024, 10, 27, 6)])
    a = p.accounting
    assert (a.rows_received, a.rows_accepted, a.rows_rejected) == (7, 5, 2)
    assert (a.values_received, a.values_accepted, a.values_rejected, a.values_missing) == (
        14, 7, 5, 2)
    assert {(r.row, r.reason) for r in a.rejected if r.reason != "missing"} == {
        (5, "non_numeric"), (7, "nonexistent_local_time"), (8, "unparseable_time")}


def test_xlsx_with_a_fixed_wall_clock_issue_time(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.append(["Valid", "GHI"])
    for h in range(3):
        book.active.append([datetime(2024, 7, 1, 10 + h), 500.0 + h])
    book.save(tmp_path / "f.xlsx")
    mapping = SourceMapping.from_yaml(b"""
timestamp: {column: Valid, timezone: Europe/Rome}
weather:
  location: plant
  issued_at: 2024-07-01 06:00:00
  variables: {GHI: {variable: ghi, unit: W/m2}}
""")
    with open(tmp_path / "f.xlsx", "rb") as f:
        [fc] = parse_file(f, mapping, received_at_ns=ns(2024, 7, 1, 9)).forecasts
    assert fc.issued_at_ns == ns(2024, 7, 1, 4)  # 06:00 CEST
    assert fc.valid_times_ns == [ns(2024, 7, 1, 8 + h) for h in range(3)]


@pytest.mark.parametrize(("weather", "error"), [
    ("{location: x, issued_at: received, variables: {T: {variable: air_temp, unit: mm}}}",
     "measures m"),
    ("{location: x, issued_at: received, variables: {T: {variable: snow, unit: m}}}",
     "weather variable"),
    ("{location: x, issued_at: received, issued_at_column: I, "
     "variables: {T: {variable: air_temp, unit: degC}}}", "exactly one"),
    ("{location: x, issued_at: received, variables: {}}", "variables"),
])
def test_weather_mapping_errors_name_the_field(weather, error):
    with pytest.raises(TenantConfigError, match=error):
        SourceMapping.from_yaml(f"timestamp: {{column: V, timezone: UTC}}\nweather: {weather}")


def test_handler_publishes_forecast_rejections_and_accounting():
    now = datetime(2024, 3, 30, 23, 40, tzinfo=UTC)
    event = RawIntakeReceived(
        event_id="intake-1", tenant="acme", occurred_at=now, recorded_at=now,
        source="poller:meteo", bucket="b", object_name="o", sha256="0" * 64, size_bytes=1,
        content_type="application/json", params=POLL)
    body = open_meteo(["2024-03-31T01:00", "2024-03-31T02:00"],
                      temperature_2m=[10.0, None], precipitation=[0.0, 0.5],
                      weather_code=[3, 3])
    ctx = Context(processor="normalise", now=now, input=event,
                  resources={"payload": io.BytesIO(body), "mapping": None})
    out = list(handler.handle(event, ctx))
    assert [type(e) for e in out] == [WeatherForecastReceived, ReadingsRejected, IntakeParsed]
    forecast, _, parsed = out
    assert (forecast.location, forecast.issued_at, forecast.intake_id) == (
        "rome-north", now, "intake-1")
    assert forecast.series[0].values[0] == 10.0 and math.isnan(forecast.series[0].values[1])
    assert (parsed.values_received, parsed.values_accepted, parsed.values_missing,
            parsed.values_rejected, parsed.sensors) == (6, 3, 1, 2,
                                                        ["air_temp", "precipitation"])
    ctx2 = Context(processor="normalise", now=now, input=event,
                   resources={"payload": io.BytesIO(body), "mapping": None})
    assert [e.event_id for e in handler.handle(event, ctx2)] == [e.event_id for e in out]


def test_weather_poller_config():
    c = PollerConfig(name="meteo", tenant="acme", url="http://x/v1/forecast",
                     kind="weather-forecast", location="rome-north")
    assert mapping_params(c) == POLL
    for bad in ({"kind": "weather-forecast"}, {"location": "rome-north"}):
        with pytest.raises(ValidationError, match="location"):
            PollerConfig(name="meteo", tenant="acme", url="http://x", **bad)
