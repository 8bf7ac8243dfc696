"""A chain from a reading to a downstream task: a tenant's rule requests the data
completeness KPI when its tank levels arrive; the task runs, the KPI is computed, one
correlation id from the upload to the KPI (issue 9)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from contracts.registry import decode
from contracts.tasks import TaskCompleted, TaskRequested
from ops.config_service import ConfigStore
from ops.ingest import ingest
from ops.serving import api_config
from ops.task_service import TaskDesk
from projections.api import create_app
from tests.conftest import REPO
from tests.helpers import stream_messages

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"


async def test_tank_levels_chain_to_the_completeness_kpi(nc, fast_settings, shared_data):
    tenant = f"chain-{uuid.uuid4().hex[:6]}"
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="L-Town", timezone="Europe/Nicosia",
                              author="test")
    from ops.ingest import register_mapping

    await register_mapping(nc, tenant, MAPPINGS / "battledim_levels.yaml", "levels")
    await store.put(tenant, "network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes(),
                    author="test")
    await store.put(tenant, "assets", {"bindings": [
        {"sensor": "T1", "role": "tank_level", "element": "T1"}]}, author="test")
    await store.put(tenant, "chains", {"rules": [{
        "name": "levels-to-completeness", "on": "readings.normalised",
        "where": {"bound_role": "tank_level"}, "request": "data.completeness",
        "params": {"day": "2019-01-02"}, "debounce_s": 86400, "delay_s": 3}]},
        author="test")

    # the upload, then every component of the deployment until all is caught up
    result = await ingest(fast_settings, shared_data / "battledim" / "2019-01_SCADA_Levels.csv",
                          tenant, MAPPINGS / "battledim_levels.yaml", process="yes",
                          progress=False, timeout_s=300)
    assert type(result.outcome).__name__ == "IntakeParsed"
    intake_id = result.intake.event_id

    tasks = [decode("task", m.data) for m in await stream_messages(nc, "TASKS")]
    (requested,) = [e for e in tasks if isinstance(e, TaskRequested)]
    assert requested.requested_by == "chain:levels-to-completeness"
    assert requested.kind == "data.completeness" and requested.correlation_id == intake_id
    assert requested.config_versions["assets"] == 1
    (done,) = [e for e in tasks if isinstance(e, TaskCompleted)]
    (kpi,) = [decode("kpi", m.data) for m in await stream_messages(nc, "KPI")]
    assert done.outputs == [kpi.event_id] and kpi.correlation_id == intake_id
    (t1,) = kpi.kpis
    # the levels file has every 5-minute reading of January 2019: 288 on 2 January
    assert (t1.subject, t1.value) == ("T1", 1.0) and "288 of 288" in t1.detail

    # operators see it through the API (tasks table) and can request another
    app = create_app(api_config(fast_settings), config_store=store,
                     tasks=TaskDesk(nc.jetstream()), tokens=_tokens(tenant))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://api") as client:
        async with app.router.lifespan_context(app):
            r = await client.get("/v1/tasks", headers={"Authorization": "Bearer reader"})
            assert r.status_code == 200, r.text
            (row,) = r.json()["tasks"]
            assert (row["task_id"], row["state"]) == (requested.event_id, "completed")
            r = await client.get(f"/v1/tasks/{requested.event_id}",
                                 headers={"Authorization": "Bearer reader"})
            assert [t["state"] for t in r.json()["transitions"]] == [
                "requested", "started", "completed"]
            r = await client.post("/v1/tasks", json={"kind": "data.completeness"},
                                  headers={"Authorization": "Bearer reader"})
            assert r.status_code == 403  # reading is not operating
            r = await client.post("/v1/tasks", json={"kind": "data.completeness",
                                                     "params": {"day": "2019-01-03"}},
                                  headers={"Authorization": "Bearer operator"})
            assert r.status_code == 202 and len(r.json()["task_id"]) == 36
            r = await client.post("/v1/tasks", json={"kind": "nosuch"},
                                  headers={"Authorization": "Bearer operator"})
            assert r.status_code == 422 and "unknown task kind" in r.json()["detail"]
            from ops.wiring import questdb

            questdb(fast_settings).wait_for_wal("kpis")
            r = await client.get("/v1/kpis", params={"day": "2019-01-02"},
                                 headers={"Authorization": "Bearer reader"})
            assert [(k["name"], k["subject"], k["value"]) for k in r.json()["kpis"]] == [
                ("completeness", "T1", 1.0)]


def _tokens(tenant: str):
    from bus.tokens import TokenRecord, TokenStore, hash_token

    return TokenStore([TokenRecord("viewer", tenant, ("read",), hash_token("reader")),
                       TokenRecord("ops", tenant, ("operate",), hash_token("operator"))])
