"""`tagus demo`: the readings path once, on the local stack, with real utilities' files.

1. starts the stack and ensures the topology;
2. ingests four real files as two tenants through the whole pipeline (raw intake ->
   normalise -> QuestDB): L-Town SCADA flows and tank level (BattLeDIM, ';' and decimal
   comma) and the BWDF DMA inflows and weather (Excel, Europe/Rome time with DST);
3. prints each upload's accounting and what QuestDB now holds per sensor;
4. asks the operators' query API for a downsampled range, with a tenant token;
5. draws two pictures: a week of L-Town and the BWDF autumn DST night.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from bus.tokens import TokenStore
from ops.dev import plots, stack
from ops.ingest import format_report, ingest
from ops import wiring
from ops.settings import Settings
from ops.dev.stack import free_port
from projections import readings

UPLOADS = [  # (tenant, file under shared data, mapping under tests/mappings)
    ("ltown", "battledim/2019-01_SCADA_Flows.csv", "battledim_flows.yaml"),
    ("ltown", "battledim/2019-01_SCADA_Levels.csv", "battledim_levels.yaml"),
    ("bwdf", "bwdf/InflowData_1.xlsx", "bwdf_inflow.yaml"),
    ("bwdf", "bwdf/WeatherData_1.xlsx", "bwdf_weather.yaml"),
]
MAPPINGS = Path(__file__).resolve().parents[2] / "tests" / "mappings"  # ops/dev/ -> ops/ -> repo


async def run_demo(settings: Settings, data_dir: Path) -> None:
    print("1. local stack")
    for line in stack.up(settings):
        print("  ", line)
    print("2. ingest (raw intake -> normalise -> QuestDB)")
    for tenant, rel, mapping in UPLOADS:
        path = data_dir / rel
        if not path.is_file():
            raise SystemExit(f"demo data not found at {path}; set TAGUS_SHARED_DATA to the "
                             "folder holding battledim/ and bwdf/")
        result = await ingest(settings, path, tenant, MAPPINGS / mapping, process="yes",
                              progress=True)
        print(f"   [{tenant}] " + format_report(result, []).replace("\n", "\n   "))
    db = wiring.questdb(settings)
    db.wait_for_wal(readings.TABLE)
    print(f"3. QuestDB table {readings.TABLE!r} at {settings.questdb_http_url}")
    print(f"   {'tenant':6} {'sensor':12} {'unit':5} {'rows':>6} {'min':>10} {'max':>10}"
          "  first .. last (UTC)")
    for tenant, sensor, unit, cnt, vmin, vmax, t0, t1 in db.rows(
            f"select tenant, sensor, unit, count(), min(value), max(value), min(ts), max(ts) "
            f"from {readings.TABLE} where tenant in ('ltown', 'bwdf') "
            "order by tenant, sensor"):
        print(f"   {tenant:6} {sensor:12} {unit:5} {cnt:6d} {vmin:10.5f} {vmax:10.5f}"
              f"  {t0[:16]} .. {t1[:16]}")
    print("4. query API (tenant ltown, read token): T1 level, 6-hour means, 1-2 Jan 2019")
    for line in _query_api(settings):
        print("  ", line)
    print("5. pictures")
    out = Path(settings.data_dir) / "demo"
    conn = await wiring.pg_connection(settings)
    try:
        week = await plots.hourly(conn, "ltown", ["p227", "p235", "PUMP_1", "T1"],
                                  datetime(2019, 1, 7, tzinfo=UTC),
                                  datetime(2019, 1, 14, tzinfo=UTC))
        dst = await plots.hourly(conn, "bwdf", ["dma_e", "dma_h", "air_temp"],
                                 datetime(2021, 10, 29, 22, tzinfo=UTC),
                                 datetime(2021, 11, 1, 22, tzinfo=UTC))
    finally:
        await conn.close()
    print("  ", plots.plot(week, "L-Town, 7-13 Jan 2019: inflows, pump flow, tank T1 "
                           "(hourly means from QuestDB)", out / "ltown_week.png"))
    print("  ", plots.plot(dst, "BWDF, autumn DST weekend 2021: 25-hour Sunday in "
                           "Europe/Rome, no hour lost or doubled", out / "bwdf_dst.png",
                           tz="Europe/Rome"))



def _query_api(settings: Settings) -> list[str]:
    """Start the API on a free port in this process, ask it one question, stop it."""
    import uvicorn

    from ops.serving import api_config
    from projections.api import create_app

    tokens_file = Path(settings.data_dir) / "demo" / "tokens.yaml"
    store = TokenStore([])
    token = store.issue("ltown", "demo-operator", ("read",))
    store.save(tokens_file)
    port = free_port()
    config = api_config(settings, tokens_path=tokens_file, port=port)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = (f"http://127.0.0.1:{port}/v1/sensors/T1/readings?start=2019-01-01T00:00Z"
               "&end=2019-01-02T00:00Z&bucket=6h&agg=avg")
        deadline = time.monotonic() + 20
        while True:
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        lines = [f"GET {url.split(str(port))[1]}"]
        points = body.get("points", [])
        for p in points:
            lines.append(f"  {p}")
        if not points:
            lines.append(f"  {json.dumps(body)[:300]}")
        return lines
    finally:
        server.should_exit = True
        thread.join(10)


def main(settings: Settings) -> None:
    asyncio.run(run_demo(settings, settings.shared_data))
