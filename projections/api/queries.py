"""Read-side queries of the API over QuestDB: the one place their SQL is built.

Safety: every value a caller supplies (tenant, sensor, start, end, limit, intake id)
travels as a bound PG-wire parameter (``$1``...).  QuestDB cannot bind ``SAMPLE BY``'s
interval nor ``FILL``'s mode nor the aggregate, so those are parsed into a ``Bucket`` or
checked against a whitelist and the SQL is formatted from the parsed values, never from
the caller's text.  Table names are the projections' constants.

Times: QuestDB ``TIMESTAMP`` is UTC with microsecond precision.  asyncpg exchanges naive
datetimes; here they are UTC, and every timestamp leaving this module is an ISO-8601
string ending in ``Z``.  Values are in the SI unit named by the ``unit`` column.

Downsampled buckets start at ``start`` (``SAMPLE BY ... FROM start TO end``):
bucket k covers ``[start + k*bucket, start + (k+1)*bucket)``.

``db`` below is an asyncpg Connection (or Pool: anything with ``fetch``); the API gets
it from ``Database.session``, the CLI's plots from their own connection.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from contracts.readings import sensor_id_problem
from projections.api.errors import InvalidParameter
from projections.intake_log import LOG_TABLE, REJECTED_TABLE
from projections.readings import TABLE
from projections.forecasts import TABLE as FORECASTS_TABLE
from projections.kpis import TABLE as KPIS_TABLE
from projections.tasks import TABLE as TASKS_TABLE
from projections.weather import TABLE as WEATHER_TABLE

AGGS = ("avg", "min", "max", "sum", "count", "first", "last")
FILLS = ("none", "null", "prev", "linear")
BUCKET_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_BUCKET_S = 1
MAX_BUCKET_S = 31 * 86400
MAX_SPAN = timedelta(days=400)
MAX_BUCKETS = 100_000
MAX_SENSORS_PER_QUERY = 100
DEFAULT_SPAN = timedelta(days=1)
_MIN_UTC = datetime.min.replace(tzinfo=UTC)

_BUCKET_RE = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")


@dataclass(frozen=True)
class Bucket:
    """A SAMPLE BY interval: ``count`` x ``unit`` (one of s, m, h, d)."""

    count: int
    unit: str

    @property
    def seconds(self) -> int:
        return self.count * BUCKET_UNIT_S[self.unit]

    @property
    def sql(self) -> str:
        """The SAMPLE BY literal, formatted from the parsed int and a whitelisted unit."""
        assert self.unit in BUCKET_UNIT_S and isinstance(self.count, int)
        return f"{self.count:d}{self.unit}"


@dataclass(frozen=True)
class RangeQuery:
    """One sensor's readings in ``[start, end)`` (aware UTC), raw or downsampled."""

    sensor: str
    start: datetime
    end: datetime
    bucket: Bucket | None = None
    agg: str = "avg"
    fill: str = "none"
    limit: int = 10_000


# ---------------------------------------------------------------- validation


def parse_bucket(text: str) -> Bucket:
    m = _BUCKET_RE.match(text.strip())
    if not m:
        raise InvalidParameter("bucket", f"expected a number and a unit in s, m, h, d "
                                         f"(e.g. 15m, 1h); got {_shown(text)}")
    bucket = Bucket(int(m.group(1)), m.group(2))
    if not MIN_BUCKET_S <= bucket.seconds <= MAX_BUCKET_S:
        raise InvalidParameter("bucket", f"must be between {MIN_BUCKET_S}s and "
                                         f"{MAX_BUCKET_S // 86400}d; got {_shown(text)}")
    return bucket


def parse_time(parameter: str, text: str) -> datetime:
    """ISO-8601 with a zone (``Z`` or ``+01:00``) -> aware UTC datetime (years 1-9999)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        hint = (" ('+' in a URL query means a space: encode it as %2B)"
                if " " in text.strip() else "")
        raise InvalidParameter(parameter, f"expected ISO-8601 with a zone such as "
                                          f"2024-05-01T00:00:00Z; got {_shown(text)}{hint}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidParameter(parameter, f"needs a zone (Z or +HH:MM); got {_shown(text)}")
    try:
        return t.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(parameter, f"{_shown(text)} is outside the years 1-9999 once "
                                          "converted to UTC; give a time in that range")


def time_range(start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` from the optional texts: end defaults to ``now``, start to
    ``DEFAULT_SPAN`` before end (but not before year 1)."""
    end_t = parse_time("end", end) if end is not None else now
    if start is not None:
        return parse_time("start", start), end_t
    try:
        return end_t - DEFAULT_SPAN, end_t
    except OverflowError:
        return _MIN_UTC, end_t


def check_sensor(sensor: str, parameter: str = "sensor") -> str:
    """The one sensor-id rule (``contracts.readings.SENSOR_ID_RE``): every id a door
    accepts is queryable, anything else is a 422 saying what an id looks like."""
    problem = sensor_id_problem(sensor)
    if problem:
        raise InvalidParameter(parameter, problem)
    return sensor


INTAKE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_intake_id(intake_id: str) -> str:
    if not INTAKE_ID_RE.match(intake_id):
        raise InvalidParameter("intake_id", f"expected a uuid such as "
                                            f"0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b; got "
                                            f"{_shown(intake_id)}")
    return intake_id


def range_query(sensor: str, start: datetime, end: datetime, bucket: str | None,
                agg: str, fill: str, limit: int) -> RangeQuery:
    """Check a range request as a whole (span, bucket count, whitelists)."""
    check_sensor(sensor)
    if end <= start:
        raise InvalidParameter("end", f"must be after start ({iso_utc(start)}); "
                                      f"got {iso_utc(end)}")
    if end - start > MAX_SPAN:
        raise InvalidParameter("end", f"span end - start must be at most "
                                      f"{MAX_SPAN.days} days; got {(end - start).days} days")
    if agg not in AGGS:
        raise InvalidParameter("agg", f"expected one of {', '.join(AGGS)}; got {_shown(agg)}")
    if fill not in FILLS:
        raise InvalidParameter("fill", f"expected one of {', '.join(FILLS)}; got {_shown(fill)}")
    parsed = parse_bucket(bucket) if bucket else None
    if parsed:
        n = math.ceil((end - start).total_seconds() / parsed.seconds)
        if n > MAX_BUCKETS:
            raise InvalidParameter("bucket", f"{bucket} over {(end - start)} gives {n} "
                                             f"buckets; at most {MAX_BUCKETS}: use a larger "
                                             f"bucket or a shorter range")
    return RangeQuery(sensor, start, end, parsed, agg, fill, limit)


# ---------------------------------------------------------------- SQL


def sensors_sql() -> str:
    return (f"SELECT sensor, last(unit) AS unit, min(ts) AS first_ts, max(ts) AS last_ts, "
            f"count() AS n FROM {TABLE} WHERE tenant = $1 GROUP BY sensor ORDER BY sensor")


def latest_sql(n_sensors: int) -> str:
    """Latest row per sensor of tenant $1; restricted to sensors $2..$(n+1) if n > 0."""
    where = "tenant = $1"
    if n_sensors:
        where += " AND sensor IN (" + ", ".join(f"${i + 2}" for i in range(n_sensors)) + ")"
    return (f"SELECT sensor, ts, value, unit, quality FROM {TABLE} WHERE {where} "
            f"LATEST ON ts PARTITION BY sensor")


def readings_sql(q: RangeQuery) -> str:
    """$1 tenant, $2 sensor, $3 start, $4 end (exclusive); raw queries: $5 limit."""
    where = "tenant = $1 AND sensor = $2 AND ts >= $3 AND ts < $4"
    if q.bucket is None:
        return f"SELECT ts, value FROM {TABLE} WHERE {where} ORDER BY ts LIMIT $5"
    assert q.agg in AGGS and q.fill in FILLS
    return (f"SELECT ts, {q.agg}(value) AS value FROM {TABLE} WHERE {where} "
            f"SAMPLE BY {q.bucket.sql} FROM $3 TO $4 FILL({q.fill.upper()})")


def readings_args(tenant: str, q: RangeQuery, limit: int | None = None) -> tuple:
    args = (tenant, q.sensor, naive_utc(q.start), naive_utc(q.end))
    return args if q.bucket else (*args, q.limit if limit is None else limit)


INTAKES_SQL = (
    "SELECT ts, intake_id, status, source, filename, rows_received, rows_accepted, "
    "rows_rejected, values_received, values_accepted, values_rejected, values_missing, "
    f"reasons, detail, first_ts, last_ts FROM {LOG_TABLE} WHERE tenant = $1 "
    "ORDER BY ts DESC LIMIT $2")
INTAKE_EXISTS_SQL = f"SELECT count() AS n FROM {LOG_TABLE} WHERE tenant = $1 AND intake_id = $2"
REJECTIONS_SQL = (f"SELECT reason, sensor, row, count, raw, detail FROM {REJECTED_TABLE} "
                  "WHERE tenant = $1 AND intake_id = $2 ORDER BY row LIMIT $3")


# ---------------------------------------------------------------- running them


async def list_sensors(db, tenant: str) -> list[dict]:
    """Sensors of ``tenant``: unit, first/last timestamp, number of readings."""
    rows = await fetch_or_empty(db, sensors_sql(), tenant)
    return [{"sensor": r["sensor"], "unit": r["unit"], "first_ts": iso_utc(r["first_ts"]),
             "last_ts": iso_utc(r["last_ts"]), "count": r["n"]} for r in rows]


async def latest(db, tenant: str, sensors: Iterable[str] = ()) -> list[dict]:
    """Latest reading per sensor (all of the tenant's when ``sensors`` is empty)."""
    sensors = list(dict.fromkeys(sensors))
    rows = await fetch_or_empty(db, latest_sql(len(sensors)), tenant, *sensors)
    out = [{"sensor": r["sensor"], "ts": iso_utc(r["ts"]), "value": r["value"],
            "unit": r["unit"], "quality": r["quality"]} for r in rows]
    return sorted(out, key=lambda r: r["sensor"])


async def readings(db, tenant: str, q: RangeQuery) -> tuple[list[dict], bool]:
    """(points, truncated): ``[{"ts", "value"}]``; truncated = a raw query hit ``limit``."""
    rows = await fetch_or_empty(db, readings_sql(q), *readings_args(tenant, q, q.limit + 1))
    truncated = q.bucket is None and len(rows) > q.limit
    rows = rows[:q.limit] if truncated else rows
    return [{"ts": iso_utc(r[0]), "value": r[1]} for r in rows], truncated


async def readings_pages(conn, tenant: str, q: RangeQuery,
                        page_rows: int = 10_000) -> AsyncIterator[list]:
    """Rows ``(ts, value)`` of ``q`` in pages of up to ``page_rows``.

    Raw queries read page by page on the timestamp (``ts`` is unique per tenant and
    sensor: the dedup key), so no cursor or transaction stays open between pages, and
    read ``q.limit + 1`` rows in all: one more than wanted says the limit cut the answer.
    Downsampled queries (at most ``MAX_BUCKETS`` rows) are read at once.
    """
    if q.bucket is not None:
        rows = await fetch_or_empty(conn, readings_sql(q), *readings_args(tenant, q))
        for i in range(0, len(rows), page_rows):
            yield rows[i:i + page_rows]
        return
    sql, wanted = readings_sql(q), q.limit + 1
    start, end = naive_utc(q.start), naive_utc(q.end)
    while wanted > 0:
        n = min(page_rows, wanted)
        rows = await fetch_or_empty(conn, sql, tenant, q.sensor, start, end, n)
        if rows:
            yield rows
        if len(rows) < n:
            return
        wanted -= n
        start = rows[-1][0] + timedelta(microseconds=1)  # QuestDB's resolution


def csv_lines(rows) -> str:
    """``<ts>,<value>`` lines: the JSON answer's timestamps and numbers, null -> empty."""
    return "".join(f"{iso_utc(r[0])},{_csv_value(r[1])}\n" for r in rows)


async def intakes(db, tenant: str, limit: int) -> list[dict]:
    """The tenant's latest uploads, newest first, with their accounting."""
    out = []
    for r in await fetch_or_empty(db, INTAKES_SQL, tenant, limit):
        item = dict(r)
        for k in ("ts", "first_ts", "last_ts"):
            item[k] = iso_utc(item[k])
        item["received_at"] = item.pop("ts")
        item["reasons"] = json.loads(item["reasons"] or "{}")
        out.append(item)
    return out


async def intake_exists(db, tenant: str, intake_id: str) -> bool:
    rows = await fetch_or_empty(db, INTAKE_EXISTS_SQL, tenant, intake_id)
    return bool(rows and rows[0]["n"])


async def intake_rejections(db, tenant: str, intake_id: str, limit: int) -> list[dict]:
    """Rejected and missing items of one upload: reason, sensor, file row, raw text."""
    return [dict(r) for r in await fetch_or_empty(db, REJECTIONS_SQL, tenant, intake_id,
                                                   limit)]


async def fetch_or_empty(db, sql: str, *args) -> list:
    """Rows of ``sql``; none when the table does not exist yet (fresh install)."""
    try:
        return await db.fetch(sql, *args)
    except Exception as e:  # asyncpg maps QuestDB errors to UnknownPostgresError
        if "table does not exist" in str(e):
            return []
        raise


# ---------------------------------------------------------------- formatting


def iso_utc(t: datetime | None) -> str | None:
    """Naive UTC (as asyncpg returns it) or aware -> ``2024-05-01T00:15:00Z``."""
    if t is None:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.isoformat() + "Z"


def naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


def _csv_value(v) -> str:
    """Same number as the JSON export: shortest round-trip repr; null -> empty."""
    return "" if v is None else repr(v)


def _shown(text: str, limit: int = 60) -> str:
    """A caller's text quoted for an error message, cut at ``limit`` characters."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


# ---------------------------------------------------------------- weather forecasts

# the designated timestamp is issued_at: the newest issue at or before $3 is a backward scan
WEATHER_LAST_ISSUE_SQL = (f"SELECT issued_at FROM {WEATHER_TABLE} WHERE tenant = $1 "
                          "AND location = $2 AND issued_at <= $3 ORDER BY issued_at DESC LIMIT 1")
WEATHER_ROWS_SQL = (f"SELECT valid_at, variable, value, unit, event_id FROM {WEATHER_TABLE} "
                    "WHERE tenant = $1 AND location = $2 AND issued_at = $3 "
                    "ORDER BY valid_at, variable")


async def weather_forecast_rows(db, tenant: str, location: str, as_of: datetime
                                ) -> tuple[datetime, list] | None:
    """(issue time, naive UTC; rows ``valid_at, variable, value, unit, event_id``) of the
    latest weather forecast for ``location`` issued at or before ``as_of`` (aware), never a
    later one; None if there is none.  ``projections.weather.forecast_as_of`` shapes it."""
    check_sensor(location, "location")  # a location is named by the sensor-id rule
    rows = await fetch_or_empty(db, WEATHER_LAST_ISSUE_SQL, tenant, location,
                                 naive_utc(as_of))
    if not rows:
        return None
    issued = rows[0]["issued_at"]
    return issued, await fetch_or_empty(db, WEATHER_ROWS_SQL, tenant, location, issued)


# ---------------------------------------------------------------- tasks

TASK_ROWS_SQL = (f"SELECT task_id, kind, state, ts, requested_by, message, attempt, fraction, "
                 f"duration_s, queued_s FROM {TASKS_TABLE} WHERE tenant = $1 "
                 f"ORDER BY ts DESC LIMIT $2")
TASK_SQL = (f"SELECT task_id, kind, state, ts, requested_by, schedule, slot, message, attempt, "
            f"fraction, duration_s, queued_s, retryable, outputs, params FROM {TASKS_TABLE} "
            f"WHERE tenant = $1 AND task_id = $2 ORDER BY ts")
WAITING_SQL = (f"SELECT tenant, kind, task_id, state FROM {TASKS_TABLE} "
               f"WHERE ts > dateadd('d', -7, now())")


def check_task_id(task_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f-]{36}", task_id or ""):
        raise InvalidParameter("task_id", f"expected a task id (a UUID), got {_shown(task_id)}")
    return task_id


async def tasks(db, tenant: str, *, limit: int = 50, kind: str | None = None,
                state: str | None = None) -> list[dict]:
    """The tenant's latest tasks, each with its current state: the last transition
    (``started``/``progressed`` read as ``running``), when and by whom it was requested,
    and the latest message (progress, failure reason)."""
    rows = await fetch_or_empty(db, TASK_ROWS_SQL, tenant, min(limit * 20, 100_000))
    by_task: dict[str, dict] = {}
    for r in reversed(rows):  # oldest first: the last transition is the state
        t = by_task.setdefault(r["task_id"], {
            "task_id": r["task_id"], "kind": r["kind"], "state": "", "requested_at": None,
            "requested_by": "", "detail": "", "fraction": None, "duration_s": None})
        t["updated_at"] = iso_utc(r["ts"])
        if r["state"] == "requested":
            t["requested_at"], t["requested_by"] = iso_utc(r["ts"]), r["requested_by"]
        if r["fraction"] is not None and not math.isnan(r["fraction"]):
            t["fraction"] = r["fraction"]
        if r["duration_s"] is not None and not math.isnan(r["duration_s"]):
            t["duration_s"] = r["duration_s"]
        if r["message"]:
            t["detail"] = r["message"]
        if r["state"] != "progressed":
            t["state"] = {"started": "running"}.get(r["state"], r["state"])
    out = [t for t in by_task.values() if (not kind or t["kind"] == kind)
           and (not state or t["state"] == state)]
    return sorted(out, key=lambda t: t["updated_at"], reverse=True)[:limit]


async def task(db, tenant: str, task_id: str) -> list[dict]:
    """Every transition of one task, oldest first."""
    rows = await fetch_or_empty(db, TASK_SQL, tenant, check_task_id(task_id))
    return [{k: (iso_utc(v) if isinstance(v, datetime) else
                 None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in dict(r).items()} for r in rows]


async def tasks_waiting(db) -> list[tuple[str, str, int]]:
    """(tenant, kind, count) of tasks requested and not started, over every tenant."""
    last: dict[str, tuple[str, str, str]] = {}
    for r in await fetch_or_empty(db, WAITING_SQL):
        if r["state"] != "progressed":
            last[r["task_id"]] = (r["tenant"], r["kind"], r["state"])
    counts: dict[tuple[str, str], int] = {}
    for tenant, kind, state in last.values():
        if state in ("requested", "cancel_requested"):
            counts[(tenant, kind)] = counts.get((tenant, kind), 0) + 1
    return sorted((t, k, n) for (t, k), n in counts.items())


# ---------------------------------------------------------------- task inputs (loaders)

HOURLY_SQL = (f"SELECT ts, avg(value) AS value FROM {TABLE} WHERE tenant = $1 AND sensor = $2 "
              f"AND ts >= $3 AND ts < $4 SAMPLE BY 1h ALIGN TO CALENDAR")


async def hourly_means(db, tenant: str, sensor: str, start: datetime, end: datetime
                       ) -> list[tuple[datetime, float]]:
    """(hour start UTC, mean value) of one sensor over [start, end); hours without a
    reading are absent."""
    rows = await fetch_or_empty(db, HOURLY_SQL, tenant, check_sensor(sensor),
                                 naive_utc(start), naive_utc(end))
    return [(r["ts"].replace(tzinfo=UTC), r["value"]) for r in rows]


# ---------------------------------------------------------------- forecasts

FORECAST_ISSUES_SQL = (f"SELECT DISTINCT series FROM {FORECASTS_TABLE} WHERE tenant = $1 "
                       f"ORDER BY series")
FORECAST_LAST_ISSUE_SQL = (f"SELECT max(issued_at) AS issued_at FROM {FORECASTS_TABLE} "
                           f"WHERE tenant = $1 AND series = $2 AND issued_at <= $3")
FORECAST_ROWS_SQL = (f"SELECT ts, p10, p25, p50, p75, p90, unit, method FROM {FORECASTS_TABLE} "
                     f"WHERE tenant = $1 AND series = $2 AND issued_at = $3 ORDER BY ts")


def check_series(series: str) -> str:
    if not re.fullmatch(r"(zone|pv):[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", series or ""):
        raise InvalidParameter("series", f"expected zone:<name> or pv:<name>, got "
                                         f"{_shown(series)}")
    return series


async def forecast_series(db, tenant: str) -> list[str]:
    return [r["series"] for r in await fetch_or_empty(db, FORECAST_ISSUES_SQL, tenant)]


async def forecast(db, tenant: str, series: str, as_of: datetime) -> tuple[datetime | None,
                                                                          list[dict]]:
    """(issue time, rows) of the latest forecast of ``series`` issued at or before
    ``as_of``; (None, []) if there is none."""
    rows = await fetch_or_empty(db, FORECAST_LAST_ISSUE_SQL, tenant, check_series(series),
                                 naive_utc(as_of))
    issued = rows[0]["issued_at"] if rows else None
    if issued is None:
        return None, []
    out = await fetch_or_empty(db, FORECAST_ROWS_SQL, tenant, series, issued)
    return issued.replace(tzinfo=UTC), [
        {"valid_at": iso_utc(r["ts"]), **{q: r[q] for q in ("p10", "p25", "p50", "p75", "p90")},
         "unit": r["unit"], "method": r["method"]} for r in out]


# ---------------------------------------------------------------- KPIs

KPIS_SQL = (f"SELECT day, name, subject, value, unit, detail FROM {KPIS_TABLE} "
            f"WHERE tenant = $1 AND ts >= $2 AND ts < $3 ORDER BY ts, name, subject")
KPI_DAYS_SQL = f"SELECT DISTINCT day FROM {KPIS_TABLE} WHERE tenant = $1 ORDER BY day DESC LIMIT $2"


def check_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidParameter("day", f"expected YYYY-MM-DD, got {_shown(text)}") from None


async def kpis(db, tenant: str, first: date, last: date) -> list[dict]:
    """The tenant's KPIs of the days ``first``..``last`` (inclusive)."""
    start = datetime.combine(first, datetime.min.time())
    end = datetime.combine(last, datetime.min.time()) + timedelta(days=1)
    rows = await fetch_or_empty(db, KPIS_SQL, tenant, start, end)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in dict(r).items()} for r in rows]


async def kpi_days(db, tenant: str, limit: int = 31) -> list[str]:
    return [r["day"] for r in await fetch_or_empty(db, KPI_DAYS_SQL, tenant, limit)]


VALUE_AT_SQL = (f"SELECT ts, value FROM {TABLE} WHERE tenant = $1 AND sensor = $2 AND ts <= $3 "
                f"ORDER BY ts DESC LIMIT 1")


async def value_at(db, tenant: str, sensor: str, at: datetime) -> tuple[datetime, float] | None:
    """The sensor's last reading at or before ``at`` (UTC), or None."""
    rows = await fetch_or_empty(db, VALUE_AT_SQL, tenant, check_sensor(sensor), naive_utc(at))
    return (rows[0]["ts"].replace(tzinfo=UTC), rows[0]["value"]) if rows else None
