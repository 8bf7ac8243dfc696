"""``/v1/intakes``, ``/v1/intakes/{intake_id}/rejections``: each upload's accounting."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.errors import NotFoundError
from projections.api import queries
from projections.api.auth import reader_tenant
from projections.api.errors import json_response
from projections.api.models import ERRORS

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.get("/intakes", summary="The tenant's latest uploads and what each gave")
async def intakes(request: Request, tenant: str = Depends(reader_tenant),
                  limit: int = Query(50, ge=1, le=1000)):
    """Per upload: status (parsed / failed), rows and values received, accepted, rejected
    and missing (received = accepted + rejected + missing), reasons with counts."""
    async with request.app.state.db.session(tenant) as conn:
        rows = await queries.intakes(conn, tenant, limit)
    return json_response({"tenant": tenant, "intakes": rows})


@router.get("/intakes/{intake_id}/rejections",
            summary="What one upload did not accept, and why")
async def intake_rejections(request: Request,
                            intake_id: str = PathParam(description="As in GET /v1/intakes"),
                            tenant: str = Depends(reader_tenant),
                            limit: int = Query(1000, ge=1, le=100_000)):
    queries.check_intake_id(intake_id)
    async with request.app.state.db.session(tenant) as conn:
        if not await queries.intake_exists(conn, tenant, intake_id):
            raise NotFoundError(f"no upload {intake_id} for tenant {tenant!r}; "
                                "GET /v1/intakes lists them")
        rows = await queries.intake_rejections(conn, tenant, intake_id, limit)
    return json_response({"tenant": tenant, "intake_id": intake_id, "rejections": rows})
