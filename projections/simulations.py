"""Runs of the digital twin for operators: ``simulation.completed`` -> QuestDB
``simulations``, and the queries the API and the console read it through.

One row per simulation, tank, pump and zone per period (``ts`` = the period's start;
a tank also at the horizon's end), and one ``summary`` row per simulation (``ts`` = its
start) holding the totals and, as JSON in ``detail``, the scenario, warnings,
calibration and inputs.  DEDUP keys (ts, tenant, simulation_id, kind, element): a
replay changes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec
import pandas as pd

from bus.components import Projection
from contracts.base import Event
from contracts.errors import NotFoundError
from contracts.simulations import SimulationCompleted
from projections.api.queries import fetch_or_empty as _rows, iso_utc as _iso, naive_utc as _naive
from projections.questdb import QuestDB, TableWriter

NAME = "questdb-simulations"
TABLE = "simulations"
DETAIL_MAX = 1_000_000

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    simulation_id SYMBOL CAPACITY 65536 NOCACHE,
    kind SYMBOL CAPACITY 8 CACHE,
    element SYMBOL CAPACITY 4096 CACHE,
    period INT,
    level_m DOUBLE,
    status DOUBLE,
    speed DOUBLE,
    flow_m3s DOUBLE,
    head_m DOUBLE,
    power_kw DOUBLE,
    energy_kwh DOUBLE,
    cost DOUBLE,
    min_pressure_m DOUBLE,
    recorded_at TIMESTAMP,
    detail VARCHAR,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, tenant, simulation_id, kind, element)
"""
_FLOATS = ("level_m", "status", "speed", "flow_m3s", "head_m", "power_kw", "energy_kwh",
           "cost", "min_pressure_m")


def summary_of(e: SimulationCompleted) -> dict:
    """What the summary row's ``detail`` holds (JSON-ready)."""
    return {"scenario": msgspec.to_builtins(e.scenario), "currency": e.currency,
            "warnings": e.warnings, "task_id": e.task_id, "period_s": e.period_s,
            "calibration": msgspec.to_builtins(e.calibration) if e.calibration else None,
            "inputs": e.inputs,
            "tank_bounds": {t.tank: [t.lower_m, t.upper_m, t.min_m, t.max_m]
                            for t in e.tanks}}


def _f(x) -> float:
    return math.nan if x is None else float(x)


def frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        if not isinstance(e, SimulationCompleted):
            continue
        base = dict(tenant=e.tenant, simulation_id=e.event_id, recorded_at=e.recorded_at,
                    event_id=e.event_id, detail="")

        def at(k: int):
            return e.start + timedelta(seconds=k * e.period_s)

        detail = json.dumps(summary_of(e), sort_keys=True, default=str)
        if len(detail) > DETAIL_MAX:
            detail = json.dumps({"truncated": True, "note": "the run is in the SIMULATION "
                                 "stream (event " + e.event_id + ")"})
        rows.append(dict(base, ts=e.start, kind="summary", element="network",
                         period=e.periods, energy_kwh=e.energy_kwh, cost=e.cost,
                         detail=detail))
        for t in e.tanks:
            rows += [dict(base, ts=at(k), kind="tank", element=t.tank, period=k, level_m=v)
                     for k, v in enumerate(t.levels_m)]
        for p in e.pumps:
            for k in range(len(p.status)):
                rows.append(dict(
                    base, ts=at(k), kind="pump", element=p.pump, period=k,
                    status=p.status[k], speed=_f(p.speed[k] if k < len(p.speed) else None),
                    flow_m3s=p.flow_m3s[k], head_m=_f(p.head_m[k]), power_kw=p.power_kw[k],
                    energy_kwh=p.energy_kwh[k], cost=_f(p.cost[k] if k < len(p.cost)
                                                         else None)))
        for zone, lows in e.min_pressure_m.items():
            rows += [dict(base, ts=at(k), kind="zone", element=zone, period=k,
                          min_pressure_m=_f(v)) for k, v in enumerate(lows)]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in _FLOATS:
        df[col] = (df[col] if col in df else pd.Series(math.nan, index=df.index)
                   ).astype("float64")
    df["period"] = df["period"].astype("Int64")
    for col in ("ts", "recorded_at"):
        df[col] = pd.to_datetime(df[col], utc=True).dt.as_unit("ns")
    return df


def projection(db: QuestDB) -> Projection:
    writer = TableWriter(db, TABLE, DDL, frame, ["tenant", "simulation_id", "kind", "element"])
    return Projection(name=NAME, accepts=(SimulationCompleted,), write=writer.write,
                      prepare=writer.prepare)


# ---------------------------------------------------------------- queries

_LIST_SQL = (f"SELECT ts, simulation_id, recorded_at, period, energy_kwh, cost, detail "
             f"FROM {TABLE} WHERE tenant = $1 AND kind = 'summary' AND recorded_at >= $2 "
             f"ORDER BY recorded_at DESC LIMIT $3")
_DETAIL_SQL = (f"SELECT ts, kind, element, period, level_m, status, speed, flow_m3s, head_m, "
               f"power_kw, energy_kwh, cost, min_pressure_m, recorded_at, detail "
               f"FROM {TABLE} WHERE tenant = $1 AND simulation_id = $2 ORDER BY ts")


def _line(r, detail: dict) -> dict:
    period_s = int(detail.get("period_s") or 3600)
    periods = int(r["period"] or 0)
    scenario = detail.get("scenario") or {}
    calibration = detail.get("calibration")
    return {"simulation_id": r.get("simulation_id"),
            "start": _iso(r["ts"]),
            "end": _iso(r["ts"] + timedelta(seconds=period_s * periods)),
            "period_s": period_s, "periods": periods, "recorded_at": _iso(r["recorded_at"]),
            "energy_kwh": r["energy_kwh"], "cost": r["cost"],
            "currency": detail.get("currency"), "demand": scenario.get("demand"),
            "schedule": scenario.get("schedule"),
            "out_of_service": scenario.get("out_of_service", []),
            "demand_multiplier": scenario.get("demand_multiplier"),
            "warnings": len(detail.get("warnings") or []),
            "calibrated_days": calibration["days"] if calibration else 0,
            "task_id": detail.get("task_id")}


async def list_simulations(conn, tenant: str, *, since: datetime, limit: int = 50
                           ) -> list[dict]:
    """The tenant's simulations recorded since ``since``, newest first, one line each."""
    rows = await _rows(conn, _LIST_SQL, tenant, _naive(since), limit)
    return [_line(dict(r), json.loads(r["detail"] or "{}")) for r in rows]


async def latest_id(conn, tenant: str) -> str | None:
    rows = await _rows(conn, _LIST_SQL, tenant, datetime(1970, 1, 1), 1)
    return rows[0]["simulation_id"] if rows else None


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


async def simulation_detail(conn, tenant: str, simulation_id: str) -> dict:
    """One simulation: its summary line, scenario, warnings, calibration and inputs, and
    its series (per tank: levels; per pump: status, speed, flow, head, power, energy,
    cost; per zone: minimum pressure), each a list of {at, ...} by period."""
    rows = await _rows(conn, _DETAIL_SQL, tenant, simulation_id)
    summary = next((r for r in rows if r["kind"] == "summary"), None)
    if summary is None:
        raise NotFoundError(f"no simulation {simulation_id} for tenant {tenant!r}")
    detail = json.loads(summary["detail"] or "{}")
    out = _line({**dict(summary), "simulation_id": simulation_id}, detail)
    out.update({k: detail.get(k) for k in ("scenario", "calibration", "inputs",
                                            "tank_bounds")})
    out["warning_list"] = detail.get("warnings") or []
    tanks: dict[str, list] = {}
    pumps: dict[str, list] = {}
    zones: dict[str, list] = {}
    for r in rows:
        at = _iso(r["ts"])
        if r["kind"] == "tank":
            tanks.setdefault(r["element"], []).append({"at": at, "level_m": _num(r["level_m"])})
        elif r["kind"] == "pump":
            pumps.setdefault(r["element"], []).append({
                "at": at, **{c: _num(r[c]) for c in ("status", "speed", "flow_m3s", "head_m",
                                                      "power_kw", "energy_kwh", "cost")}})
        elif r["kind"] == "zone":
            zones.setdefault(r["element"], []).append(
                {"at": at, "min_pressure_m": _num(r["min_pressure_m"])})
    out["tanks"], out["pumps"], out["zones"] = tanks, pumps, zones
    return out
