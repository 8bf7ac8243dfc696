"""The ``simulate`` task through the stack (issue 11, the digital twin): L-Town's readings
of 14-15 January 2019 and its configuration, a 6-hour run from midnight on measured
demand with the network's own controls, calibrated against the day before; the
``simulation.completed`` event, its rows in QuestDB and the API, each tenant only its own."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from bus.tokens import TokenView
from contracts.registry import decode
from contracts.simulations import SimulationCompleted
from contracts.tasks import TaskCompleted, TaskFailed
from ops import wiring
from ops.config_service import ConfigStore
from ops.dev.demo import LTOWN_ASSETS, LTOWN_RULES, LTOWN_TARIFF
from ops.ingest import ingest
from ops.serving import api_config
from ops.service import components_running
from ops.task_service import TaskDesk, request_task
from projections.api import create_app
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"
DAYS = ("2019-01-14", "2019-01-15 00:", "2019-01-15 01:", "2019-01-15 02:",
        "2019-01-15 03:", "2019-01-15 04:", "2019-01-15 05:", "2019-01-15 06:00")


def _trimmed(src, dst) -> None:
    """The header and the rows from 14 January to 15 January 06:00 of a BattLeDIM CSV."""
    lines = src.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines[1:] if line.startswith(DAYS)]
    dst.write_text("\r\n".join([lines[0], *rows]) + "\r\n", encoding="utf-8")


async def _outcome(nc, task_id):
    for m in await stream_messages(nc, "TASKS"):
        e = decode("task", m.data)
        if getattr(e, "task_id", None) == task_id and isinstance(e, TaskCompleted | TaskFailed):
            return e
    return None


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_ltown_simulation_event_rows_and_api(nc, fast_settings, shared_data, tmp_path):
    began = time.monotonic()
    tenant = f"ltown-{uuid.uuid4().hex[:6]}"
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="L-Town", timezone="UTC", country="CY",
                              author="test")
    for name, mapping in (("2019-01_SCADA_Flows.csv", "battledim_flows.yaml"),
                          ("2019-01_SCADA_Levels.csv", "battledim_levels.yaml")):
        _trimmed(shared_data / "battledim" / name, tmp_path / name)
        result = await ingest(fast_settings, tmp_path / name, tenant, MAPPINGS / mapping,
                              process="yes", progress=False, timeout_s=300)
        assert type(result.outcome).__name__ == "IntakeParsed"
    for kind, body in (("network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes()),
                       ("assets", LTOWN_ASSETS), ("tariff", LTOWN_TARIFF),
                       ("rules", LTOWN_RULES)):
        await store.put(tenant, kind, body, author="test")
    js = nc.jetstream()
    other = f"other-{uuid.uuid4().hex[:6]}"
    await store.create_tenant(other, display_name="Other", author="test")
    read = (await store.issue_token(tenant, "viewer", ["read"], author="t"))[0]
    stranger = (await store.issue_token(other, "bo", ["read"], author="t"))[0]
    view = TokenView()
    await view.start(js)
    app = create_app(api_config(fast_settings), tokens=view, config_store=store,
                     tasks=TaskDesk(js))
    try:
        async with components_running(nc, fast_settings, wiring.topology(fast_settings),
                                      timeout_s=300), \
                app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://api") as api:
            task = await request_task(js, tenant, "simulate", {
                "start": "2019-01-15T00:00Z", "horizon_h": 6, "demand": "actual",
                "schedule": "own-controls", "calibrate_days": 1}, requested_by="test")
            await eventually(lambda: _outcome(nc, task.event_id), timeout_s=120,
                             what="simulate")
            done = await _outcome(nc, task.event_id)
            assert isinstance(done, TaskCompleted), done
            (s,) = [decode("simulation", m.data) for m in await stream_messages(
                nc, "SIMULATION", f"tagus.simulation.{tenant}.>")]
            assert isinstance(s, SimulationCompleted) and s.event_id in done.outputs
            assert s.task_id == task.event_id and s.periods == 6
            assert s.scenario.demand_sources == {"town": "measured p227, p235"}
            assert s.scenario.initial_levels_m == {"T1": pytest.approx(3.31)}  # 00:00 reading
            assert s.scenario.schedule == "own controls"
            assert s.inputs["config_versions"]["network"] == 1
            assert s.cost == pytest.approx(0.10 * s.energy_kwh, rel=1e-6)  # night rate
            assert len(s.tanks[0].levels_m) == 7 and s.energy_kwh > 0
            cal = s.calibration
            assert cal is not None and cal.days == 1
            (t1,) = cal.tanks
            # the twin on 14 January against T1 as measured: L-Town's model is close
            assert t1.sensor == "T1" and t1.points >= 280 and 0 < t1.rmse_m < 1.0, t1
            (p1,) = cal.pumps
            assert p1.sensor == "PUMP_1" and p1.points >= 280 and p1.rmse_m3s is not None

            async def listed():
                r = await api.get("/v1/simulations", headers=_h(read), params={"days": 1})
                assert r.status_code == 200, r.text
                return [x for x in r.json()["simulations"] if x["simulation_id"] == s.event_id]

            (line,) = await eventually(listed, timeout_s=30, what="listed")
            assert line["start"] == "2019-01-15T00:00:00Z" and line["periods"] == 6
            assert line["energy_kwh"] == pytest.approx(s.energy_kwh)
            assert line["calibrated_days"] == 1 and line["currency"] == "EUR"
            r = await api.get(f"/v1/simulations/{s.event_id}", headers=_h(read))
            assert r.status_code == 200, r.text
            d = r.json()
            assert [x["level_m"] for x in d["tanks"]["T1"]] == pytest.approx(s.tanks[0].levels_m)
            assert [x["status"] for x in d["pumps"]["PUMP_1"]] == s.pumps[0].status
            assert [x["min_pressure_m"] for x in d["zones"]["town"]] == \
                pytest.approx(s.min_pressure_m["town"])
            assert d["calibration"]["tanks"][0]["rmse_m"] == pytest.approx(t1.rmse_m)
            latest = await api.get("/v1/simulations/latest", headers=_h(read))
            assert latest.json()["simulation_id"] == s.event_id
            # another tenant sees nothing of it
            r = await api.get(f"/v1/simulations/{s.event_id}", headers=_h(stranger))
            assert r.status_code == 404
            r = await api.get("/v1/simulations", headers=_h(stranger))
            assert r.json()["simulations"] == []
            assert (await api.get("/v1/simulations/latest", headers=_h(stranger))
                    ).status_code == 404
            assert (await api.get("/v1/simulations/nope", headers=_h(read))).status_code in \
                (400, 422)
            # the console's page: the run's pumps and tank levels drawn, its calibration
            await api.get("/login")
            form = await api.post("/login", data={"token": read, "nonce": "forged"})
            nonce = form.text.split('name="nonce" value="')[1].split('"')[0]
            assert (await api.post("/login", data={"token": read, "nonce": nonce})
                    ).status_code == 303
            page = await api.get("/simulations")
            assert page.status_code == 200, page.text[:500]
            assert 'id="sim-gantt-figure"' in page.text and "PUMP_1" in page.text
            assert 'id="calibration"' in page.text and s.event_id in page.text
            # bad params: the task fails for good, saying what was expected
            bad = await request_task(js, tenant, "simulate", {"horizon_h": 500},
                                     requested_by="test")
            await eventually(lambda: _outcome(nc, bad.event_id), timeout_s=60, what="refused")
            failed = await _outcome(nc, bad.event_id)
            assert isinstance(failed, TaskFailed) and not failed.retryable
            assert "horizon_h: 1..168" in failed.detail + failed.reason, failed
            # QuestDB: a summary row, T1 at 7 instants, PUMP_1 and zone town at 6 periods
            conn = await wiring.pg_connection(fast_settings)
            try:
                rows = await conn.fetch(
                    "SELECT kind, count() AS n FROM simulations WHERE tenant = $1 AND "
                    "simulation_id = $2", tenant, s.event_id)
            finally:
                await conn.close()
            assert {r["kind"]: r["n"] for r in rows} == {"summary": 1, "tank": 7, "pump": 6,
                                                         "zone": 6}
    finally:
        await view.close()
    print(f"simulate integration test: {time.monotonic() - began:.1f} s")
