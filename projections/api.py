"""The operators' query API: sensors, latest values and ranges from QuestDB, per tenant.

Every ``/v1`` route needs a token with the ``read`` scope (``Authorization: Bearer <token>``
or ``X-API-Key: <token>``); the tenant is the token's, never a parameter.  Open-source
QuestDB has no per-table permissions, so this layer is the tenant boundary: each query
binds the token's tenant as ``$1`` (see ``projections/queries.py``).

Errors are JSON ``{"error", "detail"}`` (+ ``"parameter"`` on 422): 401 no token,
403 unknown token or missing scope, 404 unknown sensor for the tenant, 422 bad
parameter, 503 QuestDB unreachable.  OpenAPI docs at ``/docs``.

``create_app(settings)`` does no I/O; the pool opens in the lifespan and the token file
is re-read whenever it changes.  ``serve(settings)`` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import asyncpg
import msgspec
import structlog
from fastapi import APIRouter, Depends, FastAPI, Path as PathParam, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.errors import ForbiddenError, NotFoundError, TenantConfigError
from bus.tokens import TokenFile
from ops.settings import Settings
from projections import queries
from projections.queries import InvalidParameter

log = structlog.get_logger("tagus.api")

POOL_MAX = 8
QUERY_TIMEOUT_S = 30.0
MAX_JSON_ROWS = 100_000
MAX_CSV_ROWS = 1_000_000
DEFAULT_SPAN = timedelta(days=1)


class Unauthenticated(ForbiddenError):
    """No token at all (401, unlike a wrong token: 403)."""


# ---------------------------------------------------------------- response models (docs)


class ErrorOut(BaseModel):
    error: str
    detail: str
    parameter: str | None = None


class SensorOut(BaseModel):
    sensor: str
    unit: str
    first_ts: datetime
    last_ts: datetime
    count: int


class SensorsOut(BaseModel):
    tenant: str
    sensors: list[SensorOut]


class ReadingOut(BaseModel):
    sensor: str
    ts: datetime
    value: float | None
    unit: str
    quality: int


class LatestOut(BaseModel):
    tenant: str
    readings: list[ReadingOut]


class PointOut(BaseModel):
    ts: datetime
    value: float | None


class ReadingsOut(BaseModel):
    tenant: str
    sensor: str
    unit: str
    start: datetime
    end: datetime
    bucket: str | None
    agg: str | None
    fill: str | None
    truncated: bool
    points: list[PointOut]


_ERRORS = {s: {"model": ErrorOut} for s in (401, 403, 404, 422, 503)}


# ---------------------------------------------------------------- auth


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def reader_tenant(request: Request,
                  bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
                  api_key: str | None = Security(_api_key)) -> str:
    """The tenant of the caller's token, which must grant ``read``."""
    token = bearer.credentials if bearer else api_key
    if not token:
        raise Unauthenticated("send the tenant's token as 'Authorization: Bearer <token>' "
                              "or 'X-API-Key: <token>'")
    record = request.app.state.tokens.authenticate(token, "read")
    request.state.tenant = record.tenant
    return record.tenant


# ---------------------------------------------------------------- routes

router = APIRouter(prefix="/v1", responses=_ERRORS)
Sensor = Annotated[str, PathParam(description="Sensor id, as in GET /v1/sensors")]


def _json(obj, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


async def _sensor_latest(pool, tenant: str, sensor: str) -> dict:
    queries.check_sensor(sensor)
    rows = await queries.latest(pool, tenant, [sensor])
    if not rows:
        raise NotFoundError(f"no sensor {sensor!r} for tenant {tenant!r}; "
                            "GET /v1/sensors lists them")
    return rows[0]


class _UnitCache:
    """(tenant, sensor) -> unit of sensors seen to exist, for ``ttl_s``: a range query then
    needs one QuestDB round trip, not two.  Only hits are kept (a new sensor shows up at
    once); sensors are never deleted, so a hit stays true."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._units: dict[tuple[str, str], tuple[str, float]] = {}

    async def unit(self, pool, tenant: str, sensor: str) -> str:
        hit = self._units.get((tenant, sensor))
        if hit and hit[1] > time.monotonic():
            return hit[0]
        unit = (await _sensor_latest(pool, tenant, sensor))["unit"]
        if len(self._units) >= self.max_entries:
            self._units.clear()
        self._units[(tenant, sensor)] = (unit, time.monotonic() + self.ttl_s)
        return unit


@router.get("/sensors", response_model=SensorsOut, summary="The tenant's sensors")
async def sensors(request: Request, tenant: str = Depends(reader_tenant)):
    """Each sensor with its unit (SI), first/last timestamp (UTC) and number of readings."""
    rows = await queries.list_sensors(request.app.state.pool, tenant)
    return _json({"tenant": tenant, "sensors": rows})


@router.get("/sensors/{sensor}/latest", response_model=ReadingOut,
            summary="A sensor's latest reading")
async def sensor_latest(request: Request, sensor: Sensor,
                        tenant: str = Depends(reader_tenant)):
    return _json(await _sensor_latest(request.app.state.pool, tenant, sensor))


@router.get("/latest", response_model=LatestOut, summary="Latest reading of several sensors")
async def latest(request: Request, tenant: str = Depends(reader_tenant),
                 sensor: list[str] = Query(default=[], description=(
                     "Repeat for several; none = every sensor of the tenant. "
                     "Any unknown sensor -> 404 naming it."))):
    if len(sensor) > queries.MAX_SENSORS_PER_QUERY:
        raise InvalidParameter("sensor", f"at most {queries.MAX_SENSORS_PER_QUERY} sensors "
                                         f"a request; got {len(sensor)}")
    for s in sensor:
        queries.check_sensor(s)
    rows = await queries.latest(request.app.state.pool, tenant, sensor)
    unknown = sorted(set(sensor) - {r["sensor"] for r in rows})
    if unknown:
        raise NotFoundError(f"no sensor(s) {', '.join(map(repr, unknown))} for tenant "
                            f"{tenant!r}; GET /v1/sensors lists them")
    return _json({"tenant": tenant, "readings": rows})


@router.get("/sensors/{sensor}/readings", response_model=ReadingsOut,
            responses={200: {"content": {"text/csv": {}}}},
            summary="A sensor's readings in [start, end), raw or downsampled")
async def sensor_readings(
    request: Request,
    sensor: Sensor,
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
    format: Literal["json", "csv"] = Query("json", description="csv: streamed, header ts,value"),
    limit: int = Query(10_000, ge=1, le=MAX_CSV_ROWS,
                       description=f"Raw queries: at most this many rows (json <= "
                                   f"{MAX_JSON_ROWS}); JSON says truncated=true past it"),
):
    """Values are in the sensor's SI unit; timestamps UTC.  Span at most 400 days."""
    end_t = queries.parse_time("end", end) if end else datetime.now(UTC)
    start_t = queries.parse_time("start", start) if start else end_t - DEFAULT_SPAN
    if format == "json" and limit > MAX_JSON_ROWS:
        raise InvalidParameter("limit", f"at most {MAX_JSON_ROWS} for json (use format=csv "
                                        f"for up to {MAX_CSV_ROWS}); got {limit}")
    q = queries.range_query(sensor, start_t, end_t, bucket, agg, fill, limit)
    pool = request.app.state.pool
    unit = await request.app.state.units.unit(pool, tenant, sensor)  # 404 before streaming
    if format == "csv":
        name = re.sub(r"[^A-Za-z0-9._-]", "_", sensor)
        stamp = f"{start_t:%Y%m%dT%H%M%SZ}-{end_t:%Y%m%dT%H%M%SZ}"
        return StreamingResponse(
            queries.readings_csv(pool, tenant, q), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}_{stamp}.csv"'})
    points, truncated = await queries.readings(pool, tenant, q)
    raw = q.bucket is None
    return _json({
        "tenant": tenant, "sensor": sensor, "unit": unit,
        "start": queries.iso_utc(start_t), "end": queries.iso_utc(end_t),
        "bucket": None if raw else q.bucket.sql, "agg": None if raw else agg,
        "fill": None if raw else fill, "truncated": truncated, "points": points,
    })


@router.get("/intakes", summary="The tenant's latest uploads and what each gave")
async def intakes(request: Request, tenant: str = Depends(reader_tenant),
                  limit: int = Query(50, ge=1, le=1000)):
    """Per upload: status (parsed / failed), rows and values received, accepted, rejected
    and missing (received = accepted + rejected + missing), reasons with counts."""
    return _json({"tenant": tenant,
                  "intakes": await queries.intakes(request.app.state.pool, tenant, limit)})


@router.get("/intakes/{intake_id}/rejections",
            summary="What one upload did not accept, and why")
async def intake_rejections(request: Request, intake_id: str,
                            tenant: str = Depends(reader_tenant),
                            limit: int = Query(1000, ge=1, le=100_000)):
    queries.check_intake_id(intake_id)
    pool = request.app.state.pool
    if not await queries.intake_exists(pool, tenant, intake_id):
        raise NotFoundError(f"no upload {intake_id} for tenant {tenant!r}; "
                            "GET /v1/intakes lists them")
    rows = await queries.intake_rejections(pool, tenant, intake_id, limit)
    return _json({"tenant": tenant, "intake_id": intake_id, "rejections": rows})


# ---------------------------------------------------------------- errors


def _error(status: int, error: str, detail: str, parameter: str | None = None,
           headers: dict | None = None) -> Response:
    body = {"error": error, "detail": detail}
    if parameter:
        body["parameter"] = parameter
    resp = _json(body, status)
    resp.headers.update(headers or {})
    return resp


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Unauthenticated)
    async def _401(_, e):
        return _error(401, "unauthenticated", str(e), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ForbiddenError)
    async def _403(_, e):
        return _error(403, "forbidden", str(e))

    @app.exception_handler(NotFoundError)
    async def _404(_, e):
        return _error(404, "not found", str(e))

    @app.exception_handler(InvalidParameter)
    async def _422(_, e):
        return _error(422, "invalid parameter", e.message, e.parameter)

    @app.exception_handler(RequestValidationError)
    async def _422_fastapi(_, e):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ())]
        return _error(422, "invalid parameter", str(first.get("msg", e)),
                      loc[-1] if loc else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, e):
        words = {404: "not found", 405: "method not allowed"}
        return _error(e.status_code, words.get(e.status_code, "error"), str(e.detail))

    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    @app.exception_handler(asyncpg.InterfaceError)
    async def _503(request, e):
        log.warning("questdb unavailable", path=request.url.path, error=str(e))
        return _error(503, "unavailable", "QuestDB did not answer; retry later")

    @app.exception_handler(TenantConfigError)
    async def _500_config(request, e):
        log.error("token file unusable", path=request.url.path, error=str(e))
        return _error(500, "misconfigured", "the API's token file is invalid; see its log")

    @app.exception_handler(asyncpg.PostgresError)
    async def _500(request, e):
        log.error("query failed", path=request.url.path, error=str(e))
        return _error(500, "query failed", "QuestDB rejected the query; see the API's log")


# ---------------------------------------------------------------- app


class _RequestLog:
    """ASGI middleware: one log line per request (method, path, status, ms, tenant)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500

        async def _send(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     ms=round((time.perf_counter() - t0) * 1e3, 2),
                     tenant=scope.get("state", {}).get("tenant"))


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """On release to the pool: end a transaction left open (a CSV stream cut short).

    Replaces asyncpg's default reset, which sends PostgreSQL session-cleanup SQL
    (advisory locks, LISTEN, RESET ALL) that QuestDB has no use for: one round trip
    less per query.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def open_pool(settings: Settings, max_size: int = POOL_MAX) -> asyncpg.Pool:
    """PG-wire connections to QuestDB, opened on demand (the API starts without QuestDB)."""
    return await asyncpg.create_pool(
        host=settings.questdb_host, port=settings.questdb_pg_port,
        user=settings.questdb_user, password=settings.questdb_password, database="qdb",
        min_size=0, max_size=max_size, command_timeout=QUERY_TIMEOUT_S,
        reset=_reset_connection)


def create_app(settings: Settings, *, pool_max: int = POOL_MAX) -> FastAPI:
    """The ASGI app.  No I/O here: the QuestDB pool opens when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pool = await open_pool(settings, pool_max)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="Tagus query API", version="1",
                  description=__doc__.split("\n\n")[0], lifespan=lifespan)
    app.state.tokens = TokenFile(settings.tokens_path)
    app.state.units = _UnitCache()
    app.include_router(router)
    _install_error_handlers(app)

    @app.get("/healthz", summary="Liveness and QuestDB reachability (no auth)")
    async def healthz(request: Request):
        try:
            await asyncio.wait_for(request.app.state.pool.fetchval("SELECT 1"), 2.0)
        except Exception as e:  # noqa: BLE001 - a probe: any failure means "not ready"
            log.warning("healthz: questdb unreachable", error=str(e))
            return _json({"status": "degraded", "questdb": False}, 503)
        return _json({"status": "ok", "questdb": True})

    app.add_middleware(_RequestLog)
    return app


def serve(settings: Settings) -> None:
    """Run the API under uvicorn at ``api_host:api_port`` until interrupted."""
    import uvicorn

    from ops.logs import configure_logging

    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                access_log=False, log_level=settings.log_level.lower())
