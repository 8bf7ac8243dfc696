"""``/v1/simulations``: runs of the digital twin (task ``simulate``), read scope.

- ``GET /v1/simulations?days=7&limit=50``: one line per simulation recorded within
  ``days``, newest first: start, end, scenario in short, energy, cost, warnings counted,
  days calibrated.
- ``GET /v1/simulations/latest``: the newest simulation in full (404 when none).
- ``GET /v1/simulations/{id}``: one simulation: scenario, warnings, calibration (per tank
  and pump: simulated minus measured), inputs, and per period the tank levels, the pumps'
  status, speed, flow, head, power, energy and cost, each zone's minimum pressure.
"""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request

from contracts.base import utc_now
from contracts.errors import NotFoundError
from projections import simulations
from projections.api.auth import reader_tenant
from projections.api.errors import InvalidParameter, json_response
from projections.api.models import ERRORS

router = APIRouter(prefix="/v1/simulations", responses=ERRORS)
_ID = re.compile(r"[0-9a-f-]{36}")


def check_simulation_id(simulation_id: str) -> str:
    if not _ID.fullmatch(simulation_id or ""):
        raise InvalidParameter("simulation_id", f"expected a simulation id (a UUID), got "
                                                f"{simulation_id[:40]!r}")
    return simulation_id


@router.get("", summary="Simulations recorded within `days`, newest first")
async def list_simulations(request: Request, tenant: str = Depends(reader_tenant),
                           days: float = Query(7.0, gt=0, le=3660),
                           limit: int = Query(50, ge=1, le=500)):
    async with request.app.state.db.session(tenant) as conn:
        rows = await simulations.list_simulations(conn, tenant,
                                                  since=utc_now() - timedelta(days=days),
                                                  limit=limit)
    return json_response({"tenant": tenant, "simulations": rows})


@router.get("/latest", summary="The newest simulation, in full")
async def latest_simulation(request: Request, tenant: str = Depends(reader_tenant)):
    async with request.app.state.db.session(tenant) as conn:
        found = await simulations.latest_id(conn, tenant)
        if found is None:
            raise NotFoundError(f"no simulation for tenant {tenant!r} yet")
        detail = await simulations.simulation_detail(conn, tenant, found)
    return json_response({"tenant": tenant, **detail})


@router.get("/{simulation_id}", summary="One simulation: scenario, warnings, calibration "
                                        "and its series per period")
async def simulation(request: Request, simulation_id: str = PathParam(),
                     tenant: str = Depends(reader_tenant)):
    check_simulation_id(simulation_id)
    async with request.app.state.db.session(tenant) as conn:
        detail = await simulations.simulation_detail(conn, tenant, simulation_id)
    return json_response({"tenant": tenant, **detail})
