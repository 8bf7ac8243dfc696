"""``/whatif``: take pumps out of service or scale the demand, run the optimiser and the
twin on it (an ``optimise`` task with ``out_of_service`` / ``demand_multiplier``), and
compare with the baseline (the network's own controls under the same inputs).

A what-if proposal is a proposal like any other on the SCHEDULE stream, so it is never
offered for approval here, and the page refuses to run while the tenant's schedules are
in automatic mode (the ``release-verified`` chain would send it to SCADA)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Query, Request

from contracts.base import utc_now
from contracts.errors import ContractError
from projections import schedules
from projections.api import queries
from projections.api.errors import InvalidParameter
from projections.api.routes_tasks import _desk
from projections.console import figures, web
from projections.console.session import Operator, check_csrf, operator, require

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
MAX_HORIZON_H = 72


async def _pumps(request: Request, tenant: str, conn) -> list[str]:
    """Pumps the tenant's rules, bindings or latest schedule name."""
    store = request.app.state.config_store
    names: set[str] = set()
    rules = await store.document(tenant, "rules") if store else None
    assets = await store.document(tenant, "assets") if store else None
    names |= set(rules.pumps) if rules else set()
    names |= {b.element for b in (assets.bindings if assets else ()) if b.role.startswith("pump")}
    latest = await schedules.list_schedules(conn, tenant, since=utc_now() - timedelta(days=30),
                                            limit=1)
    if latest:
        d = await schedules.schedule_detail(conn, tenant, latest[0]["schedule_id"])
        names |= {p["pump"] for p in d.get("plan", {}).get("pumps", [])}
    return sorted(names)


async def _result(conn, tenant: str, task_id: str) -> tuple[list[dict], dict | None]:
    """The task's transitions and, once it completed, the schedule it proposed."""
    transitions = await queries.task(conn, tenant, task_id)
    requested = next((t for t in transitions if t["state"] == "requested"), None)
    if requested is None or not any(t["state"] == "completed" for t in transitions):
        return transitions, None
    since = web.parse_iso(requested["ts"]) - timedelta(minutes=1)
    for s in await schedules.list_schedules(conn, tenant, since=since, limit=50):
        d = await schedules.schedule_detail(conn, tenant, s["schedule_id"])
        if d.get("plan", {}).get("task_id") == task_id:
            return transitions, d
    return transitions, None


@router.get("/whatif")
async def whatif(request: Request, who: Operator = Depends(operator),
                 task: str | None = Query(None, max_length=40)):
    facts = await web.tenant_facts(request, who.tenant)
    now = utc_now()
    transitions, result = None, None
    async with request.app.state.db.session(who.tenant) as conn:
        if task:
            queries.check_task_id(task)
            transitions, result = await _result(conn, who.tenant, task)
        pumps = await _pumps(request, who.tenant, conn) if not web.fragment(request) else []
    context = {"facts": facts, "task": task, "transitions": transitions, "result": result,
               "pumps": pumps, "automatic": facts["schedules_mode"] == "automatic",
               "default_start": (now.replace(minute=0, second=0, microsecond=0)
                                 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")}
    if result:
        start = web.parse_iso(result["start"])
        plan = result.get("plan", {})
        context["gantt"] = figures.to_json(figures.gantt(plan, start, result["period_s"],
                                                         facts["zone"], result["currency"]))
        context["tank_chart"] = figures.to_json(figures.tanks(plan, start, result["period_s"],
                                                              facts["zone"]))
    template = "whatif_live.html" if web.fragment(request) else "whatif.html"
    return await web.render(request, who, template, page="whatif", **context)


@router.post("/whatif")
async def run_whatif(request: Request, who: Operator = Depends(operator)):
    fields = await web.form(request)
    check_csrf(request, who, fields.get("csrf"))
    require(request, who, "operate")
    facts = await web.tenant_facts(request, who.tenant)
    if facts["schedules_mode"] == "automatic":
        raise ContractError("the tenant's schedules are in automatic mode: a verified "
                            "what-if would be released to SCADA; switch to advisory first")
    out = await web.form_list(request, "out_of_service")
    try:
        multiplier = float(fields.get("demand_multiplier") or 1.0)
        horizon = int(fields.get("horizon_h") or 24)
        limit = float(fields.get("time_limit_s") or 60)
    except ValueError as e:
        raise InvalidParameter("form", f"expected numbers: {e}") from None
    if not 0.2 <= multiplier <= 3.0:
        raise InvalidParameter("demand_multiplier", f"0.2 to 3, got {multiplier:g}")
    if not 1 <= horizon <= MAX_HORIZON_H:
        raise InvalidParameter("horizon_h", f"1 to {MAX_HORIZON_H} hours, got {horizon}")
    if not 5 <= limit <= 600:
        raise InvalidParameter("time_limit_s", f"5 to 600 s, got {limit:g}")
    start = queries.parse_time("start", fields.get("start") or "")
    if out == [] and multiplier == 1.0:
        raise InvalidParameter("form", "change something: a pump out of service or a "
                                       "demand multiplier other than 1")
    demand = fields.get("demand", "forecast")
    if demand not in ("forecast", "actual"):
        raise InvalidParameter("demand", "forecast or actual")
    params = {"start": queries.iso_utc(start), "horizon_h": horizon, "demand": demand,
              "time_limit_s": limit, "out_of_service": sorted(set(out)),
              "demand_multiplier": multiplier, "what_if": True}  # never released
    event = await _desk(request).request(who.tenant, "optimise", params,
                                         requested_by=who.name, time_limit_s=limit + 120)
    return web.redirect(f"/whatif?task={event.event_id}", "What-if requested.")
