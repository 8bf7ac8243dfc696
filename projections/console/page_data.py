"""``/data``: the sensor explorer (range, downsampling, CSV export), the uploads with
their accounting and rejections, and a file dropped onto the page, ingested."""

from __future__ import annotations

import mimetypes
from datetime import timedelta
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Query, Request

from bus import config_log
from contracts.base import utc_now
from contracts.config import MAPPING_PREFIX
from contracts.errors import TenantConfigError
from projections.api import queries, routes_readings
from projections.api.errors import InvalidParameter, json_response
from projections.console import figures, web
from projections.console.session import Operator, check_csrf, operator, require

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
NICE_BUCKETS = ("1m", "5m", "15m", "1h", "6h", "1d")
MAX_POINTS = 2000
MAX_UPLOAD_BYTES = 200 * 2**20


def auto_bucket(span: timedelta) -> str | None:
    """Raw readings up to two days; past that the smallest bucket giving at most
    ``MAX_POINTS`` points."""
    if span <= timedelta(days=2):
        return None
    for b in NICE_BUCKETS:
        if span.total_seconds() / queries.parse_bucket(b).seconds <= MAX_POINTS:
            return b
    return "1d"


def _range(sensor_row: dict | None, start: str | None, end: str | None):
    """[start, end): as asked, else the day before the sensor's last reading (now at
    most), so a sensor of history still shows its data."""
    now = utc_now()
    if end:
        end_t = queries.parse_time("end", end)
    else:
        last = web.parse_iso(sensor_row["last_ts"]) if sensor_row else None
        end_t = (min(now, last) if last else now).replace(second=0, microsecond=0) \
            + timedelta(minutes=1)
    start_t = queries.parse_time("start", start) if start else end_t - timedelta(days=1)
    return start_t, end_t


async def _mappings(request: Request, tenant: str) -> list[str]:
    store = getattr(request.app.state, "config_store", None)
    if store is None:
        return []
    kinds = await config_log.kinds(store.js, tenant)
    return sorted(k.removeprefix(MAPPING_PREFIX) for k in kinds if k.startswith(MAPPING_PREFIX))


@router.get("/data")
async def data(request: Request, who: Operator = Depends(operator),
               sensor: str | None = Query(None, max_length=128),
               start: str | None = Query(None, max_length=40),
               end: str | None = Query(None, max_length=40),
               bucket: str | None = Query(None, max_length=12),
               agg: str = Query("avg", max_length=8),
               intake: str | None = Query(None, max_length=40)):
    tenant = who.tenant
    facts = await web.tenant_facts(request, tenant)
    rejections = None
    async with request.app.state.db.session(tenant) as conn:
        sensors = await queries.list_sensors(conn, tenant)
        uploads = await queries.intakes(conn, tenant, 50)
        if intake:
            queries.check_intake_id(intake)
            rejections = await queries.intake_rejections(conn, tenant, intake, 500)
        if web.fragment(request):
            return await web.render(request, who, "data_uploads.html", facts=facts,
                                    uploads=uploads, intake=intake, rejections=rejections)
        chosen = sensor or (sensors[0]["sensor"] if sensors else None)
        explorer = None
        if chosen:
            row = next((s for s in sensors if s["sensor"] == chosen), None)
            start_t, end_t = _range(row, start, end)
            b = bucket if bucket is not None else auto_bucket(end_t - start_t)
            q = queries.range_query(chosen, start_t, end_t, b or None, agg, "none", 10_000)
            unit = await request.app.state.units.unit(conn, tenant, chosen)
            points, truncated = await queries.readings(conn, tenant, q)
            explorer = {"sensor": chosen, "unit": unit, "start": queries.iso_utc(start_t),
                        "end": queries.iso_utc(end_t), "bucket": b or "", "agg": agg,
                        "points": points, "truncated": truncated,
                        "figure": figures.to_json(figures.series(points, facts["zone"],
                                                                 chosen, unit))}
    return await web.render(
        request, who, "data.html", page="data", facts=facts, sensors=sensors,
        explorer=explorer, uploads=uploads, intake=intake, rejections=rejections,
        mappings=await _mappings(request, tenant), aggs=queries.AGGS,
        buckets=("",) + NICE_BUCKETS,
        can_upload=who.can("write") and getattr(request.app.state, "intake", None) is not None)


@router.get("/data/export")
async def export(request: Request, who: Operator = Depends(operator),
                 sensor: str = Query(..., max_length=128), start: str = Query(..., max_length=40),
                 end: str = Query(..., max_length=40), bucket: str | None = Query(None, max_length=12),
                 agg: str = Query("avg", max_length=8)):
    """The API's CSV export of the explorer's range (ends with ``# end: N rows``)."""
    if agg not in queries.AGGS:
        raise InvalidParameter("agg", f"expected one of {', '.join(queries.AGGS)}")
    return await routes_readings.sensor_readings(
        request, sensor=sensor, tenant=who.tenant, start=start, end=end,
        bucket=bucket or None, agg=agg, fill="none", format="csv",
        limit=routes_readings.MAX_CSV_ROWS)


@router.post("/data/upload")
async def upload(request: Request, who: Operator = Depends(operator),
                 mapping: str = Query(..., min_length=1, max_length=100)):
    """A file as the request body (``X-Filename``), parsed with the tenant's mapping
    ``mapping``: the intake's own ``submit`` (stored, then ``intake.received``)."""
    check_csrf(request, who, None)
    require(request, who, "write")
    intake = getattr(request.app.state, "intake", None)
    if intake is None:
        raise TenantConfigError("this API process takes no uploads (started without an "
                                "intake): use `tagus ingest` or the drop folder")
    if mapping not in await _mappings(request, who.tenant):
        raise InvalidParameter("mapping", f"tenant {who.tenant!r} has no mapping {mapping!r}")
    filename = unquote(request.headers.get("x-filename", "upload"))[:200] or "upload"
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise InvalidParameter("body", f"larger than {MAX_UPLOAD_BYTES // 2**20} MiB: "
                                           "use `tagus ingest` or the drop folder")
    if not body:
        raise InvalidParameter("body", "the file is empty")
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    event = await intake.submit(tenant=who.tenant, source="console", content_type=content_type,
                                body=bytes(body), filename=filename, mapping_id=mapping)
    return json_response({"intake_id": event.event_id, "message": (
        f"Received {filename} ({len(body):,} bytes) as upload {event.event_id}: its "
        "accounting appears under Uploads once it is parsed.")}, 202)
