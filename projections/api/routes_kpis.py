"""``/v1/kpis``: the tenant's daily KPIs (energy, cost, savings, completeness...)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Query, Request

from projections.api import queries
from projections.api.auth import reader_tenant
from projections.api.errors import InvalidParameter, json_response
from projections.api.models import ERRORS

router = APIRouter(prefix="/v1/kpis", responses=ERRORS)


@router.get("", summary="KPIs per day: ?day=YYYY-MM-DD, or ?start=&end= (31 days at most); "
                        "default the latest day computed")
async def kpis(request: Request, tenant: str = Depends(reader_tenant),
               day: str | None = Query(None), start: str | None = Query(None),
               end: str | None = Query(None)):
    async with request.app.state.db.session(tenant) as conn:
        if day:
            first = last = queries.check_day(day)
        elif start or end:
            first = queries.check_day(start or end)
            last = queries.check_day(end or start)
            if last < first or last - first > timedelta(days=31):
                raise InvalidParameter("end", "expected start <= end, at most 31 days apart")
        else:
            days = await queries.kpi_days(conn, tenant, 1)
            if not days:
                return json_response({"tenant": tenant, "kpis": []})
            first = last = queries.check_day(days[0])
        rows = await queries.kpis(conn, tenant, first, last)
    return json_response({"tenant": tenant, "first": first.isoformat(),
                          "last": last.isoformat(), "kpis": rows})
