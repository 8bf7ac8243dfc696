"""``/alerts``: open alerts, then those cleared within a week; acknowledging (operate)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.base import utc_now
from projections import alerts
from projections.api.routes_alerts import _jetstream, check_alert_id
from projections.console import web
from projections.console.session import Operator, check_csrf, operator, require

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)


@router.get("/alerts")
async def alert_list(request: Request, who: Operator = Depends(operator),
                     days: float = Query(7.0, gt=0, le=400)):
    async with request.app.state.db.session(who.tenant) as conn:
        rows = await alerts.list_alerts(conn, who.tenant, since=utc_now() - timedelta(days=days),
                                        limit=500)
    template = "alerts_live.html" if web.fragment(request) else "alerts.html"
    return await web.render(request, who, template, page="alerts", rows=rows, days=days,
                            open_count=sum(a["state"] == "open" for a in rows))


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(request: Request, alert_id: str = PathParam(),
                      who: Operator = Depends(operator)):
    """``alert.acknowledged`` once, as ``POST /v1/alerts/{id}/ack`` does."""
    check_alert_id(alert_id)
    fields = await web.form(request)
    check_csrf(request, who, fields.get("csrf"))
    require(request, who, "operate")
    stream = getattr(request.app.state, "alert_stream", None)
    if stream is None:
        stream = request.app.state.alert_stream = alerts.AlertStream()
    status, _ = await alerts.acknowledge(_jetstream(request), stream, who.tenant, alert_id,
                                         by=who.name, comment=fields.get("comment", "")[:500])
    return web.redirect("/alerts", "Acknowledged." if status == "acknowledged"
                        else "Somebody acknowledged it already.")
