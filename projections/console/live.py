"""What the pages poll (``/console/live``: the latest schedule proposed, open alerts) and
plotly.js, served from the installed ``plotly`` package (no CDN: control rooms often
have no internet)."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
from datetime import timedelta
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from contracts.base import utc_now
from projections import alerts, schedules
from projections.api import queries
from projections.api.errors import json_response
from projections.console import page_schedule, web
from projections.console.session import Operator, operator

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
_WHAT_IF: dict[tuple[str, str], bool] = {}  # (tenant, schedule) -> a what-if's; never changes


async def _is_what_if(conn, tenant: str, schedule_id: str) -> bool | None:
    """Whether a what-if run proposed the schedule (remembered once its task is known;
    None while it is not)."""
    key = (tenant, schedule_id)
    if key not in _WHAT_IF:
        task_id = (await schedules.schedule_detail(conn, tenant, schedule_id)).get(
            "plan", {}).get("task_id")
        if not task_id or not await queries.task(conn, tenant, task_id):
            return None  # its task is not projected yet: ask again at the next poll
        _WHAT_IF[key] = bool(await page_schedule.what_if_of(conn, tenant, task_id))
        while len(_WHAT_IF) > 2000:
            _WHAT_IF.pop(next(iter(_WHAT_IF)))
    return _WHAT_IF[key]


@router.get("/console/live")
async def live(request: Request, who: Operator = Depends(operator)):
    now = utc_now()
    async with request.app.state.db.session(who.tenant) as conn:
        recent = await schedules.list_schedules(conn, who.tenant,
                                                since=now - timedelta(days=2), limit=1)
        open_alerts = await alerts.list_alerts(conn, who.tenant, since=now, open_only=True,
                                               limit=500)
        what_if = (await _is_what_if(conn, who.tenant, recent[0]["schedule_id"])
                   if recent else False)
    newest = max(open_alerts, key=lambda a: a["raised_at"] or "", default=None)
    zone = (await web.tenant_facts(request, who.tenant))["zone"] if recent else "UTC"
    return json_response({
        "latest_schedule": recent[0]["schedule_id"] if recent else None,
        "latest_schedule_state": recent[0]["state"] if recent else None,
        "latest_schedule_at": (web.local(recent[0]["proposed_at"], zone) + f" ({zone})"
                               if recent else None),
        "latest_schedule_what_if": what_if,
        "open_alerts": len(open_alerts),
        "latest_alert": newest["alert_id"] if newest else None,
        "latest_alert_at": newest["raised_at"] if newest else None,
        "latest_alert_message": newest["message"] if newest else None},
        headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- plotly.js


def plotly_version() -> str | None:
    try:
        return version("plotly")
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _plotly_bytes() -> tuple[bytes, bytes]:
    """(plain, gzipped) plotly.min.js from the plotly package's data, read once."""
    spec = importlib.util.find_spec("plotly")  # the file only: plotly itself is not imported
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"
    raw = path.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)


def plotly_url() -> str:
    return f"/console/vendor/plotly-{plotly_version() or 'missing'}.min.js"


@router.get("/console/vendor/plotly-{tag}.min.js")
async def plotly_js(request: Request, tag: str):
    try:
        raw, packed = await asyncio.to_thread(_plotly_bytes)  # 4-5 MB, read once
    except FileNotFoundError as e:
        return Response(f"/* {e}: pip install plotly */", media_type="text/javascript",
                        status_code=404)
    headers = {"Cache-Control": "public, max-age=31536000, immutable",
               "X-Content-Type-Options": "nosniff", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type="text/javascript", headers=headers)
    return Response(raw, media_type="text/javascript", headers=headers)
