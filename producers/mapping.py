"""A tenant's source mapping: how to read one family of its files (CSV/XLSX) into readings.

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
      ambiguous: infer          # repeated autumn hour: infer (1st = summer time) | dst | standard
    missing_values: ["#N/A", "NaN", "-"]   # blank cells are always missing
    unknown_columns: reject     # reject | ignore (wide layout)
    sensors:
      p227: {id: p227, unit: m3/h, range: [0, 500]}   # range in `unit`, either end may be null

Long layout adds ``sensor_column``, ``value_column`` and optionally ``unit_column``;
``sensors`` is then keyed by the sensor code found in ``sensor_column``.

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
from contracts.units import known_units, to_si

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
TIME_KEYWORDS = ("iso", "excel-serial", "epoch-s", "epoch-ms")
DEFAULT_MISSING = ["NaN", "nan", "NA", "N/A", "#N/A", "null", "NULL", "-"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorSpec(_Strict):
    """One sensor: the tenant's id, the unit values are written in, an optional physical range."""

    id: str
    unit: str
    range: tuple[float | None, float | None] | None = None  # inclusive, in ``unit``

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not SENSOR_ID_RE.match(v):
            raise ValueError(f"expected a sensor id matching {SENSOR_ID_RE.pattern}, got {v!r}")
        return v

    @field_validator("unit")
    @classmethod
    def _unit_known(cls, v: str) -> str:
        if to_si(v) is None:
            raise ValueError(f"unknown unit {v!r}; known units: {', '.join(known_units())}")
        return v

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, v: tuple[float | None, float | None] | None):
        if v is not None and v[0] is not None and v[1] is not None and v[0] > v[1]:
            raise ValueError(f"expected [min, max] with min <= max, got [{v[0]}, {v[1]}]")
        return v

    def si_range(self) -> tuple[float, float]:
        """The physical range converted to SI (open ends become -inf/+inf)."""
        _, factor, offset = to_si(self.unit)  # type: ignore[misc]  (validated)
        lo, hi = self.range or (None, None)
        return (-float("inf") if lo is None else lo * factor + offset,
                float("inf") if hi is None else hi * factor + offset)


class TimestampSpec(_Strict):
    """Where the time of a row is and how to read it.  Wall-clock time in ``timezone``."""

    column: str | list[str]
    format: str = "iso"
    timezone: str
    ambiguous: Literal["infer", "dst", "standard"] = "infer"

    @property
    def columns(self) -> tuple[str, ...]:
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
    def _zone_known(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone such as 'Europe/Rome', 'UTC' or "
                             f"'Etc/GMT-1' (fixed UTC+1), got {v!r}") from None
        return v


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
    timestamp: TimestampSpec
    missing_values: list[str] = Field(default_factory=lambda: list(DEFAULT_MISSING))
    unknown_columns: Literal["reject", "ignore"] = "reject"
    require_final_newline: bool = True  # csv: an unterminated last line is taken as truncated
    sensor_column: str | None = None  # long layout
    value_column: str | None = None  # long layout
    unit_column: str | None = None  # long layout, optional
    sensors: dict[str, SensorSpec]

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
        return {_as_name(k): s for k, s in v.items()} if isinstance(v, dict) else v

    @field_validator("sensors")
    @classmethod
    def _some_sensors(cls, v: dict[str, SensorSpec]) -> dict[str, SensorSpec]:
        if not v:
            raise ValueError("expected at least one sensor")
        return v

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
            clash = set(self.timestamp.columns) & set(self.sensors)
            if clash:
                raise ValueError(f"sensors: column {sorted(clash)[0]!r} is also a timestamp column")
        quantity: dict[str, tuple[str, str]] = {}
        for name, spec in self.sensors.items():
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
