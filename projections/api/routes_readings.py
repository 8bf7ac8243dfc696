"""``/v1/sensors``, ``/v1/latest``, ``/v1/sensors/{sensor}/latest|readings``."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.errors import NotFoundError
from projections.api import export, queries
from projections.api.auth import reader_tenant
from projections.api.errors import InvalidParameter, json_response
from projections.api.models import ERRORS, LatestOut, ReadingOut, ReadingsOut, SensorsOut

MAX_JSON_ROWS = 100_000
MAX_CSV_ROWS = 1_000_000

router = APIRouter(prefix="/v1", responses=ERRORS)
SENSOR_DOC = ("Sensor id, as in GET /v1/sensors: a letter or digit, then letters, digits, "
              "'_', '.', ':' or '-', at most 128 characters")


async def _sensor_latest(conn, tenant: str, sensor: str) -> dict:
    rows = await queries.latest(conn, tenant, [sensor])
    if not rows:
        raise NotFoundError(f"no sensor {sensor!r} for tenant {tenant!r}; "
                            "GET /v1/sensors lists them")
    return rows[0]


class UnitCache:
    """(tenant, sensor) -> unit of sensors seen to exist, for ``ttl_s``: a range query then
    needs one QuestDB round trip, not two.  Only hits are kept (a new sensor shows up at
    once); sensors are never deleted, so a hit stays true."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._units: dict[tuple[str, str], tuple[str, float]] = {}

    async def unit(self, conn, tenant: str, sensor: str) -> str:
        hit = self._units.get((tenant, sensor))
        if hit and hit[1] > time.monotonic():
            return hit[0]
        unit = (await _sensor_latest(conn, tenant, sensor))["unit"]
        if len(self._units) >= self.max_entries:
            self._units.clear()
        self._units[(tenant, sensor)] = (unit, time.monotonic() + self.ttl_s)
        return unit


@router.get("/sensors", response_model=SensorsOut, summary="The tenant's sensors")
async def sensors(request: Request, tenant: str = Depends(reader_tenant)):
    """Each sensor with its unit (SI), first/last timestamp (UTC) and number of readings."""
    async with request.app.state.db.session(tenant) as conn:
        rows = await queries.list_sensors(conn, tenant)
    return json_response({"tenant": tenant, "sensors": rows})


@router.get("/sensors/{sensor}/latest", response_model=ReadingOut,
            summary="A sensor's latest reading")
async def sensor_latest(request: Request, sensor: str = PathParam(description=SENSOR_DOC),
                        tenant: str = Depends(reader_tenant)):
    queries.check_sensor(sensor)
    async with request.app.state.db.session(tenant) as conn:
        return json_response(await _sensor_latest(conn, tenant, sensor))


@router.get("/latest", response_model=LatestOut, summary="Latest reading of several sensors")
async def latest(request: Request, tenant: str = Depends(reader_tenant),
                 sensor: list[str] = Query(default=[], description=(
                     "Repeat for several (at most 100); none = every sensor of the tenant. "
                     "Any unknown sensor -> 404 naming it."))):
    if len(sensor) > queries.MAX_SENSORS_PER_QUERY:
        raise InvalidParameter("sensor", f"at most {queries.MAX_SENSORS_PER_QUERY} sensors "
                                         f"a request; got {len(sensor)}")
    for s in sensor:
        queries.check_sensor(s)
    async with request.app.state.db.session(tenant) as conn:
        rows = await queries.latest(conn, tenant, sensor)
    unknown = sorted(set(sensor) - {r["sensor"] for r in rows})
    if unknown:
        raise NotFoundError(f"no sensor(s) {', '.join(map(repr, unknown))} for tenant "
                            f"{tenant!r}; GET /v1/sensors lists them")
    return json_response({"tenant": tenant, "readings": rows})


@router.get("/sensors/{sensor}/readings", response_model=ReadingsOut,
            responses={200: {"content": {"text/csv": {}}}},
            summary="A sensor's readings in [start, end), raw or downsampled")
async def sensor_readings(
    request: Request,
    sensor: str = PathParam(description=SENSOR_DOC),
    tenant: str = Depends(reader_tenant),
    start: str | None = Query(None, description="ISO-8601 with zone, inclusive; "
                                                "default end - 1 day"),
    end: str | None = Query(None, description="ISO-8601 with zone, exclusive; default now"),
    bucket: str | None = Query(None, description="Downsample into buckets of this length, "
                                                 "aligned to start: 30s, 15m, 1h, 1d "
                                                 "(1s..31d); omit for raw readings"),
    agg: Literal["avg", "min", "max", "sum", "count", "first", "last"] = Query(
        "avg", description="Aggregate per bucket"),
    fill: Literal["none", "null", "prev", "linear"] = Query(
        "none", description="Empty buckets: none = left out, null = listed with null, "
                            "prev = previous bucket's value, linear = interpolated"),
    format: Literal["json", "csv"] = Query(
        "json", description="csv: header ts,value; complete only if the last line is "
                            "'# end: N rows' (see the API's description)"),
    limit: int = Query(10_000, ge=1, le=MAX_CSV_ROWS,
                       description=f"Raw queries: at most this many rows (json <= "
                                   f"{MAX_JSON_ROWS}); JSON says truncated=true past it"),
):
    """Values are in the sensor's SI unit; timestamps UTC.  Span at most 400 days."""
    start_t, end_t = queries.time_range(start, end, datetime.now(UTC))
    if format == "json" and limit > MAX_JSON_ROWS:
        raise InvalidParameter("limit", f"at most {MAX_JSON_ROWS} for json (use format=csv "
                                        f"for up to {MAX_CSV_ROWS}); got {limit}")
    q = queries.range_query(sensor, start_t, end_t, bucket, agg, fill, limit)
    state = request.app.state
    if format == "csv":
        return await _csv(request, tenant, q)
    async with state.db.session(tenant) as conn:
        unit = await state.units.unit(conn, tenant, sensor)
        points, truncated = await queries.readings(conn, tenant, q)
    raw = q.bucket is None
    return json_response({
        "tenant": tenant, "sensor": sensor, "unit": unit,
        "start": queries.iso_utc(start_t), "end": queries.iso_utc(end_t),
        "bucket": None if raw else q.bucket.sql, "agg": None if raw else agg,
        "fill": None if raw else fill, "truncated": truncated, "points": points,
    })


async def _csv(request: Request, tenant: str, q: queries.RangeQuery) -> export.SpooledCsv:
    """Query everything into a spool under the session, then stream it without one."""
    state = request.app.state
    release = state.limits.start_export(tenant)  # 429 past the tenant's exports
    try:
        async with state.db.session(tenant) as conn:
            await state.units.unit(conn, tenant, q.sensor)  # 404 before anything is sent
            spool = await export.spool_csv(conn, tenant, q, state.config.export_memory_bytes)
    except BaseException:
        release()
        raise
    return export.SpooledCsv(spool, _filename(q), on_close=release,
                             stall_timeout_s=state.config.export_stall_timeout_s)


def _filename(q: queries.RangeQuery) -> str:
    def stamp(t: datetime) -> str:
        return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"

    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', q.sensor)}_{stamp(q.start)}-{stamp(q.end)}.csv"
