"""``/config``: the tenant's configuration documents, their history and what each version
changed; edits with the admin scope (conditional on the version they were made against,
validated as ``PUT /v1/config/{kind}`` does)."""

from __future__ import annotations

import yaml
from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from bus import config_log
from contracts.config import check_kind
from contracts.errors import ContractError, NotFoundError, TagusError, TenantConfigError
from projections.api.errors import InvalidParameter
from projections.api.routes_config import _store
from projections.console import web
from projections.console.session import Operator, check_csrf, operator, require

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
NOT_EDITED_HERE = {"tokens": "tokens are issued and revoked with `tagus token`",
                   "network": "a network model is a file: `tagus config put network FILE.inp` "
                              "or PUT /v1/config/network"}


def _kind(kind: str) -> str:
    try:
        return check_kind(kind)
    except (ContractError, TenantConfigError) as e:
        raise InvalidParameter("kind", str(e)) from None


async def _text(store, event) -> str:
    """The document as people read it: YAML (tokens without their hashes), or the file."""
    if event.kind == "tokens" and event.document is not None:
        shown = [{k: v for k, v in t.items() if k != "sha256"}
                 for t in event.document.get("tokens", [])]
        return yaml.safe_dump({"tokens": shown}, sort_keys=True, allow_unicode=True)
    if hasattr(store, "render"):
        return await store.render(event)
    return yaml.safe_dump(event.document, sort_keys=True) if event.document is not None \
        else (await store.body(event) or "")


@router.get("/config")
async def config_index(request: Request, who: Operator = Depends(operator)):
    store = _store(request)
    kinds = await config_log.kinds(store.js, who.tenant)
    docs = []
    for kind in sorted(kinds):
        current = await store.current(who.tenant, kind)
        if current is not None:
            docs.append(current.event)
    return await web.render(request, who, "config.html", page="config", docs=docs)


@router.get("/config/{kind}")
async def config_kind(request: Request, kind: str = PathParam(),
                      who: Operator = Depends(operator),
                      a: int | None = Query(None, ge=1, alias="from"),
                      b: int | None = Query(None, ge=1, alias="to")):
    kind = _kind(kind)
    store = _store(request)
    current = await store.current(who.tenant, kind)
    if current is None:
        raise NotFoundError(f"tenant {who.tenant!r} has no {kind} configured")
    history = await store.history(who.tenant, kind)
    diff = None
    if (a is None or b is None) and len(history) >= 2:  # what the last change changed
        a, b = history[-2].event.version, history[-1].event.version
    if a is not None and b is not None and kind != "tokens" and hasattr(store, "diff"):
        diff = (await store.diff(who.tenant, kind, a, b)).splitlines()[:3000]
    text = await _text(store, current.event)
    return await web.render(
        request, who, "config_kind.html", page="config", kind=kind, current=current.event,
        history=[s.event for s in reversed(history)], text=text, diff=diff, a=a, b=b,
        editable=kind not in NOT_EDITED_HERE, why_not=NOT_EDITED_HERE.get(kind, ""))


@router.post("/config/{kind}")
async def config_edit(request: Request, kind: str = PathParam(),
                      who: Operator = Depends(operator)):
    kind = _kind(kind)
    fields = await web.form(request)
    check_csrf(request, who, fields.get("csrf"))
    require(request, who, "admin")
    if kind in NOT_EDITED_HERE:
        raise InvalidParameter("kind", NOT_EDITED_HERE[kind])
    try:
        expected = int(fields.get("version", ""))
    except ValueError:
        raise InvalidParameter("version", "the form lost the version it was made "
                                          "against: reload the page") from None
    text = fields.get("text", "")
    if not text.strip():
        raise InvalidParameter("text", "empty: write the new document")
    try:
        change = await _store(request).put(who.tenant, kind, text, author=who.name,
                                           reason=fields.get("reason", "")[:500],
                                           expected_version=expected)
    except TenantConfigError as e:
        raise InvalidParameter(kind, str(e)) from None
    except TagusError as e:
        if getattr(e, "current", None) is None:
            raise
        raise ContractError(f"somebody saved version {e.current} of {kind} after you opened "
                            f"it (you edited version {expected}): reload, reapply your "
                            "change, save again") from None
    if change is None:
        return web.redirect(f"/config/{kind}", "Unchanged: the same document as the "
                                               "current version.")
    return web.redirect(f"/config/{kind}", f"Saved as version {change.version}.")
