"""``/v1/config/{kind}``: the tenant's configuration, its history, and changes (admin).

Reads need ``read``; ``PUT`` needs ``admin`` and ``If-Match: <version>`` (the version the
change was made against, as ``GET`` returned it in ``ETag``): a stale change is refused
with 409 and the current version; a document equal to the current one is not a new
version.  JSON documents for tenant, assets, tariff, rules, schedules, chains; the
``.inp`` text (``text/plain``) for the network, YAML text for ``mapping-<id>``.

The store (``app.state.config_store``) is injected by the process that serves the API:
anything with ``current``, ``history``, ``body`` and ``put`` as ``ops.config_service``
has them (validation needs the network model, which this package does not import).
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Header, Path as PathParam, Query, Request

from contracts.config import check_kind
from contracts.errors import ContractError, NotFoundError, TagusError, TenantConfigError
from projections.api.auth import caller
from projections.api.errors import InvalidParameter, error_response, json_response
from projections.api.models import ERRORS

router = APIRouter(prefix="/v1/config", responses=ERRORS)
Kind = PathParam(description="tenant, network, assets, tariff, rules, schedules, chains, "
                             "tokens (read only here), mapping-<id>")
MAX_BODY = 20 * 1024 * 1024


def _store(request: Request):
    store = getattr(request.app.state, "config_store", None)
    if store is None:
        raise TenantConfigError("this API process serves no configuration (started without "
                                "a NATS connection)")
    return store


def _kind(kind: str) -> str:
    try:
        return check_kind(kind)
    except (ContractError, TenantConfigError) as e:
        raise InvalidParameter("kind", str(e)) from None


def _meta(e) -> dict[str, Any]:
    return {"kind": e.kind, "version": e.version, "recorded_at": e.recorded_at.isoformat(),
            "author": e.author, "reason": e.reason, "sha256": e.sha256,
            "summary": e.summary, "warnings": e.warnings}


@router.get("/{kind}", summary="The current version of one kind of configuration")
async def get_config(request: Request, kind: str = Kind, who=Depends(caller("read"))):
    kind = _kind(kind)
    store = _store(request)
    stored = await store.current(who.tenant, kind)
    if stored is None:
        raise NotFoundError(f"tenant {who.tenant!r} has no {kind} configured")
    e = stored.event
    body: dict[str, Any] = _meta(e)
    if e.document is not None:
        body["document"] = e.document
    else:
        body["text"] = await store.body(e)
    return json_response(body, headers={"ETag": f'"{e.version}"'})


@router.get("/{kind}/history", summary="Every version: who, when, why")
async def config_history(request: Request, kind: str = Kind, who=Depends(caller("read")),
                         limit: int = Query(100, ge=1, le=10_000)):
    kind = _kind(kind)
    history = await _store(request).history(who.tenant, kind)
    return json_response({"tenant": who.tenant, "kind": kind,
                          "versions": [_meta(s.event) for s in history[-limit:]]})


@router.put("/{kind}", summary="A new version (admin scope; If-Match: the version it was "
                               "made against)")
async def put_config(request: Request, kind: str = Kind, who=Depends(caller("admin")),
                     if_match: str | None = Header(None, alias="If-Match"),
                     reason: str = Query("", max_length=500,
                                         description="why (recorded with the change)")):
    kind = _kind(kind)
    if kind == "tokens":
        raise InvalidParameter("kind", "tokens are issued and revoked with `tagus token`, "
                                       "never uploaded (only their hashes are stored)")
    if if_match is None:
        return error_response(428, "precondition required",
                              "send If-Match with the version the change was made against "
                              "(the ETag of GET /v1/config/{kind}; 0 for a first version)")
    try:
        expected = int(if_match.strip().strip('"').removeprefix("W/").strip('"'))
    except ValueError:
        raise InvalidParameter("If-Match", f"expected a version number, got {if_match[:40]!r}") \
            from None
    raw = await _body(request)
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media == "application/json":
        try:
            body: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError as e:
            raise InvalidParameter("body", f"not JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidParameter("body", "expected a JSON object")
    else:
        body = raw
    store = _store(request)
    try:
        change = await store.put(who.tenant, kind, body, author=who.name, reason=reason,
                                 expected_version=expected)
    except TenantConfigError as e:
        return error_response(422, "invalid", str(e))
    except TagusError as e:
        current = getattr(e, "current", None)
        if current is None:
            raise
        return json_response({"error": "conflict", "detail": str(e), "current_version": current},
                             409, {"ETag": f'"{current}"'})
    if change is None:
        stored = await store.current(who.tenant, kind)
        return json_response({"status": "unchanged", "version": stored.event.version},
                             headers={"ETag": f'"{stored.event.version}"'})
    return json_response({"status": "changed", **_meta(change)},
                         headers={"ETag": f'"{change.version}"'})


async def _body(request: Request) -> bytes:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > MAX_BODY:
            raise InvalidParameter("body", f"larger than {MAX_BODY // 2**20} MiB")
    if not buf:
        raise InvalidParameter("body", "empty: send the new document")
    return bytes(buf)
