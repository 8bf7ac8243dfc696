"""``kpi.compute`` on L-Town's 15 January 2019 through the stack (issue 12): the task's
KPIs equal figures computed here, independently, from the SCADA CSV files.

Two days of the January files are ingested with a few cells blanked on the 15th (a flow
meter and the level sensor drop readings), L-Town's configuration is put with a tank
rule tighter than what T1 reached (3.8 m: the day has minutes above it, and the
network's own controls, which fill T1 to 3.9 m, break it), and ``kpi.compute`` runs in
the KPI worker.  Checked against pandas on the CSV text: completeness, pumped volume,
minutes above the bound; energy and cost against the pump's physics (measured flow x
the head its curve gives, 75 % efficiency, the tariff by hour) within 3 %; and the
arithmetic that ties the figures together (cost = Σ price x energy, saving =
counterfactual - as run, per m3 ratios).  Then the KPIs through QuestDB and the picture.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import uuid

import numpy as np
import pandas as pd
import pytest

from contracts.kpis import KpiComputed
from contracts.registry import decode
from contracts.tasks import TaskCompleted, TaskFailed
from ops import wiring
from ops.commands import kpis as kpis_command
from ops.config_service import ConfigStore
from ops.dev.demo import LTOWN_ASSETS, LTOWN_TARIFF
from ops.ingest import ingest
from ops.service import components_running
from ops.task_service import request_task
from projections.api import queries
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"
DAY = "2019-01-15"
RULES = {"tanks": {"T1": {"min_level_m": 0.5, "max_level_m": 3.8}}}
BLANK = {"p235": ["2019-01-15 10:00:00", "2019-01-15 10:05:00", "2019-01-15 17:30:00"],
         "PUMP_1": ["2019-01-15 02:00:00", "2019-01-15 02:05:00", "2019-01-15 02:10:00"],
         "T1": ["2019-01-15 03:00:00", "2019-01-15 03:05:00"]}


def trimmed(src, dst, days=("2019-01-14", DAY)) -> None:
    """The header and ``days`` of a BattLeDIM CSV, with the ``BLANK`` cells emptied."""
    lines = src.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(";")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(";")
        if not cells[0].startswith(days):
            continue
        for col, stamps in BLANK.items():
            if col in header and cells[0] in stamps:
                cells[header.index(col)] = ""
        out.append(";".join(cells))
    dst.write_text("\r\n".join(out) + "\r\n", encoding="utf-8")


def frame(path) -> pd.DataFrame:
    return pd.read_csv(path, sep=";", decimal=",", parse_dates=["Timestamp"],
                       index_col="Timestamp")


def held_seconds(series: pd.Series) -> pd.Series:
    """Seconds each reading of the day speaks for: until the next reading, at most an
    hour, never past midnight; the last reading before the day counts from midnight."""
    s = series.dropna().sort_index()
    day0, day1 = pd.Timestamp(DAY), pd.Timestamp(DAY) + pd.Timedelta(days=1)
    nxt = pd.Series(s.index[1:].append(pd.DatetimeIndex([day1])), index=s.index)
    end = np.minimum(nxt, s.index + pd.Timedelta(hours=1)).clip(upper=day1)
    begin = pd.Series(s.index, index=s.index).clip(lower=day0)
    return ((end - begin).dt.total_seconds()).clip(lower=0)


def pump_power_kw(q_m3h: pd.Series) -> pd.Series:
    """The pump's shaft power from its measured flow: rho g Q H(Q) / 0.75, with H from
    EPANET's power-law fit through the three points of L-Town's curve 1."""
    h0, (q1, h1), (q2, h2) = 126.67, (27.3856, 88.669), (49.999, 0.0)
    c = math.log((h0 - h2) / (h0 - h1)) / math.log(q2 / q1)
    b = (h0 - h1) / q1 ** c
    head = h0 - b * q_m3h.clip(lower=0) ** c
    return 1000 * 9.81 * (q_m3h / 3600) * head / 0.75 / 1000


async def _outcome(nc, task_id):
    for m in await stream_messages(nc, "TASKS"):
        e = decode("task", m.data)
        if getattr(e, "task_id", None) == task_id and isinstance(e, TaskCompleted | TaskFailed):
            return e
    return None


async def _stored(settings, tenant, expected):
    await asyncio.to_thread(wiring.questdb(settings).wait_for_wal, "readings", 30.0)
    conn = await wiring.pg_connection(settings)
    try:
        n = await conn.fetchval("SELECT count() FROM readings WHERE tenant = $1", tenant)
    finally:
        await conn.close()
    return n if n == expected else None


async def _computed(nc, tenant):
    for m in await stream_messages(nc, "KPI", f"tagus.kpi.{tenant}.>"):
        e = decode("kpi", m.data)
        if isinstance(e, KpiComputed) and e.day == DAY and len(e.kpis) > 10:
            return e
    return None


async def test_ltown_day_kpis_equal_an_independent_computation(nc, fast_settings,
                                                               shared_data, tmp_path):
    tenant = f"ltown-{uuid.uuid4().hex[:6]}"
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="L-Town", timezone="UTC", country="CY",
                              author="test")
    files = {}
    js = nc.jetstream()
    async with components_running(nc, fast_settings, wiring.topology(fast_settings),
                                  timeout_s=300):
        for name, mapping in (("2019-01_SCADA_Flows.csv", "battledim_flows.yaml"),
                              ("2019-01_SCADA_Levels.csv", "battledim_levels.yaml")):
            files[name] = tmp_path / name
            trimmed(shared_data / "battledim" / name, files[name])
            result = await ingest(fast_settings, files[name], tenant, MAPPINGS / mapping,
                                  process="no", progress=False, timeout_s=120)
            assert type(result.outcome).__name__ == "IntakeParsed"
        for kind, body in (("network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes()),
                           ("assets", LTOWN_ASSETS), ("tariff", LTOWN_TARIFF),
                           ("rules", RULES)):
            await store.put(tenant, kind, body, author="test")  # bindings name known sensors
        expected = int(frame(files["2019-01_SCADA_Flows.csv"]).notna().sum().sum()
                       + frame(files["2019-01_SCADA_Levels.csv"]).notna().sum().sum())
        await eventually(lambda: _stored(fast_settings, tenant, expected), timeout_s=60,
                         interval_s=0.5, what="readings in QuestDB")
        task = await request_task(js, tenant, "kpi.compute", {"day": DAY}, requested_by="test")
        await eventually(lambda: _outcome(nc, task.event_id), timeout_s=300, what="kpi.compute")
        done = await _outcome(nc, task.event_id)
        assert isinstance(done, TaskCompleted), done
        event = await eventually(lambda: _computed(nc, tenant), timeout_s=30, what="kpis")
        await asyncio.to_thread(wiring.questdb(fast_settings).wait_for_wal, "kpis", 60.0)
    k = {(x.name, x.subject): x for x in event.kpis}

    # -- independently, from the CSV text
    flows = frame(files["2019-01_SCADA_Flows.csv"])
    levels = frame(files["2019-01_SCADA_Levels.csv"])
    on_day = lambda s: s[s.index.strftime("%Y-%m-%d") == DAY]  # noqa: E731
    for sensor, series in (("p227", flows.p227), ("p235", flows.p235),
                           ("PUMP_1", flows.PUMP_1), ("T1", levels.T1)):
        assert k["completeness", sensor].value == pytest.approx(
            on_day(series).notna().sum() / 288), sensor
    assert k["completeness", "p235"].value == pytest.approx(285 / 288)

    pump = flows.PUMP_1.dropna()
    seconds = held_seconds(pump)
    pumped = float((pump / 3600 * seconds).sum())
    assert k["pumped_m3", "PUMP_1"].value == pytest.approx(pumped, rel=1e-9)
    assert k["pumped_m3", "network"].value == pytest.approx(pumped, rel=1e-9)

    level = levels.T1.dropna()
    outside = (level > 3.8) | (level < 0.5)
    minutes = float(held_seconds(level)[outside].sum() / 60)
    assert minutes > 0
    assert k["tank_violation_minutes", "T1"].value == pytest.approx(minutes)

    # energy and cost: EPANET's as-run day against the pump's physics on measured flows
    running = pump[(pump > 3.6) & (pump.index >= DAY)]
    kwh = pump_power_kw(running) * held_seconds(pump)[running.index] / 3600
    price = np.where(running.index.hour < 8, 0.10, 0.25)
    energy, cost = k["energy_kwh", "network"].value, k["cost", "network"].value
    assert energy == pytest.approx(float(kwh.sum()), rel=0.03)
    assert cost == pytest.approx(float((kwh * price).sum()), rel=0.03)
    # cost = Σ price x energy, as its detail spells out; both prices of the tariff used
    parts = [(float(e), float(p)) for e, p in
             re.findall(r"([\d.]+) kWh at ([\d.]+)", k["cost", "PUMP_1"].detail)]
    assert sorted(p for _, p in parts) == [0.10, 0.25]
    assert sum(e for e, _ in parts) == pytest.approx(energy, abs=0.02)
    assert sum(e * p for e, p in parts) == pytest.approx(cost, abs=0.01)
    assert k["specific_energy_kwh_per_m3", "network"].value == pytest.approx(energy / pumped)
    assert k["cost_per_m3", "network"].value == pytest.approx(cost / pumped)

    # the saving against the network's own controls, which break the 3.8 m rule
    cf = k["counterfactual_cost", "network"].value
    assert k["saving", "network"].value == pytest.approx(cf - cost, abs=1e-9)
    assert k["saving_energy_kwh", "network"].value == pytest.approx(
        k["counterfactual_energy_kwh", "network"].value - energy, abs=1e-9)
    assert "broke the rules" in k["saving", "network"].detail
    assert "no forecast of zone:town" in k["forecast_skill", "zone:town"].detail
    assert "no schedule released" in k["schedule_adherence", "network"].detail

    # -- the same figures through QuestDB, and the daily picture
    conn = await wiring.pg_connection(fast_settings)
    try:
        rows = await queries.kpis(conn, tenant, pd.Timestamp(DAY).date(),
                                  pd.Timestamp(DAY).date())
    finally:
        await conn.close()
    stored = {(r["name"], r["subject"]): r["value"] for r in rows}
    assert stored["pumped_m3", "PUMP_1"] == pytest.approx(pumped, rel=1e-9)
    assert stored["saving", "network"] == pytest.approx(cf - cost, abs=1e-6)
    out = tmp_path / "kpis.png"
    args = argparse.Namespace(action="plot", tenant=tenant, day=DAY, days=3, out=out)
    assert await kpis_command.kpis(fast_settings, args) == 0
    assert out.stat().st_size > 10_000
