"""Replaying everything twice leaves every QuestDB table identical."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ops.ingest import ingest
from ops.replay import ReplayRequest, replay
from ops.wiring import questdb
from projections.intake_log import LOG_TABLE, REJECTED_TABLE
from projections.readings import TABLE
from tests.conftest import REPO

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"

QUERIES = {
    TABLE: "select ts, sensor, value, unit, quality from readings where tenant = '{t}' "
           "order by sensor, ts",
    LOG_TABLE: "select ts, intake_id, status, rows_received, rows_accepted, rows_rejected, "
               "values_received, values_accepted, values_rejected, values_missing, reasons, "
               "detail, event_id from intake_log where tenant = '{t}' order by intake_id",
    REJECTED_TABLE: "select ts, event_id, seq, sensor, row, reason, count, raw, detail "
                    "from readings_rejected where tenant = '{t}' order by event_id, seq",
}


def snapshot(settings, tenant: str) -> dict[str, list]:
    db = questdb(settings)
    db.wait_for_wal()
    return {table: db.rows(q.format(t=tenant)) for table, q in QUERIES.items()}


async def test_replay_twice_changes_no_table(nc, fast_settings, shared_data, tmp_path):
    tenant = f"replay-{uuid.uuid4().hex[:8]}"
    flawed = tmp_path / "flawed.csv"  # a few rejections, so every table has rows
    flawed.write_bytes(
        (shared_data / "battledim" / "2019-01_SCADA_Levels.csv").read_bytes()[:4000]
        .rsplit(b"\r\n", 1)[0] + b"\r\n2019-01-01 09:00:00;abc\r\nnot a time;2,5\r\n"
        b"2019-01-01 09:10:00;99,0\r\n")
    for path, mapping in [(shared_data / "battledim" / "2019-01_SCADA_Flows.csv",
                           "battledim_flows.yaml"), (flawed, "battledim_levels.yaml")]:
        result = await ingest(fast_settings, path, tenant, MAPPINGS / mapping, process="yes",
                              progress=False)
        assert type(result.outcome).__name__ == "IntakeParsed"
    before = snapshot(fast_settings, tenant)
    assert len([r for r in before[TABLE] if r[1] == "p227"]) == 8928
    assert len(before[LOG_TABLE]) == 2 and before[REJECTED_TABLE]
    assert {r[5] for r in before[REJECTED_TABLE]} == {"non_numeric", "unparseable_time",
                                                      "out_of_range"}

    for _ in range(2):
        for into in ("normalise", "questdb-readings", "questdb-intake-log", "questdb-rejected"):
            summary = await replay(fast_settings, ReplayRequest(into=into, tenant=tenant,
                                                                downstream=True),
                                   progress=False, nc=nc)
            # a loaded machine may redeliver a message whose ack was late: handled twice,
            # harmlessly (the tables below are the proof)
            assert summary.stats.handled >= summary.matched > 0
            assert summary.stats.dead_lettered == 0
        assert snapshot(fast_settings, tenant) == before


async def test_replay_after_the_dedup_window_does_not_grow_the_log(nc, fast_settings,
                                                                   shared_data):
    """JetStream drops a re-published id only within the duplicate window: shrink it to
    one second, let it pass, replay through the processor: no stream grows."""
    from nats.js import api

    tenant = f"regrow-{uuid.uuid4().hex[:8]}"
    result = await ingest(fast_settings, shared_data / "battledim" / "2019-01_SCADA_Levels.csv",
                          tenant, MAPPINGS / "battledim_levels.yaml", process="yes",
                          progress=False)
    assert type(result.outcome).__name__ == "IntakeParsed"
    js = nc.jetstream()
    for name in ("INTAKE", "READINGS"):
        config = (await js.stream_info(name)).config
        config.duplicate_window = 1.0
        await js.update_stream(config)
    counts = {n: (await js.stream_info(n)).state.messages for n in ("INTAKE", "READINGS")}
    before = snapshot(fast_settings, tenant)
    await asyncio.sleep(1.5)
    summary = await replay(fast_settings, ReplayRequest(into="normalise", tenant=tenant,
                                                        downstream=True),
                           progress=False, nc=nc)
    assert summary.stats.handled == summary.matched == 1
    assert summary.stats.published == 0 and summary.stats.already > 0
    assert {n: (await js.stream_info(n)).state.messages for n in counts} == counts
    assert snapshot(fast_settings, tenant) == before
