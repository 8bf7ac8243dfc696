"""``/tasks``: the tenant's tasks (state, progress, failures), one task's transitions,
requesting a task and cancelling one (operate scope)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.tasks import TASK_KINDS
from projections.api import queries
from projections.api.errors import InvalidParameter
from projections.api.routes_tasks import _desk
from projections.console import web
from projections.console.session import Operator, check_csrf, operator, require

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
# released only through an approval (or the tenant's automatic mode); no worker for simulate
NOT_ON_DEMAND = ("schedule.release", "simulate")


def requestable() -> dict[str, str]:
    return {k: v for k, v in TASK_KINDS.items() if k not in NOT_ON_DEMAND}


@router.get("/tasks")
async def tasks(request: Request, who: Operator = Depends(operator),
                task: str | None = Query(None, max_length=40),
                state: str | None = Query(None, max_length=32)):
    async with request.app.state.db.session(who.tenant) as conn:
        rows = await queries.tasks(conn, who.tenant, limit=100, state=state or None)
        transitions = await queries.task(conn, who.tenant, task) if task else None
    context = {"rows": rows, "task": task, "transitions": transitions, "state": state or "",
               "kinds": requestable()}
    template = "tasks_live.html" if web.fragment(request) else "tasks.html"
    return await web.render(request, who, template, page="tasks", **context)


@router.post("/tasks")
async def request_task(request: Request, who: Operator = Depends(operator)):
    fields = await web.form(request)
    check_csrf(request, who, fields.get("csrf"))
    require(request, who, "operate")
    kind = fields.get("kind", "")
    if kind not in requestable():
        raise InvalidParameter("kind", f"expected one of {', '.join(requestable())}")
    try:
        params = json.loads(fields.get("params") or "{}")
    except json.JSONDecodeError as e:
        raise InvalidParameter("params", f"not JSON: {e}") from None
    if not isinstance(params, dict):
        raise InvalidParameter("params", "expected a JSON object such as {\"horizon_h\": 24}")
    limit = fields.get("time_limit_s", "").strip()
    try:
        time_limit_s = float(limit) if limit else None
    except ValueError:
        raise InvalidParameter("time_limit_s", f"expected seconds, got {limit[:20]!r}") \
            from None
    event = await _desk(request).request(who.tenant, kind, params, requested_by=who.name,
                                         time_limit_s=time_limit_s)
    return web.redirect(f"/tasks?task={event.event_id}", f"Requested {kind}.")


@router.post("/tasks/{task_id}/cancel")
async def cancel(request: Request, task_id: str = PathParam(),
                 who: Operator = Depends(operator)):
    queries.check_task_id(task_id)
    fields = await web.form(request)
    check_csrf(request, who, fields.get("csrf"))
    require(request, who, "operate")
    before = await _desk(request).cancel(who.tenant, task_id, by=who.name,
                                         reason=fields.get("reason", "")[:500])
    done = before in ("completed", "failed", "cancelled")
    return web.redirect(f"/tasks?task={task_id}", "It had finished already." if done
                        else "Cancel requested.")
