"""A tenant's source mapping: how to read one source of its data into readings.

The one mapping model of every door: files (CSV/XLSX) need ``timestamp`` and units for
their sensors; push doors (line protocol, JSON push, pollers) use ``sensors`` to rename
keys, set units and ranges, ``timestamp`` to place wall-clock times without an offset,
and ``missing_values`` and ``window`` as files do.  A pure schema (pydantic): the
normalise processor applies it, the adapters and the CLI validate it.

Onboarding a new file format means writing one of these as YAML, not code::

    format: csv                 # csv | xlsx | auto (from the file's first bytes)
    encoding: utf-8             # csv only; a UTF-8 byte-order mark is skipped
    delimiter: ";"
    decimal: ","                # "." or ","
    thousands: null             # e.g. "." with decimal ",", or " "
    header_row: 0               # 0-based record holding the column names; null = no header,
                                # columns are then named "0", "1", ...
    skip_rows: 0                # records after the header that are not data (a units row)
    layout: wide                # wide: one column per sensor; long: sensor/time/value columns
    timestamp:
      column: Timestamp         # or a list joined with one space: [Date, Time]
      format: "%Y-%m-%d %H:%M:%S"   # strptime, or iso | excel-serial | epoch-s | epoch-ms
      timezone: UTC             # IANA name of the wall clock the file is written in
      ambiguous: infer          # repeated autumn hour: infer (1st = summer time) | dst |
                                # standard | reject (ambiguous_local_time); default: infer
                                # for files, reject for push doors (a push holds one pass)
    missing_values: ["#N/A", "NaN", "-"]   # blank cells are always missing
    unknown_columns: reject     # reject | ignore (wide layout)
    sensors:
      p227: {id: p227, unit: m3/h, range: [0, 500]}   # range in `unit`, either end may be null
    window: {future_days: 7}    # readings dated more than this after the upload arrived,
                                # or before 1970-01-01, are rejected (implausible_time)

Long layout adds ``sensor_column``, ``value_column`` and optionally ``unit_column``;
``sensors`` is then keyed by the sensor code found in ``sensor_column``.

A weather-forecast file (wide: one row per valid time, one column per variable) has a
``weather`` section instead of ``sensors``; ``timestamp`` then reads the valid time::

    weather:
      location: rome-north        # the tenant's name for the place (sensor-id rules)
      source: acme-meteo          # who issued it (default: how the upload came)
      issued_at_column: Issued    # read like timestamp.column (same format, zone, DST
                                  # clock; its repeated autumn hour is refused unless
                                  # timestamp.ambiguous says dst or standard)
      # or issued_at: 2024-03-30T06:00:00+01:00  (no offset: timestamp.timezone's wall
      #    clock), or issued_at: received  (when the upload arrived)
      variables:                  # column -> weather variable and the column's unit
        "Temp (°C)": {variable: air_temp, unit: degC}
        "Rain (mm)": {variable: precipitation, unit: mm}
    window: {future_days: 16}     # forecasts reach further ahead than the default week

``SourceMapping.from_yaml`` raises ``TenantConfigError`` naming the offending field path.
``version`` is the sha256 of the raw YAML, so every parse can say which mapping it used.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator,
)

from contracts.errors import TenantConfigError
from contracts.readings import SENSOR_ID_RE
from contracts.units import to_si, unit_problem
from contracts.weather import VARIABLES as WEATHER_VARIABLES

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
TIME_KEYWORDS = ("iso", "auto", "excel-serial", "epoch-s", "epoch-ms", "epoch-us", "epoch-ns")
DEFAULT_MISSING = ["NaN", "nan", "NA", "N/A", "#N/A", "null", "NULL", "-"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorSpec(_Strict):
    """One sensor: the tenant's id, the unit values are written in, an optional physical range."""

    id: str
    unit: str | None = None  # files: required; push doors: else the unit sent with the data
    range: tuple[float | None, float | None] | None = None  # inclusive, in ``unit``

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not SENSOR_ID_RE.match(v):
            raise ValueError(f"expected a sensor id matching {SENSOR_ID_RE.pattern}, got {v!r}")
        return v

    @field_validator("unit")
    @classmethod
    def _unit_known(cls, v: str | None) -> str | None:
        if v is not None and (problem := unit_problem(v)):
            raise ValueError(problem)
        return v

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, v: tuple[float | None, float | None] | None):
        if v is not None and v[0] is not None and v[1] is not None and v[0] > v[1]:
            raise ValueError(f"expected [min, max] with min <= max, got [{v[0]}, {v[1]}]")
        return v

    @model_validator(mode="after")
    def _range_needs_unit(self) -> SensorSpec:
        if self.range is not None and self.unit is None:
            raise ValueError("range: needs the sensor's unit (the range is in that unit)")
        return self

    def si_range(self, unit: str | None = None) -> tuple[float, float]:
        """The physical range converted to SI (open ends become -inf/+inf)."""
        lo, hi = self.range or (None, None)
        if lo is None and hi is None:
            return -float("inf"), float("inf")
        _, factor, offset = to_si(self.unit or unit)  # type: ignore[misc]  (validated)
        return (-float("inf") if lo is None else lo * factor + offset,
                float("inf") if hi is None else hi * factor + offset)


class TimestampSpec(_Strict):
    """Where the time of a row is and how to read it.  Wall-clock time in ``timezone``."""

    column: str | list[str] | None = None  # files: required; push doors: not used
    format: str = "iso"  # auto (push doors): ISO text or epoch-ms numbers
    timezone: str | None = None  # files: required; push doors: None = times need an offset
    ambiguous: Literal["infer", "dst", "standard", "reject"] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        if self.column is None:
            return ()
        return (self.column,) if isinstance(self.column, str) else tuple(self.column)

    @field_validator("column", mode="before")
    @classmethod
    def _column_text(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("expected a column name or a non-empty list of names")
            return [_as_name(x) for x in v]
        return _as_name(v)

    @field_validator("format")
    @classmethod
    def _format_ok(cls, v: str) -> str:
        if v in TIME_KEYWORDS:
            return v
        if "%" not in v:
            raise ValueError(f"expected a strptime format such as '%d/%m/%Y %H:%M' or one of "
                             f"{', '.join(TIME_KEYWORDS)}, got {v!r}")
        try:
            sample = datetime(2001, 2, 3, 4, 5, 6).astimezone()
            datetime.strptime(sample.strftime(v), v)
        except ValueError as exc:
            raise ValueError(f"strptime format {v!r} does not round-trip: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _zone_known(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone such as 'Europe/Rome', 'UTC' or "
                             f"'Etc/GMT-1' (fixed UTC+1), got {v!r}") from None
        return v


class TimeWindow(_Strict):
    """Which reading times are plausible.  Earlier than ``earliest`` (never before
    1970-01-01: the store holds no earlier time) or more than ``future_days`` after the
    upload arrived: rejected as ``implausible_time``.  Day-ahead prices and schedules are
    dated in the future, so the default allows a week."""

    earliest: datetime = datetime(1970, 1, 1)
    future_days: float = Field(default=7.0, ge=0, le=3660)

    @field_validator("earliest")
    @classmethod
    def _not_before_epoch(cls, v: datetime) -> datetime:
        naive = v.replace(tzinfo=None) if v.tzinfo is None else v.astimezone(
            ZoneInfo("UTC")).replace(tzinfo=None)
        if naive < datetime(1970, 1, 1):
            raise ValueError(f"expected 1970-01-01 or later (the store keeps no earlier "
                             f"time), got {v.isoformat()}")
        return naive


class WeatherColumn(_Strict):
    """One column of a weather-forecast file: the variable it holds and its unit."""

    variable: str
    unit: str

    @field_validator("variable")
    @classmethod
    def _variable_known(cls, v: str) -> str:
        if v not in WEATHER_VARIABLES:
            raise ValueError(f"expected a weather variable, one of "
                             f"{', '.join(WEATHER_VARIABLES)}; got {v!r}")
        return v

    @model_validator(mode="after")
    def _unit_measures_variable(self) -> WeatherColumn:
        if (problem := unit_problem(self.unit)) is not None:
            raise ValueError(f"unit: {problem}")
        si_unit = to_si(self.unit)[0]  # type: ignore[index]  (known: checked above)
        want = WEATHER_VARIABLES[self.variable]
        if si_unit != want:
            raise ValueError(f"unit: {self.unit!r} measures {si_unit}, but {self.variable} "
                             f"is in {want}")
        return self


class WeatherSection(_Strict):
    """A weather-forecast file: where, by whom, issued when, and which column is what.
    The issue time: ``issued_at_column`` (per row), or ``issued_at`` (a fixed instant,
    or ``received``: when the upload arrived); exactly one of them."""

    location: str
    source: str | None = None
    issued_at_column: str | None = None
    issued_at: datetime | Literal["received"] | None = None
    variables: dict[str, WeatherColumn] = Field(min_length=1)

    @field_validator("location")
    @classmethod
    def _location_ok(cls, v: str) -> str:
        if not SENSOR_ID_RE.match(v):
            raise ValueError(f"expected a name matching {SENSOR_ID_RE.pattern}, got {v!r}")
        return v

    @field_validator("issued_at_column", mode="before")
    @classmethod
    def _column_text(cls, v: Any) -> Any:
        return None if v is None else _as_name(v)

    @field_validator("variables", mode="before")
    @classmethod
    def _column_names_text(cls, v: Any) -> Any:
        return {_as_name(k): c for k, c in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _one_issue_time(self) -> WeatherSection:
        if (self.issued_at_column is None) == (self.issued_at is None):
            raise ValueError("give exactly one of issued_at_column (a column of issue "
                             "times) and issued_at (a time, or 'received')")
        if self.issued_at_column in self.variables:
            raise ValueError(f"issued_at_column: {self.issued_at_column!r} is also a "
                             f"variable column")
        return self


class SourceMapping(_Strict):
    """How to read one family of a tenant's files.  See the module docstring for the YAML."""

    format: Literal["auto", "csv", "xlsx"] = "auto"
    description: str = ""
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str = '"'
    decimal: Literal[".", ","] = "."
    thousands: str | None = None
    header_row: int | None = Field(default=0, ge=0)
    skip_rows: int = Field(default=0, ge=0)
    sheet: str | int | None = None  # xlsx: name or 0-based index; None = first sheet
    layout: Literal["wide", "long"] = "wide"
    timestamp: TimestampSpec | None = None  # files: required
    missing_values: list[str] = Field(default_factory=lambda: list(DEFAULT_MISSING))
    unknown_columns: Literal["reject", "ignore"] = "reject"
    require_final_newline: bool = True  # csv: an unterminated last line is taken as truncated
    sensor_column: str | None = None  # long layout
    value_column: str | None = None  # long layout
    unit_column: str | None = None  # long layout, optional
    sensors: dict[str, SensorSpec] = Field(default_factory=dict)
    window: TimeWindow = Field(default_factory=TimeWindow)
    weather: WeatherSection | None = None  # a weather-forecast file (then no sensors)

    _raw: bytes | None = PrivateAttr(default=None)

    @classmethod
    def from_yaml(cls, text: str | bytes) -> SourceMapping:
        """Parse and validate a YAML mapping; ``TenantConfigError`` names the bad field."""
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        try:
            data = yaml.load(raw, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            raise TenantConfigError(f"source mapping is not valid YAML: {_one_line(exc)}") from None
        if not isinstance(data, dict):
            raise TenantConfigError(
                f"source mapping: expected a YAML mapping of fields, got {type(data).__name__}")
        try:
            mapping = cls.model_validate(data)
        except ValidationError as exc:
            raise TenantConfigError(_describe(exc)) from None
        mapping._raw = raw
        return mapping

    @property
    def version(self) -> str:
        """sha256 hex of the raw YAML (of the canonical JSON if not built from YAML)."""
        return hashlib.sha256(self._raw or self.model_dump_json().encode()).hexdigest()

    @field_validator("sensors", mode="before")
    @classmethod
    def _sensor_keys_text(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        # an entry without an id keeps its key as the sensor id
        return {_as_name(k): ({"id": _as_name(k), **s} if isinstance(s, dict) and "id" not in s
                              else s) for k, s in v.items()}

    def file_problem(self) -> str | None:
        """Why this mapping cannot read a CSV/XLSX file (None if it can)."""
        if self.timestamp is None or not self.timestamp.columns:
            return "timestamp.column: required to read a file (which column holds the time)"
        if self.timestamp.timezone is None:
            return ("timestamp.timezone: required to read a file (the IANA zone of its "
                    "wall clock, e.g. Europe/Rome or UTC)")
        if self.weather is not None:
            return self._weather_problem()
        if not self.sensors:
            return "sensors: a file mapping needs at least one sensor"
        no_unit = [k for k, s in self.sensors.items() if s.unit is None]
        if no_unit:
            return f"sensors.{no_unit[0]}.unit: required to read a file (the values' unit)"
        return None

    def _weather_problem(self) -> str | None:
        w = self.weather
        if self.sensors:
            return "sensors: a weather mapping names its columns under weather.variables"
        if self.layout != "wide":
            return "layout: a weather mapping reads one column per variable (wide)"
        clash = set(self.timestamp.columns) & ({*w.variables, w.issued_at_column} - {None})
        if clash:
            return f"weather: column {sorted(clash)[0]!r} is also a timestamp column"
        return None

    @field_validator("sensor_column", "value_column", "unit_column", mode="before")
    @classmethod
    def _names_text(cls, v: Any) -> Any:
        return None if v is None else _as_name(v)

    @field_validator("missing_values", mode="before")
    @classmethod
    def _markers_text(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for i, item in enumerate(v):
            if isinstance(item, int) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise ValueError(f"item {i}: expected text, got {item!r}; quote markers such as "
                                 f"'NULL', 'null', 'n/a', '-9999.0' in YAML")
            out.append(item.strip())
        return out

    @field_validator("encoding")
    @classmethod
    def _codec_known(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r} (e.g. utf-8, cp1252, utf-16)") from None
        return v

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_char(cls, v: str) -> str:
        if len(v) != 1:
            raise ValueError(f"expected exactly one character (write a tab as \"\\t\"), got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SourceMapping:
        if (self.format in ("csv", "xlsx") or self.weather) and (problem := self.file_problem()):
            raise ValueError(problem)
        t = self.thousands
        if t is not None and (len(t) != 1 or t == self.decimal):
            raise ValueError(f"thousands: expected one character other than the decimal mark "
                             f"{self.decimal!r}, got {self.thousands!r}")
        long_cols = {"sensor_column": self.sensor_column, "value_column": self.value_column,
                     "unit_column": self.unit_column}
        if self.layout == "long":
            for name in ("sensor_column", "value_column"):
                if long_cols[name] is None:
                    raise ValueError(f"{name}: required when layout is long")
        else:
            given = [k for k, v in long_cols.items() if v is not None]
            if given:
                raise ValueError(f"{given[0]}: only meaningful with layout long (layout is wide)")
            clash = set(self.timestamp.columns if self.timestamp else ()) & set(self.sensors)
            if clash:
                raise ValueError(f"sensors: column {sorted(clash)[0]!r} is also a timestamp column")
        quantity: dict[str, tuple[str, str]] = {}
        for name, spec in self.sensors.items():
            if spec.unit is None:
                continue
            si_unit = to_si(spec.unit)[0]  # type: ignore[index]  (validated)
            other = quantity.setdefault(spec.id, (name, si_unit))
            if other[1] != si_unit:
                raise ValueError(f"sensors.{name}.unit: sensor id {spec.id!r} is also mapped from "
                                 f"{other[0]!r} in {other[1]}, not {si_unit}")
        return self


def _as_name(v: Any) -> Any:
    """Column names and sensor codes are text; YAML may have read ``227`` as an int."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, str):
        return v.strip()
    return v


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _describe(exc: ValidationError) -> str:
    """``sensors.p227.range: ...; timestamp.timezone: ...`` from a pydantic error."""
    parts = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown field (got {err['input']!r})"
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)


# ---------------------------------------------------------------- JSON paths and pollers

_STEP = re.compile(r"\[(\*|\d+)\]")
_KEY = re.compile(r"[^.\[\]]+")
_TS_FORMATS = {"iso8601": "iso", "epoch_s": "epoch-s", "epoch_ms": "epoch-ms",
               "epoch_us": "epoch-us", "epoch_ns": "epoch-ns"}

Step = str | int | None  # key, list index, every list element


def compile_path(path: str) -> tuple[Step, ...]:
    """``"data[*].v"`` -> ``("data", None, "v")``; ValueError on bad syntax.

    Dotted keys, ``[*]`` for every element of a list and ``[n]`` for one; ``""`` is
    the node itself.
    """
    steps: list[Step] = []
    for part in path.split(".") if path not in ("", "$") else ():
        key = _KEY.match(part)
        rest = part[key.end():] if key else part
        if key:
            steps.append(key.group())
        pos = 0
        for m in _STEP.finditer(rest):
            if m.start() != pos:
                break
            steps.append(None if m.group(1) == "*" else int(m.group(1)))
            pos = m.end()
        if pos != len(rest) or (not key and not rest):
            raise ValueError(f"bad path {path!r} at {part!r}: expected key, key[*] or key[n]")
    return tuple(steps)


def select(doc: Any, steps: tuple[Step, ...]) -> list[Any]:
    """Every node ``steps`` reach from ``doc`` (missing keys reach nothing)."""
    nodes = [doc]
    for step in steps:
        found: list[Any] = []
        for node in nodes:
            if step is None:
                if isinstance(node, list):
                    found.extend(node)
            elif isinstance(step, int):
                if isinstance(node, list) and step < len(node):
                    found.append(node[step])
            elif isinstance(node, dict) and step in node:
                found.append(node[step])
        nodes = found
    return nodes


class PollMapping(BaseModel):
    """A poller's shorthand: where readings are in a polled JSON response.

    ``items`` is evaluated on the response, the other paths on each item.  ``sensor``:
    path to the sensor name in an item, or ``sensor_id`` for a response about one sensor.
    Unit: ``units[sensor]`` if given, else the item's ``unit`` path.  ``ts_format``:
    ``iso8601``, ``epoch_s|ms|us|ns`` or a ``strptime`` pattern; ``timezone`` (IANA)
    places wall-clock times without an offset.  The rules come from the one mapping
    model: ``source_mapping()``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    items: str = "[*]"
    sensor: str = "sensor"
    sensor_id: str | None = None
    ts: str = "ts"
    value: str = "value"
    unit: str | None = None
    units: dict[str, str] = {}
    ts_format: str = "iso8601"
    timezone: str | None = None

    @field_validator("items", "sensor", "ts", "value", "unit")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            compile_path(v)
        return v

    @field_validator("units")
    @classmethod
    def _units(cls, v: dict[str, str]) -> dict[str, str]:
        for u in v.values():
            if problem := unit_problem(u):
                raise ValueError(problem)
        return v

    @field_validator("ts_format")
    @classmethod
    def _ts_format(cls, v: str) -> str:
        if v not in _TS_FORMATS and "%" not in v:
            raise ValueError(f"ts_format must be one of {tuple(_TS_FORMATS)} or a strptime "
                             f"pattern, got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        return TimestampSpec._zone_known(v)

    def source_mapping(self) -> SourceMapping:
        return SourceMapping(
            timestamp=TimestampSpec(format=_TS_FORMATS.get(self.ts_format, self.ts_format),
                                    timezone=self.timezone),
            sensors={k: SensorSpec(id=k, unit=u) for k, u in self.units.items()})
