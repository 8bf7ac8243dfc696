"""Weather forecasts: two time axes (issued at, valid at), per location and variable.

Observed weather arrives as readings (sensors such as ``air_temp``); a forecast of the
weather is another thing: it was issued at one instant about many later ones, and a
forecast run must only use the latest forecast issued before its own issue time.

Valid times: an ``instant`` variable is the value at the valid time; a ``preceding``
one is the total (precipitation) or mean (irradiance) over the step that ends at the
valid time, as Open-Meteo, ECMWF and most station files label them ("preceding hour
sum/mean").
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from contracts.base import Event

# variables a weather forecast may carry, with their SI (stored) unit
VARIABLES: dict[str, str] = {
    "air_temp": "degC",
    "precipitation": "m",            # depth over the step ending at the valid time (m)
    "relative_humidity": "1",
    "wind_speed": "m/s",
    "cloud_cover": "1",              # fraction 0..1
    "ghi": "W/m2",                   # global horizontal irradiance (mean over the step)
    "dni": "W/m2",
    "dhi": "W/m2",
}

# how a value relates to its valid time (see the module docstring)
AGGREGATION: dict[str, str] = {
    "air_temp": "instant", "precipitation": "preceding", "relative_humidity": "instant",
    "wind_speed": "instant", "cloud_cover": "instant",
    "ghi": "preceding", "dni": "preceding", "dhi": "preceding",
}

# physically possible values in the SI unit (inclusive); outside: rejected out_of_range
RANGES: dict[str, tuple[float, float]] = {
    "air_temp": (-90.0, 60.0),
    "precipitation": (0.0, 1.0),
    "relative_humidity": (0.0, 1.0),
    "wind_speed": (0.0, 120.0),
    "cloud_cover": (0.0, 1.0),
    "ghi": (0.0, 1500.0),
    "dni": (0.0, 1500.0),
    "dhi": (0.0, 1500.0),
}

# ``params["kind"]`` of an intake polled from a weather-forecast API
POLL_KIND = "weather-forecast"


class WeatherSeries(msgspec.Struct, frozen=True, kw_only=True):
    variable: str  # one of VARIABLES
    unit: str  # its SI unit
    values: list[float]  # NaN where the source gave nothing (or the value was rejected)


class WeatherForecastReceived(Event, frozen=True, kw_only=True,
                              tag="weather.forecast_received"):
    """A weather forecast for one ``location`` (a name the tenant uses, e.g. its station),
    ``issued_at`` (UTC) by ``source``, valid at ``valid_times_ns`` (UTC epoch ns, ascending;
    see the module docstring for what a valid time means per variable), one series per
    variable, in SI units.

    A large forecast may come as several events with the same ``issued_at``, each for
    its own valid times.  ``intake_id``: the upload it was parsed from.
    """

    source: str
    location: str
    latitude: float | None = None
    longitude: float | None = None
    issued_at: datetime
    valid_times_ns: list[int]
    series: list[WeatherSeries]
    intake_id: str | None = None
