"""``/schedule``: the schedules proposed, one in detail (Gantt over the price bands, tank
trajectories with bounds, cost and saving, the reason per pump-period), approval in
advisory mode (operate scope) and the releases with what each changed."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter, Depends, Path as PathParam, Request
from fastapi.responses import Response

from contracts.base import utc_now
from projections import schedules
from projections.api import queries
from projections.api.routes_schedules import approve_and_release, check_schedule_id, plan_csv
from projections.console import figures, web
from projections.console.session import Operator, check_csrf, operator, require

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
LIST_DAYS = 30
HISTORY_RELEASES = 8
WHATIF_PARAMS = ("out_of_service", "demand_multiplier")


def plan_diff(new: dict, old: dict) -> dict:
    """Pump-periods of ``new`` whose speed differs from ``old`` at the same instant (over
    the periods both cover): ``{"compared", "changed": [{at, pump, before, after}]}``."""
    a_start, b_start = web.parse_iso(new["start"]), web.parse_iso(old["start"])
    a_step, b_step = new["period_s"], old["period_s"]
    old_speeds = {p["pump"]: p["speeds"] for p in old.get("plan", old).get("pumps", [])}
    compared, changed = 0, []
    for p in new.get("plan", new).get("pumps", []):
        before = old_speeds.get(p["pump"])
        if before is None:
            continue
        for k, speed in enumerate(p["speeds"]):
            at = a_start + timedelta(seconds=k * a_step)
            offset = (at - b_start).total_seconds()
            j = int(offset // b_step)
            if offset < 0 or offset % b_step or j >= len(before):
                continue
            compared += 1
            if before[j] != speed:
                changed.append({"at": at, "pump": p["pump"], "before": before[j],
                                "after": speed})
    return {"compared": compared, "changed": changed}


async def what_if_of(conn, tenant: str, task_id: str | None) -> dict | None:
    """The what-if parameters of the task that proposed a schedule, if it was asked as one
    (``what_if``: a pump out of service by itself may be real, e.g. a re-optimise
    because a pump is under repair, and that plan is released like any other)."""
    if not task_id:
        return None
    for row in await queries.task(conn, tenant, task_id):
        if row.get("state") == "requested" and row.get("params"):
            params = row["params"]
            params = json.loads(params) if isinstance(params, str) else params
            picked = {k: params[k] for k in WHATIF_PARAMS if k in params}
            if params.get("what_if"):
                return picked or {"what_if": True}
    return None


def approvable(s: dict, what_if, now) -> tuple[bool, str]:
    """Whether the Approve button is offered, and why not."""
    if s["state"] != "proposed":
        return False, f"this schedule is {s['state']}"
    if not s["verified"]:
        return False, "EPANET did not verify this schedule: it is never released"
    if web.parse_iso(s["end"]) <= now:
        return False, "its horizon has ended"
    if what_if:
        return False, "a what-if run, for comparison only: request a real optimisation"
    return True, ""


@router.get("/schedule")
async def schedule_latest(request: Request, who: Operator = Depends(operator)):
    return await _page(request, who, None)


@router.get("/schedule/{schedule_id}.csv")
async def schedule_csv(request: Request, schedule_id: str = PathParam(),
                       who: Operator = Depends(operator)):
    """The plan as CSV, as ``GET /v1/schedules/{id}.csv`` makes it."""
    check_schedule_id(schedule_id)
    async with request.app.state.db.session(who.tenant) as conn:
        detail = await schedules.schedule_detail(conn, who.tenant, schedule_id)
    return Response(plan_csv(detail), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="schedule_{schedule_id}.csv"',
        "Cache-Control": "no-store"})


@router.get("/schedule/{schedule_id}")
async def schedule_one(request: Request, schedule_id: str = PathParam(),
                       who: Operator = Depends(operator)):
    check_schedule_id(schedule_id)
    return await _page(request, who, schedule_id)


async def _page(request: Request, who: Operator, schedule_id: str | None):
    tenant, now = who.tenant, utc_now()
    facts = await web.tenant_facts(request, tenant)
    zone = facts["zone"]
    detail, what_if, previous, diff = None, None, None, None
    history = []
    async with request.app.state.db.session(tenant) as conn:
        listed = await schedules.list_schedules(conn, tenant, since=now - timedelta(
            days=LIST_DAYS), limit=200)
        if schedule_id is None and listed:
            schedule_id = listed[0]["schedule_id"]
        if schedule_id is not None:
            detail = await schedules.schedule_detail(conn, tenant, schedule_id)
            what_if = await what_if_of(conn, tenant, detail.get("plan", {}).get("task_id"))
            previous = await _previous_release(conn, tenant, detail, listed)
            if previous is not None:
                diff = plan_diff(detail, previous)
        releases = sorted((s for s in listed if s["version"] is not None),
                          key=lambda s: s["version"], reverse=True)[:HISTORY_RELEASES]
        plans = {}
        for s in releases:
            plans[s["schedule_id"]] = await schedules.schedule_detail(conn, tenant,
                                                                      s["schedule_id"])
    for i, s in enumerate(releases):
        before = releases[i + 1] if i + 1 < len(releases) else None
        d = plan_diff(plans[s["schedule_id"]], plans[before["schedule_id"]]) if before \
            else None
        history.append({**s, "diff": d, "previous_version": before["version"] if before
                        else None})
    context = {"facts": facts, "listed": listed, "detail": detail, "what_if": what_if,
               "previous": previous, "diff": diff, "history": history}
    if detail is not None:
        start = web.parse_iso(detail["start"])
        plan = detail.get("plan", {})
        context["gantt"] = figures.to_json(figures.gantt(plan, start, detail["period_s"], zone,
                                                         detail["currency"] or ""))
        context["tank_chart"] = figures.to_json(figures.tanks(plan, start, detail["period_s"],
                                                              zone))
        context["can_approve"], context["why_not"] = approvable(detail, what_if, now)
        context["periods"] = _periods(detail, zone)
    template = "schedule.html"
    if web.fragment(request):
        template = ("schedule_lists.html" if request.query_params.get("part") == "lists"
                    else "schedule_live.html")
    return await web.render(request, who, template, page="schedule", **context)


def _periods(detail: dict, zone: str) -> list[dict]:
    """The plan as a table (a text alternative to the chart): per period, each pump."""
    plan = detail.get("plan", {})
    pumps = plan.get("pumps", [])
    prices = (plan.get("inputs") or {}).get("prices_per_kwh") or []
    start, step = web.parse_iso(detail["start"]), timedelta(seconds=detail["period_s"])
    n = len(pumps[0]["speeds"]) if pumps else 0
    return [{"at": start + k * step, "price": prices[k] if k < len(prices) else None,
             "cells": [{"pump": p["pump"], "speed": p["speeds"][k],
                        "reason": (p.get("reasons") or [""] * n)[k]} for p in pumps]}
            for k in range(n)]


async def _previous_release(conn, tenant: str, detail: dict, listed: list[dict]):
    """What this schedule replaces or replaced: for a release, the version before it;
    otherwise the release in force at its start."""
    version = detail.get("version")
    if version is not None:
        before = [s for s in listed if s["version"] is not None and s["version"] < version]
        if not before:
            return None
        best = max(before, key=lambda s: s["version"])
        return await schedules.schedule_detail(conn, tenant, best["schedule_id"])
    current = await schedules.in_force(conn, tenant, web.parse_iso(detail["start"]))
    if current is None:
        return None
    return {"start": current["start"], "period_s": current["period_s"],
            "version": current["version"], "schedule_id": current["schedule_id"],
            "plan": {"pumps": current["pumps"]}}


@router.post("/schedule/{schedule_id}/approve")
async def approve(request: Request, schedule_id: str = PathParam(),
                  who: Operator = Depends(operator)):
    """Approve in advisory mode: ``schedule.approved`` once, then the release task (the
    same as ``POST /v1/schedules/{id}/approve``)."""
    check_schedule_id(schedule_id)
    fields = await web.form(request)
    check_csrf(request, who, fields.get("csrf"))
    require(request, who, "operate")
    # a what-if, an unverified or a past schedule: ContractError from the domain
    status = await approve_and_release(request, who.tenant, schedule_id, by=who.name,
                                       comment=fields.get("comment", "")[:500])
    message = ("Approved: the release to SCADA is requested." if status == "approved"
               else "It was approved already.")
    return web.redirect(f"/schedule/{schedule_id}", message)
