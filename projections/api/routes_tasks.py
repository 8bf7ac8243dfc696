"""``/v1/tasks``: the tenant's tasks, one task's transitions, and requests (operate scope).

Listing and showing read the QuestDB ``tasks`` table (read scope).  ``POST /v1/tasks``
(``{"kind", "params", "time_limit_s"}``) and ``POST /v1/tasks/{id}/cancel`` need the
``operate`` scope and go through the task desk the serving process injects
(``app.state.tasks``: ``request(...)``, ``cancel(...)``, as ``ops.task_service`` has them).
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.errors import NotFoundError, TenantConfigError
from projections.api import queries
from projections.api.auth import caller, reader_tenant
from projections.api.errors import InvalidParameter, error_response, json_response
from projections.api.models import ERRORS

router = APIRouter(prefix="/v1/tasks", responses=ERRORS)


class TaskIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    params: dict[str, Any] = {}
    time_limit_s: float | None = None


def _desk(request: Request):
    desk = getattr(request.app.state, "tasks", None)
    if desk is None:
        raise TenantConfigError("this API process takes no task requests (started without "
                                "a NATS connection)")
    return desk


@router.get("", summary="The tenant's latest tasks and their states")
async def list_tasks(request: Request, tenant: str = Depends(reader_tenant),
                     limit: int = Query(50, ge=1, le=1000),
                     kind: str | None = Query(None, max_length=64),
                     state: str | None = Query(None, max_length=32)):
    async with request.app.state.db.session(tenant) as conn:
        rows = await queries.tasks(conn, tenant, limit=limit, kind=kind, state=state)
    return json_response({"tenant": tenant, "tasks": rows})


@router.get("/{task_id}", summary="One task's transitions: requested, started, progress, "
                                  "outcome")
async def show_task(request: Request, task_id: str = PathParam(),
                    tenant: str = Depends(reader_tenant)):
    queries.check_task_id(task_id)
    async with request.app.state.db.session(tenant) as conn:
        rows = await queries.task(conn, tenant, task_id)
    if not rows:
        raise NotFoundError(f"no task {task_id} for tenant {tenant!r}")
    return json_response({"tenant": tenant, "task_id": task_id, "transitions": rows})


@router.post("", status_code=202, summary="Request a task now (operate scope)")
async def request_task(request: Request, who=Depends(caller("operate"))):
    try:
        body = msgspec.json.decode(await request.body(), type=TaskIn)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise InvalidParameter("body", f"expected {{\"kind\": ..., \"params\": {{...}}}}: {e}") \
            from None
    try:
        event = await _desk(request).request(who.tenant, body.kind, body.params,
                                             requested_by=who.name,
                                             time_limit_s=body.time_limit_s)
    except TenantConfigError as e:
        return error_response(422, "invalid", str(e))
    return json_response({"task_id": event.event_id, "kind": event.kind,
                          "status": "requested"}, 202)


@router.post("/{task_id}/cancel", status_code=202, summary="Cancel a queued or running "
                                                           "task (operate scope)")
async def cancel_task(request: Request, task_id: str = PathParam(),
                      reason: str = Query("", max_length=500), who=Depends(caller("operate"))):
    queries.check_task_id(task_id)
    before = await _desk(request).cancel(who.tenant, task_id, by=who.name, reason=reason)
    return json_response({"task_id": task_id, "was": before or "queued",
                          "status": "cancel requested" if before not in
                          ("completed", "failed", "cancelled") else "already finished"}, 202)
