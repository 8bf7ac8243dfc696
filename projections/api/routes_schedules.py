"""``/v1/schedules``: pump schedules proposed by the optimiser (read) and approving one
in advisory mode (operate).

- ``GET /v1/schedules?days=7&limit=100``: one line per schedule proposed within ``days``:
  state (proposed, approved, released, acknowledged), verified, cost, baseline cost,
  saving, start and end, version released, deviations counted.
- ``GET /v1/schedules/in-force?at=ISO``: the released schedule to run now (or at ``at``):
  the latest version whose horizon covers it, 404 when none does; what a SCADA gateway
  fetches when it (re)connects, since NATS and MQTT deliver releases only while connected.
- ``GET /v1/schedules/{id}``: the plan (per pump and period: speed and the reason in
  words), EPANET's tank levels against their bounds, feasibility, solver figures, the
  inputs (forecast issued at, initial levels, config versions, prices), its history.
- ``GET /v1/schedules/{id}.csv``: the plan as CSV (period start, one column per pump).
- ``POST /v1/schedules/{id}/approve`` (``{"comment": "..."}`` optional): publishes
  ``schedule.approved`` once and requests ``schedule.release``; 404 unknown, 409 not
  verified by EPANET or in the past, 200 ``already`` the second time.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request
from fastapi.responses import Response

from contracts.base import utc_now
from contracts.errors import ContractError, NotFoundError
from projections import schedules
from projections.api.auth import caller, reader_tenant
from projections.api.errors import InvalidParameter, error_response, json_response
from projections.api.models import ERRORS
from projections.api.routes_alerts import _jetstream, comment_of
from projections.api.routes_tasks import _desk

router = APIRouter(prefix="/v1/schedules", responses=ERRORS)
_ID = re.compile(r"[0-9a-f-]{36}")


def check_schedule_id(schedule_id: str) -> str:
    if not _ID.fullmatch(schedule_id or ""):
        raise InvalidParameter("schedule_id", f"expected a schedule id (a UUID), got "
                                              f"{schedule_id[:40]!r}")
    return schedule_id


@router.get("", summary="Schedules proposed within `days`, newest first")
async def list_schedules(request: Request, tenant: str = Depends(reader_tenant),
                         days: float = Query(7.0, gt=0, le=3660),
                         limit: int = Query(100, ge=1, le=2000)):
    async with request.app.state.db.session(tenant) as conn:
        rows = await schedules.list_schedules(conn, tenant,
                                              since=utc_now() - timedelta(days=days),
                                              limit=limit)
    return json_response({"tenant": tenant, "schedules": rows})


@router.get("/in-force", summary="The released schedule to run now (or at `at`)")
async def schedule_in_force(request: Request, tenant: str = Depends(reader_tenant),
                            at: str | None = Query(None, max_length=40)):
    when = utc_now()
    if at:
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidParameter("at", f"expected an ISO time, got {at!r}") from None
        if when.tzinfo is None:
            raise InvalidParameter("at", "give a zone (e.g. 2019-01-15T03:00Z)")
    async with request.app.state.db.session(tenant) as conn:
        current = await schedules.in_force(conn, tenant, when)
    if current is None:
        raise NotFoundError(f"no released schedule covers {when.isoformat()} for tenant "
                            f"{tenant!r}")
    return json_response({"tenant": tenant, **current})


@router.get("/{schedule_id}.csv", summary="A schedule's plan as CSV: period start (UTC), "
                                          "one column of relative speed per pump")
async def schedule_csv(request: Request, schedule_id: str = PathParam(),
                       tenant: str = Depends(reader_tenant)):
    check_schedule_id(schedule_id)
    async with request.app.state.db.session(tenant) as conn:
        detail = await schedules.schedule_detail(conn, tenant, schedule_id)
    return Response(plan_csv(detail), media_type="text/csv; charset=utf-8")


@router.get("/{schedule_id}", summary="One schedule: plan, tank levels, feasibility, "
                                      "inputs, history")
async def show_schedule(request: Request, schedule_id: str = PathParam(),
                        tenant: str = Depends(reader_tenant)):
    check_schedule_id(schedule_id)
    async with request.app.state.db.session(tenant) as conn:
        detail = await schedules.schedule_detail(conn, tenant, schedule_id)
    return json_response({"tenant": tenant, **detail})


@router.post("/{schedule_id}/approve", summary="Approve a verified schedule and release it "
                                               "to SCADA (operate scope)")
async def approve(request: Request, schedule_id: str = PathParam(),
                  who=Depends(caller("operate"))):
    check_schedule_id(schedule_id)
    comment = await comment_of(request)
    try:
        status = await approve_and_release(request, who.tenant, schedule_id, by=who.name,
                                           comment=comment)
    except ContractError as e:
        return error_response(409, "conflict", str(e))
    return json_response({"schedule_id": schedule_id, "by": who.name,
                          "status": "approved: release requested" if status == "approved"
                          else "already approved"})


async def approve_and_release(request: Request, tenant: str, schedule_id: str, *, by: str,
                              comment: str = "") -> str:
    """``schedules.approve`` with the release requested through the task desk (the API's
    and the console's Approve): "approved" or "already"; ContractError for a schedule
    that is not released (unverified, past, a what-if)."""
    desk = _desk(request)
    stream = getattr(request.app.state, "schedule_stream", None)
    if stream is None:
        stream = request.app.state.schedule_stream = schedules.ScheduleStream()

    async def release(tenant: str, sid: str, by: str) -> None:
        await desk.request(tenant, "schedule.release", {"schedule_id": sid, "approved_by": by},
                           requested_by=by)

    status, _ = await schedules.approve(_jetstream(request), stream, tenant, schedule_id,
                                        by=by, comment=comment, request_release=release)
    return status


def plan_csv(detail: dict) -> str:
    """``period_start,<pump>,...`` rows of relative speed (0 = off)."""
    pumps = detail.get("plan", {}).get("pumps", [])
    start = datetime.fromisoformat(detail["start"].replace("Z", "+00:00"))
    period = timedelta(seconds=detail["period_s"])
    lines = ["period_start," + ",".join(p["pump"] for p in pumps)]
    for k in range(len(pumps[0]["speeds"]) if pumps else 0):
        t = (start + k * period).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(t + "," + ",".join(f"{p['speeds'][k]:g}" for p in pumps))
    return "\n".join(lines) + "\n"
