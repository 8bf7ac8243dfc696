"""Pump schedules for operators: the QuestDB ``schedules`` table, the tenant's schedule
events read from the SCHEDULE stream, and approving a proposal (advisory mode).

- ``schedules`` (QuestDB): one row per schedule event (proposed, approved, released,
  acknowledged, deviated); the plan itself (pumps, reasons, tank levels, feasibility,
  solver figures, inputs) as JSON in ``detail`` of the proposed row.  DEDUP keys (ts,
  tenant, event_id): replays change nothing.
- ``list_schedules`` folds the rows into one line per schedule (its state: proposed,
  approved, released vN, acknowledged; its cost and saving; deviations counted);
  ``schedule_detail`` gives one schedule with its plan and its history.
- ``ScheduleStream``: a tenant's schedule events from the stream itself (not the table,
  which lags): what ``approve`` checks against.
- ``approve``: an operator approves a verified proposal: ``schedule.approved`` once (its
  id depends on the schedule only) and a ``schedule.release`` task, which publishes
  ``schedule.released`` for SCADA.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

import pandas as pd

from bus.components import Projection
from bus.publish import publish
from bus.tail import TenantTail
from contracts.base import Event, derive_id, utc_now
from contracts.errors import ContractError, NotFoundError
from contracts.schedules import (
    ScheduleAcknowledged, ScheduleApproved, ScheduleDeviated, ScheduleProposed,
    ScheduleReleased,
)
from projections.api.queries import fetch_or_empty as _rows, iso_utc as _iso, naive_utc as _naive
from projections.questdb import QuestDB, TableWriter

NAME = "questdb-schedules"
TABLE = "schedules"
STATES = {ScheduleProposed: "proposed", ScheduleApproved: "approved",
          ScheduleReleased: "released", ScheduleAcknowledged: "acknowledged",
          ScheduleDeviated: "deviated"}
ACCEPTS = tuple(STATES)

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    schedule_id SYMBOL CAPACITY 65536 NOCACHE,
    state SYMBOL CAPACITY 8 CACHE,
    start TIMESTAMP,
    period_s INT,
    periods INT,
    verified BOOLEAN,
    status VARCHAR,
    energy_kwh DOUBLE,
    cost DOUBLE,
    baseline_cost DOUBLE,
    saving DOUBLE,
    currency SYMBOL CAPACITY 16 CACHE,
    mode SYMBOL CAPACITY 4 CACHE,
    version INT,
    by VARCHAR,
    detail VARCHAR,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, tenant, event_id)
"""
DETAIL_MAX = 1_000_000  # characters: a week of 15-minute periods for 30 pumps fits


def _detail(e: Event) -> dict:
    if isinstance(e, ScheduleProposed):
        return {"pumps": [{"pump": p.pump, "speeds": p.speeds, "reasons": p.reasons}
                          for p in e.pumps],
                "tanks": e.tanks, "tank_bounds": e.tank_bounds,
                "baseline_energy_kwh": e.baseline_energy_kwh, "reason": e.reason,
                "feasibility": e.feasibility, "solver": e.solver, "inputs": e.inputs,
                "task_id": e.task_id}
    if isinstance(e, ScheduleReleased):
        return {"pumps": [{"pump": p.pump, "speeds": p.speeds} for p in e.pumps],
                "proposed_event_id": e.proposed_event_id}
    if isinstance(e, ScheduleApproved):
        return {"comment": e.comment}
    if isinstance(e, ScheduleAcknowledged):
        return {"channel": e.channel}
    if isinstance(e, ScheduleDeviated):
        return {"pump": e.pump, "period_start": e.period_start.isoformat(),
                "expected": e.expected, "observed": e.observed, "sensor": e.sensor,
                "detail": e.detail}
    return {}


def frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        state = STATES.get(type(e))
        if state is None:
            continue
        plan = getattr(e, "pumps", None)
        detail = json.dumps(_detail(e), sort_keys=True, default=str)
        if len(detail) > DETAIL_MAX:
            detail = json.dumps({"truncated": True, "note": "the plan is in the SCHEDULE "
                                 "stream (event " + e.event_id + ")"})
        rows.append(dict(
            ts=e.recorded_at, tenant=e.tenant, schedule_id=getattr(e, "schedule_id", None)
            or e.event_id, state=state, start=getattr(e, "start", None),
            period_s=getattr(e, "period_s", None),
            periods=len(plan[0].speeds) if plan else None,
            verified=bool(getattr(e, "verified", False)), status=getattr(e, "status", ""),
            energy_kwh=getattr(e, "energy_kwh", None), cost=getattr(e, "cost", None),
            baseline_cost=getattr(e, "baseline_cost", None),
            saving=getattr(e, "saving", None), currency=getattr(e, "currency", ""),
            mode=getattr(e, "mode", ""), version=getattr(e, "version", None),
            by=getattr(e, "released_by", None) or getattr(e, "by", "") or "",
            detail=detail, event_id=e.event_id))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("ts", "start"):
        df[col] = pd.to_datetime(df[col], utc=True).dt.as_unit("ns")
    for col in ("energy_kwh", "cost", "baseline_cost", "saving"):
        df[col] = df[col].astype("float64")
    for col in ("period_s", "periods", "version"):
        df[col] = df[col].astype("Int64")
    return df


def projection(db: QuestDB) -> Projection:
    writer = TableWriter(db, TABLE, DDL, frame,
                         ["tenant", "schedule_id", "state", "currency", "mode"])
    return Projection(name=NAME, accepts=ACCEPTS, write=writer.write, prepare=writer.prepare)


# ---------------------------------------------------------------- the stream itself


class ScheduleStream(TenantTail):
    """Each tenant's schedule events in stream order (``events``), from the SCHEDULE
    stream itself: what ``approve`` checks against."""

    def __init__(self) -> None:
        super().__init__("schedule")

    async def proposal(self, js, tenant: str, schedule_id: str) -> ScheduleProposed | None:
        for e in await self.events(js, tenant):
            if isinstance(e, ScheduleProposed) and e.event_id == schedule_id:
                return e
        return None


def end_of(e: ScheduleProposed | ScheduleReleased) -> datetime:
    return e.start + timedelta(seconds=e.period_s * (len(e.pumps[0].speeds) if e.pumps else 0))


async def approve(js, stream: ScheduleStream, tenant: str, schedule_id: str, *, by: str,
                  comment: str = "", allow_past: bool = False, request_release=None,
                  now: datetime | None = None) -> tuple[str, ScheduleApproved | None]:
    """Approve a verified proposal: ("approved", the event) and the release requested
    through ``request_release(tenant, schedule_id, by)``; ("already", None) when it was
    approved or released before.  NotFoundError for an unknown schedule; ContractError
    for one EPANET did not verify, or whose horizon has passed (unless ``allow_past``:
    engineers' what-ifs on history)."""
    now = now or utc_now()
    events = await stream.events(js, tenant)
    proposal = next((e for e in events if isinstance(e, ScheduleProposed)
                     and e.event_id == schedule_id), None)
    if proposal is None:
        raise NotFoundError(f"no proposed schedule {schedule_id} for tenant {tenant!r}")
    if not proposal.verified:
        raise ContractError(f"schedule {schedule_id} was not verified in EPANET "
                            f"({proposal.reason or proposal.status}): it cannot be released")
    if proposal.mode == "what-if":
        raise ContractError(f"schedule {schedule_id} answers a what-if: it is not released")
    if not allow_past and end_of(proposal) <= now:
        raise ContractError(f"schedule {schedule_id} ended at {end_of(proposal).isoformat()}: "
                            f"a past schedule is not released")
    if any(isinstance(e, ScheduleApproved | ScheduleReleased) and e.schedule_id == schedule_id
           for e in events):
        return "already", None
    event = ScheduleApproved(
        event_id=derive_id("schedule.approved", tenant, schedule_id), tenant=tenant,
        occurred_at=now, recorded_at=now, causation_id=schedule_id,
        correlation_id=proposal.correlation_id, schedule_id=schedule_id, by=by,
        comment=comment[:500])
    await publish(js, event)
    if request_release is not None:
        await request_release(tenant, schedule_id, by)
    return "approved", event


# ---------------------------------------------------------------- reading the table


def _fold(rows) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["ts"]):
        s = out.setdefault(r["schedule_id"], {
            "schedule_id": r["schedule_id"], "state": None, "proposed_at": None,
            "start": None, "end": None, "period_s": None, "verified": None, "status": "",
            "cost": None, "baseline_cost": None, "saving": None, "energy_kwh": None,
            "currency": None, "mode": None, "approved_by": None, "approved_at": None,
            "version": None, "released_at": None, "released_by": None,
            "acknowledged": [], "deviations": 0})
        state, when = r["state"], _iso(r["ts"])
        if state == "proposed":
            end = r["start"] + timedelta(seconds=(r["period_s"] or 0) * (r["periods"] or 0))
            s.update(state=s["state"] or "proposed", proposed_at=when, start=_iso(r["start"]),
                     end=_iso(end), period_s=r["period_s"], verified=r["verified"],
                     status=r["status"], cost=r["cost"], baseline_cost=r["baseline_cost"],
                     saving=r["saving"], energy_kwh=r["energy_kwh"], currency=r["currency"],
                     mode=r["mode"])
        elif state == "approved":
            s.update(state="approved" if s["state"] in (None, "proposed") else s["state"],
                     approved_by=r["by"], approved_at=when)
        elif state == "released":
            s.update(state="released", version=r["version"], released_at=when,
                     released_by=r["by"])
        elif state == "acknowledged":
            s["acknowledged"].append({"at": when, "by": r["by"],
                                      "channel": json.loads(r["detail"]).get("channel")})
            if s["state"] == "released":
                s["state"] = "acknowledged"
        elif state == "deviated":
            s["deviations"] += 1
    return out


async def list_schedules(conn, tenant: str, *, since: datetime, limit: int = 100) -> list[dict]:
    """The tenant's schedules proposed since ``since`` (and those released since), newest
    first, one line each."""
    ids = await _rows(conn, f"SELECT DISTINCT schedule_id FROM {TABLE} WHERE tenant = $1 AND "
                            f"ts >= $2", tenant, _naive(since))
    wanted = sorted(r["schedule_id"] for r in ids)
    if not wanted:
        return []
    rows = []
    for k in range(0, len(wanted), 200):  # bound the IN list
        part = wanted[k:k + 200]
        marks = ", ".join(f"${i + 2}::string" for i in range(len(part)))
        rows += await _rows(conn, f"SELECT ts, schedule_id, state, start, period_s, periods, "
                                  f"verified, status, energy_kwh, cost, baseline_cost, saving, "
                                  f"currency, mode, version, by, "
                                  f"CASE WHEN state = 'acknowledged' THEN detail ELSE '{{}}' "
                                  f"END AS detail FROM {TABLE} WHERE tenant = $1 AND "
                                  f"schedule_id IN ({marks})", tenant, *part)
    folded = [s for s in _fold(rows).values() if s["proposed_at"]]
    folded.sort(key=lambda s: s["proposed_at"], reverse=True)
    return folded[:limit]


async def schedule_detail(conn, tenant: str, schedule_id: str) -> dict:
    """One schedule: its summary, its plan (pumps with reasons, tank levels and bounds,
    feasibility, solver, inputs), its history (every transition) and deviations."""
    rows = await _rows(conn, f"SELECT * FROM {TABLE} WHERE tenant = $1 AND schedule_id = $2 "
                             f"ORDER BY ts", tenant, schedule_id)
    if not any(r["state"] == "proposed" for r in rows):
        raise NotFoundError(f"no schedule {schedule_id} for tenant {tenant!r}")
    out = _fold(rows)[schedule_id]
    history, deviations = [], []
    for r in rows:
        detail = json.loads(r["detail"] or "{}")
        if r["state"] == "proposed":
            out["plan"] = detail
        elif r["state"] == "deviated":
            deviations.append(detail | {"at": _iso(r["ts"])})
        history.append({"at": _iso(r["ts"]), "state": r["state"], "by": r["by"],
                        "version": r["version"]})
    out["history"], out["deviation_list"] = history, deviations[-500:]
    return out


async def in_force(conn, tenant: str, at: datetime) -> dict | None:
    """The released schedule SCADA should run at ``at``: the latest version whose horizon
    covers it (what a gateway fetches when it (re)connects), else None."""
    rows = await _rows(conn, f"SELECT ts, schedule_id, start, period_s, periods, version, by, "
                             f"detail FROM {TABLE} WHERE tenant = $1 AND state = 'released' "
                             f"AND start <= $2 ORDER BY version DESC LIMIT 50", tenant,
                       _naive(at))
    for r in rows:
        end = r["start"] + timedelta(seconds=(r["period_s"] or 0) * (r["periods"] or 0))
        if end > _naive(at):
            detail = json.loads(r["detail"] or "{}")
            return {"schedule_id": r["schedule_id"], "version": r["version"],
                    "start": _iso(r["start"]), "end": _iso(end), "period_s": r["period_s"],
                    "released_at": _iso(r["ts"]), "released_by": r["by"],
                    "pumps": detail.get("pumps", [])}
    return None


__all__ = ["ScheduleStream", "approve", "end_of", "in_force", "list_schedules",
           "projection", "schedule_detail"]
