"""Operators and tasks: request, list, show, cancel, wait with progress (CLI and API).

Requests are ``task.requested`` events on the TASKS stream; what happened to them is the
QuestDB ``tasks`` table (one row per transition) and, for one task, its events.
"""

from __future__ import annotations

import time
from typing import Any

from bus import config_view
from bus.publish import publish
from bus.subjects import stream_name, tenant_subjects
from bus.tasks import FINISHED, TaskStates, request_cancel
from contracts.base import new_id, utc_now, validate_tenant
from contracts.errors import NotFoundError, TenantConfigError
from contracts.tasks import PINNED_KINDS, TASK_KINDS, TaskRequested



async def request_task(js, tenant: str, kind: str, params: dict[str, Any] | None = None, *,
                       requested_by: str, time_limit_s: float | None = None,
                       known_kinds=None) -> TaskRequested:
    """Publish an on-demand request, pinning the configuration versions in force now."""
    validate_tenant(tenant)
    kinds = known_kinds if known_kinds is not None else TASK_KINDS
    if kind not in kinds:
        raise TenantConfigError(f"unknown task kind {kind!r}; kinds: {', '.join(sorted(kinds))}")
    tenant_doc = await config_view.current(js, tenant, "tenant")
    if tenant_doc is None:
        raise NotFoundError(f"tenant {tenant!r} is not configured (`tagus tenant create`)")
    versions = {}
    for k in PINNED_KINDS:
        held = await config_view.current(js, tenant, k)
        if held is not None:
            versions[k] = held.version
    now = utc_now()
    event = TaskRequested(event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now,
                          kind=kind, params=dict(params or {}), requested_by=requested_by,
                          config_versions=versions, time_limit_s=time_limit_s)
    await publish(js, event)
    return event


async def cancel(js, tenant: str, task_id: str, *, by: str, reason: str = "") -> str:
    state, _ = await TaskStates(js).get(tenant, task_id)
    kind = await _kind_of(js, tenant, task_id)
    if kind is None:
        raise NotFoundError(f"no task {task_id} for tenant {tenant!r}")
    before = await request_cancel(js, tenant, task_id, kind, by=by, reason=reason)
    return before


async def _kind_of(js, tenant: str, task_id: str) -> str | None:
    events = await task_events(js, tenant, task_id)
    return events[0].kind if events else None


async def task_events(js, tenant: str, task_id: str) -> list:
    """Every event of one task, in order (read from the TASKS stream)."""
    from contracts.registry import decode

    sub = await js.subscribe(tenant_subjects("task", tenant), ordered_consumer=True)
    out = []
    try:
        info = await js.stream_info(stream_name("task"), subjects_filter=tenant_subjects("task", tenant))
        total = sum((info.state.subjects or {}).values())
        seen = 0
        while seen < total:
            try:
                msg = await sub.next_msg(timeout=2)
            except Exception:  # noqa: BLE001 - nothing more
                break
            seen += 1
            e = decode("task", msg.data)
            if e.event_id == task_id or getattr(e, "task_id", None) == task_id:
                out.append(e)
    finally:
        await sub.unsubscribe()
    return out


async def wait(js, tenant: str, task_id: str, *, timeout_s: float, on_progress=None):
    """The task's outcome event, waiting for it; ``on_progress(fraction, message)``."""
    from contracts.registry import decode
    from contracts.tasks import TaskProgressed

    sub = await js.subscribe(tenant_subjects("task", tenant), ordered_consumer=True)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - timed out
                break
            e = decode("task", msg.data)
            if getattr(e, "task_id", None) != task_id:
                continue
            if isinstance(e, TaskProgressed) and on_progress:
                on_progress(e.fraction, e.message)
            if type(e).__name__ in ("TaskCompleted", "TaskFailed", "TaskCancelled"):
                return e
    finally:
        await sub.unsubscribe()
    raise TimeoutError(f"task {task_id} has no outcome after {timeout_s:g} s (still "
                       f"queued or running: `tagus tasks show {task_id}`)")


class TaskDesk:
    """What the API's task routes need, over one JetStream context."""

    def __init__(self, js) -> None:
        self.js = js

    async def request(self, tenant: str, kind: str, params: dict, *, requested_by: str,
                      time_limit_s: float | None = None) -> TaskRequested:
        return await request_task(self.js, tenant, kind, params, requested_by=requested_by,
                                  time_limit_s=time_limit_s)

    async def cancel(self, tenant: str, task_id: str, *, by: str, reason: str = "") -> str:
        return await cancel(self.js, tenant, task_id, by=by, reason=reason)


__all__ = ["FINISHED", "TaskDesk", "cancel", "request_task", "task_events", "wait"]
