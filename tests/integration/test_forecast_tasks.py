"""Forecast tasks end to end on the real BWDF file through the stack (issue 10): train,
forecast, the QuestDB tables, and the forecast reproduced byte for byte from its inputs."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from bus.components import Context
from contracts.forecasts import ForecastIssued, ForecastModelTrained
from contracts.registry import decode, encode
from contracts.tasks import TaskCompleted, TaskFailed, TaskRequested
from ops import wiring
from ops.config_service import ConfigStore
from ops.ingest import ingest
from ops.service import components_running
from ops.task_service import request_task
from processors.forecast import tasks as forecast_tasks
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"
ORIGIN = "2022-07-10T22:00:00Z"  # Monday 11 July 2022 00:00 in Rome


async def outcome(nc, task_id):
    for m in await stream_messages(nc, "TASKS"):
        e = decode("task", m.data)
        if getattr(e, "task_id", None) == task_id and isinstance(e, TaskCompleted | TaskFailed):
            return e
    return None


async def test_train_then_forecast_bwdf_zones_and_reproduce_the_forecast(
        nc, fast_settings, shared_data):
    tenant = f"bwdf-{uuid.uuid4().hex[:6]}"
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="BWDF", timezone="Europe/Rome",
                              country="IT", author="test")
    result = await ingest(fast_settings, shared_data / "bwdf" / "InflowData_1.xlsx", tenant,
                          MAPPINGS / "bwdf_inflow.yaml", process="yes", progress=False,
                          timeout_s=600)
    assert type(result.outcome).__name__ == "IntakeParsed"
    await store.put(tenant, "tenant", {"display_name": "BWDF", "timezone": "Europe/Rome",
                                       "country": "IT", "extra_holidays": ["11-03"]},
                    author="test", reason="patron saint")
    await store.put(tenant, "assets", {"bindings": [
        {"sensor": "dma_a", "role": "zone_inflow", "element": "dma_a"},
        {"sensor": "dma_e", "role": "zone_inflow", "element": "dma_e"}]}, author="test")
    js = nc.jetstream()
    topo = wiring.topology(fast_settings)
    async with components_running(nc, fast_settings, topo, timeout_s=600):
        train = await request_task(js, tenant, "forecast.train",
                                   {"origin": ORIGIN, "quick": True}, requested_by="test")
        await eventually(lambda: outcome(nc, train.event_id), timeout_s=300, what="trained")
        done = await outcome(nc, train.event_id)
        assert isinstance(done, TaskCompleted), done
        run = await request_task(js, tenant, "forecast.run", {"issued_at": ORIGIN},
                                 requested_by="test")
        await eventually(lambda: outcome(nc, run.event_id), timeout_s=120, what="forecast")
        done = await outcome(nc, run.event_id)
        assert isinstance(done, TaskCompleted), done

    models = [e for e in (decode("forecast", m.data) for m in
                          await stream_messages(nc, "FORECAST"))
              if isinstance(e, ForecastModelTrained)]
    assert sorted(m.series for m in models) == ["zone:dma_a", "zone:dma_e"]
    assert all(m.metrics[m.chosen]["PI1"] > 0 for m in models)
    stored = [m for m in await stream_messages(nc, "FORECAST",
                                               f"tagus.forecast.{tenant}.issued")]
    issued = [decode("forecast", m.data) for m in stored]
    assert sorted(f.series for f in issued) == ["zone:dma_a", "zone:dma_e"]
    for f in issued:
        assert isinstance(f, ForecastIssued) and len(f.p50) == 168
        assert f.valid_from == pd.Timestamp(ORIGIN).to_pydatetime()
        assert all(lo <= mid <= hi for lo, mid, hi in
                   zip(f.quantiles["p10"], f.p50, f.quantiles["p90"], strict=True))
        assert 0.005 < sum(f.p50) / 168 < 0.2  # DMA inflows are litres per second: m3/s
        assert f.model_sha256 in {m.model_sha256 for m in models}
        assert f.inputs["config_versions"]["assets"] == 1
    db = wiring.questdb(fast_settings)
    db.wait_for_wal("forecasts")
    (count,), = db.rows(f"select count() from forecasts where tenant = '{tenant}'")
    assert count == 2 * 168

    # the same inputs again (as a replay has them): the identical bytes
    request = next(e for e in (decode("task", m.data) for m in await stream_messages(nc, "TASKS"))
                   if isinstance(e, TaskRequested) and e.event_id == run.event_id)
    loaders = wiring.components(fast_settings)["worker-forecast"].loaders
    resources = {n: await loaders[n](js, request) for n in forecast_tasks.NEEDS}
    ctx = Context(processor="worker-forecast", now=request.recorded_at, input=request,
                  resources=resources)
    again = [e for e in forecast_tasks.handle_run(request, ctx)
             if isinstance(e, ForecastIssued)]
    assert sorted(encode(e) for e in again) == sorted(m.data for m in stored)

    # operators read it through the API: the latest forecast, joined with what was measured
    import httpx

    from bus.tokens import TokenRecord, TokenStore, hash_token
    from ops.serving import api_config
    from projections.api import create_app

    tokens = TokenStore([TokenRecord("viewer", tenant, ("read",), hash_token("reader"))])
    app = create_app(api_config(fast_settings), tokens=tokens, config_store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://api") as client:
        async with app.router.lifespan_context(app):
            h = {"Authorization": "Bearer reader"}
            r = await client.get("/v1/forecasts", headers=h)
            assert r.json()["series"] == ["zone:dma_a", "zone:dma_e"]
            r = await client.get("/v1/forecasts/zone:dma_a", headers=h,
                                 params={"as_of": "2022-07-12T00:00Z"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["issued_at"] == "2022-07-10T22:00:00Z" and body["sensors"] == ["dma_a"]
            points = body["points"]
            assert len(points) == 168 and points[0]["valid_at"] == "2022-07-10T22:00:00Z"
            measured = [p for p in points if p["actual"] is not None]
            assert len(measured) > 150  # the file runs to 24 July 2022
            mae = sum(abs(p["actual"] - p["p50"]) for p in measured) / len(measured)
            assert mae < 0.005  # m3/s: within 5 L/s on a DMA of about 10 L/s
            r = await client.get("/v1/forecasts/zone:dma_a", headers=h,
                                 params={"as_of": "2022-07-01T00:00Z"})
            assert r.status_code == 404  # nothing was issued that early
