"""``/v1/forecasts``: the latest forecast of each series (or as of an issue time), joined
with what was measured.

``GET /v1/forecasts`` lists the tenant's series; ``GET /v1/forecasts/{series}`` returns
the forecast issued last at or before ``as_of`` (default now): per valid hour p10..p90
and, where measured, ``actual`` (the hourly mean of the zone's bound inflow sensors,
summed; same unit).  Read scope.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.errors import NotFoundError
from projections.api import queries
from projections.api.auth import reader_tenant
from projections.api.errors import json_response
from projections.api.models import ERRORS

router = APIRouter(prefix="/v1/forecasts", responses=ERRORS)


@router.get("", summary="The tenant's forecast series")
async def series(request: Request, tenant: str = Depends(reader_tenant)):
    async with request.app.state.db.session(tenant) as conn:
        names = await queries.forecast_series(conn, tenant)
    return json_response({"tenant": tenant, "series": names})


@router.get("/{series}", summary="The latest forecast issued at or before as_of, with "
                                 "actuals")
async def forecast(request: Request, series: str = PathParam(),
                   as_of: str | None = Query(None, description="ISO time (default now)"),
                   tenant: str = Depends(reader_tenant)):
    queries.check_series(series)
    at = queries.parse_time("as_of", as_of) if as_of else datetime.now(UTC)
    sensors = await _sensors_of(request, tenant, series)
    async with request.app.state.db.session(tenant) as conn:
        issued, rows = await queries.forecast(conn, tenant, series, at)
        if issued is None:
            raise NotFoundError(f"no forecast of {series!r} issued at or before "
                                f"{queries.iso_utc(at)} for tenant {tenant!r}")
        start = datetime.fromisoformat(rows[0]["valid_at"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(rows[-1]["valid_at"].replace("Z", "+00:00")) \
            + timedelta(hours=1)
        actual: dict[str, float] = {}
        if sensors:
            parts = [dict(await queries.hourly_means(conn, tenant, s, start, end))
                     for s in sensors]
            for t in parts[0]:
                values = [p.get(t) for p in parts]
                if all(v is not None and math.isfinite(v) for v in values):
                    actual[queries.iso_utc(t)] = sum(values)
    for row in rows:
        row["actual"] = actual.get(row["valid_at"])
    return json_response({"tenant": tenant, "series": series,
                          "issued_at": queries.iso_utc(issued), "sensors": sensors,
                          "points": rows})


async def _sensors_of(request: Request, tenant: str, series: str) -> list[str]:
    store = getattr(request.app.state, "config_store", None)
    if store is None or not series.startswith("zone:"):
        return []
    assets = await store.document(tenant, "assets")
    zone = series.removeprefix("zone:")
    return sorted(b.sensor for b in (assets.bindings if assets else ())
                  if b.role == "zone_inflow" and b.element == zone)
