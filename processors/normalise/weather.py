"""Weather forecasts in: a polled forecast API's body, or a file by its mapping -> SI forecasts.

One outcome per upload: ``weather.forecast_received`` (one per issue time; a large one
split by valid time), ``readings.rejected`` for every value that could not be used (the
one rejection record of every door), then ``intake.parsed`` (received = accepted +
rejected + missing) or ``intake.failed``.

- **Polled** (intake params ``kind: weather-forecast`` and ``location``): a body in the
  shape of Open-Meteo's ``/v1/forecast``.  Only ``hourly`` is read: one row per entry of
  ``hourly.time``, one column per other key, named as ``OPEN_METEO`` says (others are
  ``unknown_column``), in the unit ``hourly_units`` gives (``contracts.units``).  ISO
  times are wall-clock times at the fixed offset ``utc_offset_seconds``: Open-Meteo
  applies the offset in force when it answers to every time of the answer, with no DST
  switch inside it (its maintainer, open-meteo/open-meteo#261), so they must *not* go
  through the zone's DST rules; ``timeformat=unixtime`` numbers are UTC epoch seconds.
  ``null`` is ``missing``.
- **Files** (CSV/XLSX whose mapping has a ``weather`` section, ``contracts.mapping``):
  one row per valid time (``timestamp``), one column per variable, the issue time per
  row (``issued_at_column``) or fixed (``issued_at``); wall-clock times of both go
  through the one DST clock (``clock.py``).  Rows are grouped by issue time.

**Issue time of a polled forecast**: when its body arrived (the intake's
``occurred_at``), unless the body states one in a top-level ``issued_at`` (ISO 8601 with
an offset, or epoch seconds); a stated time after the arrival counts as the arrival (a
forecast cannot have been issued after Tagus held it).  Open-Meteo states none, so its
forecasts are issued when polled: the instant Tagus could first have used them.

Values go through the one rulebook (``rules.py``): SI conversion, each variable's
physical range (``contracts.weather.RANGES``), duplicates (per issue time and variable)
and the time window (files: the mapping's ``window``; polls: ``POLL_FUTURE_DAYS``).
Pure: the runner hands over the payload and the mapping text.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import msgspec
import numpy as np

from bus.components import Context
from contracts.base import Event
from contracts.errors import ContractError, TenantConfigError
from contracts.intake import COUNTERS, IntakeFailed, IntakeParsed, RawIntakeReceived
from contracts.mapping import SourceMapping, TimestampSpec, TimeWindow
from contracts.readings import ReadingsRejected
from contracts.units import to_si, unit_problem
from contracts.weather import (
    POLL_KIND, RANGES, VARIABLES, WeatherForecastReceived, WeatherSeries,
)
from processors.normalise.clock import Clock
from processors.normalise.dispatch import TABULAR
from processors.normalise.numbers import Numbers, is_blank, stamp_text
from processors.normalise.rules import (
    NAT, ParsedChunk, RejectionCap, Rulebook, SensorRule, Tally, Window, clip, merge,
)
from processors.normalise.tabular.parser import MAX_LINE_CHARS
from processors.normalise.tabular.records import (
    Record, UnparseableFile, book_records, csv_records, split_header,
)

# Open-Meteo hourly variable -> Tagus weather variable (the 2023 names and the older ones)
OPEN_METEO: dict[str, str] = {
    "temperature_2m": "air_temp", "precipitation": "precipitation",
    "relative_humidity_2m": "relative_humidity", "relativehumidity_2m": "relative_humidity",
    "wind_speed_10m": "wind_speed", "windspeed_10m": "wind_speed",
    "cloud_cover": "cloud_cover", "cloudcover": "cloud_cover",
    "shortwave_radiation": "ghi", "direct_normal_irradiance": "dni",
    "diffuse_radiation": "dhi",
}
POLL_FUTURE_DAYS = 16.0  # Open-Meteo's longest forecast
MAX_VALUES = 100_000  # forecast values per event (~1 MB of msgpack)
MAX_REJECTED = 10_000  # rejection entries per message
MAX_ROWS = 1_000_000  # data rows of one file (a weather file is read whole)
_BOOK_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
_HAS_OFFSET = re.compile(r"(?:Z|[+-]\d\d(?::?\d\d)?)$")
_ISO = TimestampSpec(format="iso")  # times that carry their offset


@dataclass(frozen=True)
class Forecast:
    """One issue time's forecast: UTC ns valid times, ascending; one series per variable."""

    issued_at_ns: int
    valid_times_ns: list[int]
    series: list[WeatherSeries]


@dataclass(frozen=True)
class ParsedWeather:
    """What one upload gave: its forecasts and the accounting of every row and value."""

    location: str
    source: str | None  # None: name it by how the upload came
    latitude: float | None
    longitude: float | None
    forecasts: list[Forecast]
    accounting: ParsedChunk


# ---------------------------------------------------------------- the processor's hook


def is_forecast(event: RawIntakeReceived, mapping_text: bytes | None) -> bool:
    """Is this upload a weather forecast (a weather poll, or a file whose mapping has a
    ``weather`` section)?  An invalid mapping is left to the readings path to report."""
    if event.params.get("kind") == POLL_KIND:
        return True
    if event.content_type not in TABULAR or mapping_text is None:
        return False
    try:
        return SourceMapping.from_yaml(mapping_text).weather is not None
    except TenantConfigError:
        return False


def handle(event: RawIntakeReceived, ctx: Context) -> Iterator[Event]:
    """``intake.received`` of a weather forecast -> forecasts, rejections, accounting."""
    payload: BinaryIO | None = ctx.resources.get("payload")
    mapping_text: bytes | None = ctx.resources.get("mapping")
    version = event.mapping_version or "-"

    def failed(reason: str, detail: str) -> IntakeFailed:
        return ctx.derive(IntakeFailed, key=version, intake_id=event.event_id,
                          reason=reason, detail=detail, source=event.source,
                          filename=event.filename)

    if payload is None:
        yield failed("payload_missing", f"object {event.object_name} is not in bucket "
                                        f"{event.bucket} (deleted or never stored)")
        return
    received_ns = _ns(event.occurred_at)
    try:
        if event.params.get("kind") == POLL_KIND:
            parsed = parse_polled(payload.read(), event.params, received_at_ns=received_ns)
        else:
            parsed = parse_file(payload, SourceMapping.from_yaml(mapping_text or b""),
                                received_at_ns=received_ns)
    except TenantConfigError as e:
        yield failed("invalid_mapping", str(e))
        return
    except ContractError as e:
        yield failed("unparseable", str(e))
        return
    acc = parsed.accounting
    if acc.rows_received == 0:
        yield failed("no_data", "the upload has no forecast rows (no valid times)")
        return
    for i, f in enumerate(parsed.forecasts):
        per = max(1, MAX_VALUES // len(f.series))
        for j in range(0, len(f.valid_times_ns), per):
            yield ctx.derive(
                WeatherForecastReceived, key=f"{version}/{i}/{j}",
                source=parsed.source or event.source, location=parsed.location,
                latitude=parsed.latitude, longitude=parsed.longitude,
                issued_at=_utc(f.issued_at_ns), valid_times_ns=f.valid_times_ns[j:j + per],
                series=[WeatherSeries(variable=s.variable, unit=s.unit,
                                      values=s.values[j:j + per]) for s in f.series],
                intake_id=event.event_id)
    for j in range(0, len(acc.rejected), MAX_REJECTED):
        yield ctx.derive(ReadingsRejected, key=f"{version}/{j}", source=event.source,
                         rejected=acc.rejected[j:j + MAX_REJECTED])
    times = [t for f in parsed.forecasts for t in (f.valid_times_ns[0], f.valid_times_ns[-1])]
    yield ctx.derive(IntakeParsed, key=version, intake_id=event.event_id,
                     mapping_version=event.mapping_version, source=event.source,
                     filename=event.filename, **{k: getattr(acc, k) for k in COUNTERS},
                     reasons=dict(sorted(acc.reasons().items())),
                     sensors=sorted({s.variable for f in parsed.forecasts for s in f.series}),
                     first_ts_ns=min(times, default=None), last_ts_ns=max(times, default=None))


# ---------------------------------------------------------------- polled: Open-Meteo's shape


def parse_polled(body: bytes, params: Mapping[str, str], *,
                 received_at_ns: int) -> ParsedWeather:
    """A polled Open-Meteo-shaped body (see the module docstring).  TenantConfigError:
    the params name no location; ContractError: the body is not such a forecast."""
    location = params.get("location")
    if not location:
        raise TenantConfigError("weather poll intake params lack 'location'")
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise ContractError(f"polled body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ContractError(f"expected a JSON object with 'hourly' (the shape of Open-Meteo's "
                            f"/v1/forecast), got a {type(doc).__name__}")
    if doc.get("error"):
        raise ContractError(f"the API answered an error: {clip(str(doc.get('reason')))}")
    hourly = doc.get("hourly")
    times = hourly.get("time") if isinstance(hourly, dict) else None
    if not isinstance(times, list):
        raise ContractError("expected 'hourly.time', a list of times (the shape of "
                            "Open-Meteo's /v1/forecast)")
    units = doc.get("hourly_units")
    units = units if isinstance(units, dict) else {}
    window = Window.of(TimeWindow(future_days=POLL_FUTURE_DAYS), received_at_ns)
    issued = _stated_issue(doc.get("issued_at"), received_at_ns, window)
    where = dict(location=location, source=None, latitude=_number(doc.get("latitude")),
                 longitude=_number(doc.get("longitude")))
    if not times:
        return ParsedWeather(**where, forecasts=[], accounting=merge([]))
    cap = RejectionCap()
    rules, numbers = Rulebook(window, cap), Numbers(SourceMapping())
    tally = Tally(list(range(1, len(times) + 1)), cap)
    utc, faults = _poll_times(times, doc.get("utc_offset_seconds"), units.get("time"))
    rules.time_faults(utc, faults)
    columns: list[tuple[SensorRule | str, str, list]] = []
    for name, values in hourly.items():
        if name == "time":
            continue
        variable = OPEN_METEO.get(name)
        if not isinstance(values, list) or len(values) != len(times):
            n = len(values) if isinstance(values, list) else 1
            tally.reject_row(0, variable, clip(f"hourly.{name}"), "malformed_row",
                             f"expected a list of {len(times)} values (one per time), got "
                             f"{n} {'values' if isinstance(values, list) else 'non-list'}",
                             count=max(n, 1))
        elif variable is None:
            ks = [k for k, v in enumerate(values) if v is not None]
            tally.reject_cells(None, ks, ["unknown_column"] * len(ks), [values[k] for k in ks],
                               f"hourly variable {name!r} is not one Tagus reads: "
                               f"{', '.join(OPEN_METEO)}")
        else:
            columns.append((_rule(variable, units.get(name)), variable, values))
    good = [k for k, f in enumerate(faults) if f is None]
    for k, f in enumerate(faults):
        if f is not None:
            tally.reject_row(k, None, clip(str(times[k])), *f, count=len(columns))
    _values(tally, rules, numbers, good, utc,
            [(rule, variable, [values[k] for k in good]) for rule, variable, values in columns])
    chunk = tally.finish()
    forecast = _forecast(issued, chunk)
    return ParsedWeather(**where, forecasts=[forecast] if forecast else [], accounting=chunk)


def _poll_times(times: list, offset_s: Any, time_unit: Any
                ) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
    """UTC ns of Open-Meteo's times: ISO wall-clock text at the fixed ``offset_s``, or
    epoch seconds (``timeformat=unixtime``); without an offset, ISO text is ``naive_time``."""
    if time_unit == "unixtime":
        clock = Clock(TimestampSpec(format="epoch-s"), Numbers(SourceMapping()))
        return clock.to_utc([(t,) for t in times], None)
    suffix = None
    if isinstance(offset_s, int) and not isinstance(offset_s, bool) and offset_s % 60 == 0:
        hours, minutes = divmod(abs(offset_s) // 60, 60)
        suffix = f"{'-' if offset_s < 0 else '+'}{hours:02d}:{minutes:02d}"
    stamps = [((t.strip() + suffix) if suffix and isinstance(t, str)
               and not _HAS_OFFSET.search(t.strip()) else t,) for t in times]
    return Clock(_ISO, Numbers(SourceMapping()), ambiguous="reject").to_utc(stamps, None)


def _stated_issue(stated: Any, received_at_ns: int, window: Window) -> int:
    """The issue time a body states (never later than its arrival), else its arrival."""
    if stated is None:
        return received_at_ns
    ns = NAT
    if isinstance(stated, int | float) and not isinstance(stated, bool) and math.isfinite(stated):
        ns = round(stated * 10**9)
    elif isinstance(stated, str):
        utc, faults = Clock(_ISO, Numbers(SourceMapping())).to_utc([(stated,)], None)
        ns = NAT if faults[0] else int(utc[0])
    if ns == NAT or ns < window.earliest_ns:
        raise ContractError(f"issued_at {clip(repr(stated))}: expected ISO 8601 with a zone "
                            f"offset (2024-03-30T06:00:00Z) or epoch seconds, after 1970")
    return min(ns, received_at_ns)


# ---------------------------------------------------------------- files by mapping


def parse_file(stream: BinaryIO, mapping: SourceMapping, *,
               received_at_ns: int) -> ParsedWeather:
    """A CSV/XLSX weather-forecast file as its mapping's ``weather`` section says.
    TenantConfigError: the mapping cannot read it; UnparseableFile: the file as a whole."""
    w = mapping.weather
    if w is None:
        raise TenantConfigError("the mapping has no weather section")
    if (problem := mapping.file_problem()) is not None:
        raise TenantConfigError(f"the mapping cannot read a file: {problem}")
    header, table = _records(stream, mapping)
    where: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        where.setdefault(name, []).append(i)
    needed = [*mapping.timestamp.columns, *([w.issued_at_column] if w.issued_at_column else [])]
    mapped = [name for name in w.variables if name in where]
    for name in (*needed, *mapped):
        if len(where.get(name, ())) > 1:
            raise UnparseableFile(f"column {name!r} appears {len(where[name])} times in header "
                                  f"{clip(repr(header))}")
    if absent := [c for c in needed if c not in where]:
        raise UnparseableFile(f"column {absent[0]!r} of the mapping not found in header "
                              f"{clip(repr(header))}")
    if not mapped:
        raise UnparseableFile(f"none of the weather columns {clip(repr(sorted(w.variables)))} "
                              f"found in header {clip(repr(header))}: a mapping for another file?")
    known = {*needed, *w.variables}
    unknown = ([i for i, h in enumerate(header) if h not in known]
               if mapping.unknown_columns == "reject" else [])
    columns = [(where[n][0], w.variables[n].variable,
                _rule(w.variables[n].variable, w.variables[n].unit)) for n in mapped]

    numbers = Numbers(mapping)
    window = Window.of(mapping.window, received_at_ns)
    cap = RejectionCap()
    width = len(header)
    faults: list[tuple[str, str, str] | None] = [_shape_fault(cells, done, width, mapping)
                                                 for _, cells, done in table]
    issue = _issue_times(table, faults, mapping, where, numbers, window, received_at_ns)
    stamps = [None if faults[k] else tuple(cells[i] for i in (where[c][0] for c in
                                                              mapping.timestamp.columns))
              for k, (_, cells, _) in enumerate(table)]
    utc, time_faults = Clock(mapping.timestamp, numbers).to_utc(stamps, issue.tolist())
    Rulebook(window, cap).time_faults(utc, time_faults)
    groups: dict[int, list[int]] = {}
    faulted: list[int] = []
    for k in range(len(table)):
        if faults[k] is None and time_faults[k] is not None:
            faults[k] = (stamp_text(stamps[k]), *time_faults[k])
        if faults[k] is None:
            groups.setdefault(int(issue[k]), []).append(k)
        else:
            faulted.append(k)

    def tally_of(ks: list[int]) -> Tally:
        tally = Tally([table[k][0] for k in ks], cap)
        for i in unknown:
            local = [j for j, k in enumerate(ks)  # cells of rows of the header's shape
                     if (not faults[k] or faults[k][1] not in ("malformed_row", "truncated_row"))
                     and not is_blank((table[k][1][i],))]
            tally.reject_cells(None, local, ["unknown_column"] * len(local),
                               [table[ks[j]][1][i] for j in local],
                               f"column {header[i] or f'#{i + 1} (no name)'!r} is not in the "
                               f"mapping")
        return tally

    chunks, forecasts = [], []
    if faulted:
        tally = tally_of(faulted)
        for j, k in enumerate(faulted):
            tally.reject_row(j, None, *faults[k], count=len(columns))
        chunks.append(tally.finish())
    for issued, ks in groups.items():
        tally = tally_of(ks)
        _values(tally, Rulebook(window, cap), numbers, list(range(len(ks))), utc[ks],
                [(rule, variable, [table[k][1][i] for k in ks]) for i, variable, rule in columns],
                non_numeric=f"expected a number with decimal mark {mapping.decimal!r}")
        chunk = tally.finish()
        chunks.append(chunk)
        if forecast := _forecast(issued, chunk):
            forecasts.append(forecast)
    return ParsedWeather(location=w.location, source=w.source, latitude=None, longitude=None,
                         forecasts=sorted(forecasts, key=lambda f: f.issued_at_ns),
                         accounting=merge(chunks))


def _records(stream: BinaryIO, m: SourceMapping) -> tuple[list[str], list[Record]]:
    """The header and the non-blank data records of a CSV or XLSX file (read whole)."""
    head = b""
    while len(head) < len(_BOOK_MAGIC[1]) and (more := stream.read(1 << 16)):
        head += more
    if not head:
        raise UnparseableFile("file is empty: expected a header row and data rows")
    is_book = head.startswith(_BOOK_MAGIC)
    if m.format == "csv" and is_book:
        raise UnparseableFile("mapping says csv but the file is a spreadsheet (zip/OLE container)")
    if m.format == "xlsx" and not is_book:
        raise UnparseableFile(f"mapping says xlsx but the file does not start with a zip/OLE "
                              f"signature: found {head[:12]!r}")
    records = (book_records(head + stream.read(), m) if is_book
               else csv_records(head, stream, m, MAX_LINE_CHARS))
    header, data = split_header(records, m)
    table = list(itertools.islice((r for r in data if not is_blank(r[1])), MAX_ROWS + 1))
    if len(table) > MAX_ROWS:
        raise UnparseableFile(f"more than {MAX_ROWS} data rows: a weather-forecast file is read "
                              f"whole; split it")
    return header, table


def _shape_fault(cells: list, complete: bool, width: int, m: SourceMapping
                 ) -> tuple[str, str, str] | None:
    """(raw, reason, detail) of a record that cannot be read as a row of the header."""
    if not complete:
        return (clip(m.delimiter.join(map(str, cells))), "truncated_row",
                "last line has no line terminator: the file looks cut short")
    if len(cells) == width or (len(cells) > width and is_blank(cells[width:])):
        return None
    return (clip(m.delimiter.join(map(str, cells))), "malformed_row",
            f"row has {len(cells)} fields, header has {width}")


def _issue_times(table: list[Record], faults: list, m: SourceMapping,
                 where: dict[str, list[int]], numbers: Numbers, window: Window,
                 received_at_ns: int) -> np.ndarray:
    """UTC ns issue time per row (NAT where ``faults`` gets a reason)."""
    w = m.weather
    # the repeated autumn hour cannot be inferred from issue times (rows repeat them)
    spec = m.timestamp.model_copy(update={
        "ambiguous": m.timestamp.ambiguous if m.timestamp.ambiguous in ("dst", "standard")
        else "reject"})
    clock = Clock(spec, numbers)
    if w.issued_at_column is None:
        if w.issued_at == "received":
            return np.full(len(table), received_at_ns, np.int64)
        utc, fault = clock.to_utc([(w.issued_at,)], None)
        Rulebook(window).time_faults(utc, fault)
        if fault[0] is not None:
            raise TenantConfigError(f"weather.issued_at: {fault[0][1]} ({fault[0][0]})")
        return np.full(len(table), int(utc[0]), np.int64)
    i = where[w.issued_at_column][0]
    distinct: dict[Any, list[int]] = {}
    for k, (_, cells, _) in enumerate(table):
        if faults[k] is None:
            distinct.setdefault(cells[i], []).append(k)
    cells = list(distinct)
    utc, issue_faults = clock.to_utc([(c,) for c in cells], None)
    Rulebook(window).time_faults(utc, issue_faults)
    out = np.full(len(table), NAT, np.int64)
    for cell, t, fault in zip(cells, utc.tolist(), issue_faults, strict=True):
        for k in distinct[cell]:
            if fault is None:
                out[k] = t
            else:
                faults[k] = (stamp_text((cell,)), fault[0], f"issue time: {fault[1]}")
    return out


# ---------------------------------------------------------------- shared


def _rule(variable: str, unit: Any) -> SensorRule | str:
    """The SI conversion and physical range of ``variable`` written in ``unit``, or the
    ``"reason|detail"`` why there is none."""
    if not isinstance(unit, str) or not unit:
        return "unknown_unit|no unit for this variable (hourly_units names none)"
    conv = to_si(unit)
    if conv is None:
        return f"unknown_unit|{unit_problem(unit)}"
    if conv[0] != VARIABLES[variable]:
        return (f"unknown_unit|unit {unit!r} measures {conv[0]}; {variable} is in "
                f"{VARIABLES[variable]}")
    return SensorRule(variable, unit, conv[0], conv[1], conv[2], *RANGES[variable])


def _values(tally: Tally, rules: Rulebook, numbers: Numbers, ks: list[int], utc: np.ndarray,
            columns: list[tuple[SensorRule | str, str, list]], *,
            non_numeric: str = "expected a number") -> None:
    """Each column's cells of rows ``ks`` (instants ``utc[ks]``) through the rulebook."""
    kk = np.asarray(ks, dtype=np.int64)
    t = utc[kk]
    for rule, variable, cells in columns:
        if isinstance(rule, str):
            reason, _, detail = rule.partition("|")
            tally.reject_cells(variable, ks, [reason] * len(ks), cells, detail)
            continue
        values, codes = numbers.column(cells)
        rules.values(tally, rule, kk, t, values, codes, cells, non_numeric=non_numeric)


def _forecast(issued_at_ns: int, chunk: ParsedChunk) -> Forecast | None:
    """The accepted values of one issue time on one time axis (NaN where a variable has
    no accepted value at a valid time); None if nothing was accepted."""
    if not chunk.series:
        return None
    times = sorted({t for s in chunk.series for t in s.timestamps_ns})
    pos = {t: i for i, t in enumerate(times)}
    order = list(VARIABLES)
    series = []
    for s in sorted(chunk.series, key=lambda s: order.index(s.sensor_id)):
        values = [math.nan] * len(times)
        for t, v in zip(s.timestamps_ns, s.values, strict=True):
            values[pos[t]] = v
        series.append(WeatherSeries(variable=s.sensor_id, unit=s.unit, values=values))
    return Forecast(issued_at_ns, times, series)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _utc(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
