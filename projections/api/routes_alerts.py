"""``/v1/alerts``: the tenant's open and recent alerts (read), acknowledging (operate).

``GET /v1/alerts?state=open|all&days=7&limit=200`` reads the QuestDB ``alerts`` table:
every open alert, then those cleared within ``days``.  ``POST /v1/alerts/{id}/ack``
(``{"comment": "..."}`` optional) publishes ``alert.acknowledged`` once: it checks the
alert against the ALERT stream itself (so an alert raised a moment ago can be
acknowledged before QuestDB shows it), 404 for an unknown alert, 409 for one that is
pending or cleared, 200 ``already acknowledged`` the second time.  It needs the
JetStream connection of the serving process (the one its task desk uses).
"""

from __future__ import annotations

import re
from datetime import timedelta

import msgspec
from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.base import utc_now
from contracts.errors import ContractError, TenantConfigError
from projections import alerts
from projections.api.auth import caller, reader_tenant
from projections.api.errors import InvalidParameter, error_response, json_response
from projections.api.models import ERRORS

router = APIRouter(prefix="/v1/alerts", responses=ERRORS)


class CommentIn(msgspec.Struct, forbid_unknown_fields=True):
    comment: str = ""


async def comment_of(request: Request) -> str:
    """The optional body of an operator's action (acknowledge, approve): nothing, or
    ``{"comment": "..."}``; anything else is a 422 that says so."""
    raw = await request.body()
    try:
        body = msgspec.json.decode(raw, type=CommentIn) if raw.strip() else CommentIn()
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise InvalidParameter("body", f"expected {{\"comment\": \"...\"}} or nothing: {e}") \
            from None
    return body.comment


def check_alert_id(alert_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f-]{36}", alert_id or ""):
        raise InvalidParameter("alert_id", f"expected an alert id (a UUID), got "
                                           f"{alert_id[:40]!r}")
    return alert_id


def _jetstream(request: Request):
    for name in ("tasks", "config_store"):
        js = getattr(getattr(request.app.state, name, None), "js", None)
        if js is not None:
            return js
    raise TenantConfigError("this API process cannot acknowledge alerts (started without "
                            "a NATS connection)")


@router.get("", summary="Open alerts, then those cleared within `days`, newest first")
async def list_alerts(request: Request, tenant: str = Depends(reader_tenant),
                      state: str = Query("all", pattern="^(open|all)$"),
                      days: float = Query(7.0, gt=0, le=400),
                      limit: int = Query(200, ge=1, le=5000)):
    async with request.app.state.db.session(tenant) as conn:
        rows = await alerts.list_alerts(conn, tenant, since=utc_now() - timedelta(days=days),
                                        open_only=state == "open", limit=limit)
    return json_response({"tenant": tenant, "alerts": rows})


@router.post("/{alert_id}/ack", summary="Acknowledge an open alert (operate scope)")
async def acknowledge(request: Request, alert_id: str = PathParam(),
                      who=Depends(caller("operate"))):
    check_alert_id(alert_id)
    comment = await comment_of(request)
    stream = getattr(request.app.state, "alert_stream", None)
    if stream is None:
        stream = request.app.state.alert_stream = alerts.AlertStream()
    try:
        status, event = await alerts.acknowledge(_jetstream(request), stream, who.tenant,
                                                 alert_id, by=who.name, comment=comment)
    except ContractError as e:
        return error_response(409, "conflict", str(e))
    return json_response({"alert_id": alert_id, "by": who.name,
                          "status": "acknowledged" if event else "already acknowledged"})
