"""``/simulations``: runs of the digital twin (task ``simulate``): the recent ones, and one
of them (default the newest) with its pumps by period over the price bands, its tank
levels against the model's bounds, minimum pressures, warnings and how far the twin was
from the readings (calibration).  The charts are the schedule page's figures, fed with
what EPANET simulated."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Query, Request

from contracts.base import utc_now
from contracts.errors import NotFoundError
from projections import simulations
from projections.api.routes_simulations import check_simulation_id
from projections.console import figures, web
from projections.console.session import Operator, operator

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)


def plan_of(detail: dict) -> dict:
    """A simulation in the shape the schedule figures draw: per pump the share of each
    period it ran (as its speed) with flow, head and power on hover; tank levels and the
    model's bounds; the prices per period."""
    pumps = []
    for pump, rows in sorted((detail.get("pumps") or {}).items()):
        pumps.append({"pump": pump, "speeds": [r["status"] or 0.0 for r in rows],
                      "reasons": [_words(r) for r in rows]})
    return {"pumps": pumps,
            "tanks": {t: [r["level_m"] for r in rows]
                      for t, rows in (detail.get("tanks") or {}).items()},
            "tank_bounds": {t: b[:2] for t, b in (detail.get("tank_bounds") or {}).items()},
            "inputs": {"prices_per_kwh": (detail.get("inputs") or {}).get("prices_per_kwh")
                       or []}}


def _words(row: dict) -> str:
    if not row.get("status"):
        return "stopped"
    head = f", head {row['head_m']:.1f} m" if row.get("head_m") is not None else ""
    return (f"ran {100 * row['status']:.0f}% of the period: {1000 * (row['flow_m3s'] or 0):.1f}"
            f" l/s{head}, {row['power_kw'] or 0:.1f} kW")


@router.get("/simulations")
async def simulations_page(request: Request, who: Operator = Depends(operator),
                           id: str | None = Query(None, max_length=40)):
    tenant = who.tenant
    facts = await web.tenant_facts(request, tenant)
    async with request.app.state.db.session(tenant) as conn:
        recent = await simulations.list_simulations(
            conn, tenant, since=utc_now() - timedelta(days=30), limit=50)
        chosen = check_simulation_id(id) if id else (recent[0]["simulation_id"]
                                                     if recent else None)
        detail, problem = None, ""
        if chosen:
            try:
                detail = await simulations.simulation_detail(conn, tenant, chosen)
            except NotFoundError as e:
                problem = str(e)
    context = {"facts": facts, "recent": recent, "detail": detail, "problem": problem}
    if detail:
        start = datetime.fromisoformat(detail["start"].replace("Z", "+00:00"))
        plan = plan_of(detail)
        zone = facts["zone"]
        context.update(
            gantt=figures.to_json(figures.gantt(plan, start, detail["period_s"], zone,
                                                detail.get("currency") or "")),
            tank_chart=figures.to_json(figures.tanks(plan, start, detail["period_s"], zone)),
            pressures={z: min((r["min_pressure_m"] for r in rows
                               if r["min_pressure_m"] is not None), default=None)
                       for z, rows in (detail.get("zones") or {}).items()})
    return await web.render(request, who, "simulations.html", page="simulations", **context)
