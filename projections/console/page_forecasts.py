"""``/forecasts``: each zone's latest forecast against what was measured, with the P10-P90
band, the model that made it and how good it was."""

from __future__ import annotations

from datetime import timedelta

import msgspec
from fastapi import APIRouter, Depends, Query, Request

from contracts.base import utc_now
from contracts.errors import NotFoundError
from projections.api import queries, routes_forecasts
from projections.console import figures, web
from projections.console.session import Operator, operator

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
SKILL_KPIS = ("forecast_skill", "forecast_mae_m3s", "naive_mae_m3s")


def skill(points: list[dict]) -> dict:
    """Over the hours measured: mean absolute error of the median, bias, and the share
    of hours inside P10-P90 (in the series' unit; coverage in percent)."""
    measured = [p for p in points if p.get("actual") is not None]
    if not measured:
        return {"hours": 0}
    errors = [p["p50"] - p["actual"] for p in measured]
    inside = sum(p["p10"] <= p["actual"] <= p["p90"] for p in measured)
    return {"hours": len(measured), "mae": sum(abs(e) for e in errors) / len(errors),
            "bias": sum(errors) / len(errors), "coverage": 100.0 * inside / len(measured)}


@router.get("/forecasts")
async def forecasts(request: Request, who: Operator = Depends(operator),
                    series: str | None = Query(None, max_length=140),
                    as_of: str | None = Query(None, max_length=40)):
    tenant = who.tenant
    facts = await web.tenant_facts(request, tenant)
    async with request.app.state.db.session(tenant) as conn:
        names = await queries.forecast_series(conn, tenant)
        today = utc_now().date()
        kpis = await queries.kpis(conn, tenant, today - timedelta(days=7), today)
    chosen = series or (names[0] if names else None)
    body, problem = None, ""
    if chosen:
        try:  # the API's own answer: the forecast in force and its actuals
            answer = await routes_forecasts.forecast(request, series=chosen, as_of=as_of,
                                                     tenant=tenant)
            body = msgspec.json.decode(answer.body)
        except NotFoundError as e:
            problem = str(e)
    context = {"facts": facts, "names": names, "chosen": chosen, "body": body,
               "problem": problem, "as_of": as_of or ""}
    if body:
        points = body["points"]
        unit = points[0]["unit"] if points else ""
        context.update(
            unit=unit, skill=skill(points),
            methods=sorted({p["method"] for p in points}),
            figure=figures.to_json(figures.forecast(points, facts["zone"], unit)),
            kpis={k["name"]: k for k in kpis if k["subject"] == chosen
                  and k["name"] in SKILL_KPIS})
    return await web.render(request, who, "forecasts.html", page="forecasts", **context)
