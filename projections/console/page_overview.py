"""``/``: the overview: tanks now against their bounds, pumps, today's cost against the
counterfactual, open alerts, data freshness, the next schedule changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request

from contracts.base import utc_now
from projections import alerts, schedules
from projections.api import queries
from projections.console import web
from projections.console.session import Operator, operator

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)

FRESH_S, LATE_S = 15 * 60, 2 * 3600
PUMP_ROLES = ("pump_status", "pump_speed", "pump_flow", "pump_power")
COST_KPIS = ("cost", "counterfactual_cost", "saving")


def freshness(last_ts: str | None, now: datetime) -> str:
    """fresh (< 15 min), late (< 2 h), stale, or ahead (dated after now)."""
    t = web.parse_iso(last_ts)
    if t is None:
        return "stale"
    s = (now - t).total_seconds()
    return "ahead" if s < -60 else "fresh" if s < FRESH_S else "late" if s < LATE_S \
        else "stale"


def period_index(plan: dict, at: datetime) -> int | None:
    start = web.parse_iso(plan["start"])
    k = int((at - start).total_seconds() // plan["period_s"])
    n = len(plan["pumps"][0]["speeds"]) if plan.get("pumps") else 0
    return k if 0 <= k < n else None


def next_changes(plan: dict | None, at: datetime, limit: int = 8) -> list[dict]:
    """The plan's pump changes after ``at``: time, pump, speed before and after."""
    if not plan or not plan.get("pumps"):
        return []
    k0 = period_index(plan, at)
    if k0 is None:
        return []
    start, step = web.parse_iso(plan["start"]), timedelta(seconds=plan["period_s"])
    out = []
    for p in plan["pumps"]:
        s = p["speeds"]
        for k in range(k0 + 1, len(s)):
            if s[k] != s[k - 1]:
                out.append({"at": start + k * step, "pump": p["pump"], "before": s[k - 1],
                            "after": s[k]})
    return sorted(out, key=lambda c: (c["at"], c["pump"]))[:limit]


def gauge(level: float | None, lo: float | None, hi: float | None) -> dict:
    """Positions (percent of the drawn range) of a level and its bounds, and its state."""
    values = [v for v in (level, lo, hi) if v is not None]
    top = max(values) * 1.1 if values else 1.0
    top = top or 1.0

    def pct(v):
        return None if v is None else max(0.0, min(100.0, 100.0 * v / top))

    state = ("unknown" if level is None else "below" if lo is not None and level < lo
             else "above" if hi is not None and level > hi else "within")
    return {"level": pct(level), "lo": pct(lo), "hi": pct(hi), "state": state, "top": top}


async def gather(request: Request, who: Operator) -> dict:
    tenant, now = who.tenant, utc_now()
    facts = await web.tenant_facts(request, tenant)
    store = request.app.state.config_store
    rules = await store.document(tenant, "rules") if store else None
    assets = await store.document(tenant, "assets") if store else None
    bindings = list(assets.bindings) if assets else []
    today = now.astimezone(ZoneInfo(facts["zone"])).date()
    async with request.app.state.db.session(tenant) as conn:
        sensors = await queries.list_sensors(conn, tenant)
        tanks = []
        for b in bindings:
            if b.role != "tank_level":
                continue
            got = await queries.value_at(conn, tenant, b.sensor, now)
            rule = rules.tanks.get(b.element) if rules else None
            level = got[1] + b.offset_m if got else None
            lo = rule.min_level_m if rule else None
            hi = rule.max_level_m if rule else None
            tanks.append({"tank": b.element, "sensor": b.sensor, "level": level,
                          "at": got[0] if got else None, "lo": lo, "hi": hi,
                          "gauge": gauge(level, lo, hi)})
        pump_sensors = [b for b in bindings if b.role in PUMP_ROLES]
        units = {s["sensor"]: s["unit"] for s in sensors}
        measured = {}
        for b in pump_sensors:  # as of now: a file may hold readings dated ahead
            got = await queries.value_at(conn, tenant, b.sensor, now)
            if got is not None:
                measured[b.sensor] = {"ts": got[0], "value": got[1],
                                      "unit": units.get(b.sensor, "")}
        plan = await schedules.in_force(conn, tenant, now)
        recent = await schedules.list_schedules(conn, tenant, since=now - timedelta(days=7),
                                                limit=20)
        open_alerts = await alerts.list_alerts(conn, tenant, since=now, open_only=True,
                                               limit=50)
        kpis = await queries.kpis(conn, tenant, today, today)
    pumps = {}
    k = period_index(plan, now) if plan else None
    for p in (plan or {}).get("pumps", []):
        pumps[p["pump"]] = {"pump": p["pump"], "planned": p["speeds"][k] if k is not None
                            else None, "measured": []}
    for b in pump_sensors:
        row = pumps.setdefault(b.element, {"pump": b.element, "planned": None,
                                           "measured": []})
        r = measured.get(b.sensor)
        row["measured"].append({"sensor": b.sensor, "role": b.role,
                                "value": r["value"] if r else None,
                                "unit": r["unit"] if r else "", "ts": r["ts"] if r else None})
    cost = {k["name"]: k for k in kpis if k["subject"] == "network" and k["name"] in COST_KPIS}
    in_force_row = next((s for s in recent if plan and s["schedule_id"] == plan["schedule_id"]),
                        None)
    waiting = [s for s in recent if s["state"] == "proposed" and s["verified"]
               and (web.parse_iso(s["end"]) or now) > now]
    for s in sensors:
        s["freshness"] = freshness(s["last_ts"], now)
    return {"facts": facts, "tanks": tanks, "pumps": sorted(pumps.values(),
                                                            key=lambda p: p["pump"]),
            "plan": plan, "plan_row": in_force_row, "changes": next_changes(plan, now),
            "waiting": waiting, "alerts": open_alerts, "sensors": sensors,
            "cost": cost, "today": today.isoformat(), "now_utc": now.astimezone(UTC)}


@router.get("/")
async def overview(request: Request, who: Operator = Depends(operator)):
    data = await gather(request, who)
    template = "overview_live.html" if web.fragment(request) else "overview.html"
    return await web.render(request, who, template, page="overview", **data)
