"""The readings projection SIGKILLed in the middle of an ingest loses and duplicates nothing.

A generated wide CSV (50 sensors x 16,000 rows = 800,000 readings, 8 ``readings.normalised``
messages of 100,000) goes through intake and the normalise processor (in this process);
``questdb-readings`` runs as a subprocess writing one message per batch.  It is killed
once some, not all, rows are in QuestDB, restarted, and must end with exactly every
reading once (DEDUP keys make the redelivered batch overwrite, not append).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest

from bus.runner import Runner
from bus.storage import put_mapping
from bus.topology import ensure_topology
from contracts.intake import IntakeParsed
from contracts.registry import decode
from ops import wiring
from ops.wiring import questdb
from producers.intake import Intake
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers

SENSORS, ROWS = 50, 16_000
N = SENSORS * ROWS
T0_S = 1_704_067_200  # 2024-01-01T00:00:00Z
PROJECTION = "questdb-readings"


def _value_centi(row: int, sensor: int) -> int:
    return (row * 7 + sensor * 13) % 1000 + 1  # hundredths of a metre, 0.01 .. 10.00


def wide_csv() -> bytes:
    header = "time," + ",".join(f"s{j:02d}" for j in range(SENSORS)) + "\n"
    lines = [header]
    for i in range(ROWS):
        lines.append(f"{T0_S + 60 * i},"
                     + ",".join(f"{_value_centi(i, j) / 100:.2f}" for j in range(SENSORS)) + "\n")
    return "".join(lines).encode()


def expected_sums() -> dict[str, Decimal]:
    return {f"s{j:02d}": Decimal(sum(_value_centi(i, j) for i in range(ROWS))) / 100
            for j in range(SENSORS)}


MAPPING = ("format: csv\nlayout: wide\n"
           "timestamp: {column: time, format: epoch-s, timezone: UTC}\nsensors:\n"
           + "".join(f"  s{j:02d}: {{id: s{j:02d}, unit: m, range: [0, 100]}}\n"
                     for j in range(SENSORS))).encode()


def start_projection(settings) -> subprocess.Popen:
    env = dict(os.environ, TAGUS_CONSUMER_ACK_WAIT_S=str(settings.consumer_ack_wait_s),
               TAGUS_CONSUMER_MAX_DELIVER=str(settings.consumer_max_deliver),
               TAGUS_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "run", PROJECTION, "--batch", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@contextlib.asynccontextmanager
async def normalise_running(nc, settings):
    comps, topo = wiring.components(settings), wiring.topology(settings)
    stop = asyncio.Event()
    runner = Runner(nc, comps["normalise"], topo.consumer("normalise"), fetch_timeout_s=0.2)
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_projection_killed_mid_ingest_recovers_exactly(nc, fast_settings):
    # a few more deliveries than fast_settings: the kill and the restart each cost one
    settings = fast_settings.model_copy(update={"consumer_max_deliver": 5})
    js = nc.jetstream()
    await ensure_topology(js, wiring.topology(settings))
    tenant = f"recov-{uuid.uuid4().hex[:8]}"
    db = questdb(settings)

    def rows_in_questdb() -> int:
        try:
            return db.rows(f"select count() from readings where tenant = '{tenant}'")[0][0]
        except Exception:  # noqa: BLE001 - the table may not exist yet on a fresh server
            return 0

    await put_mapping(js, tenant, "wide", MAPPING)
    body = wide_csv()
    first = start_projection(settings)
    try:
        async with normalise_running(nc, settings) as normalise:
            intake = await Intake(js).submit(tenant=tenant, source="file",
                                             content_type="text/csv", body=body,
                                             filename="wide.csv", mapping_id="wide")
            at_kill = await eventually(lambda: 0 < rows_in_questdb() < N, timeout_s=60,
                                       interval_s=0.02, what="projection part-way through")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            await eventually(lambda: normalise.stats.handled == 1, timeout_s=60,
                             what="normalise done")
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
    assert first.returncode == -signal.SIGKILL
    db.wait_for_wal("readings")
    written_by_first = rows_in_questdb()
    assert 0 < written_by_first < N, f"kill came late: {written_by_first} of {N} rows written"
    info = await js.consumer_info("READINGS", PROJECTION)
    assert info.num_pending + info.num_ack_pending > 0, "nothing left for the restart"

    second = start_projection(settings)
    try:
        async def caught_up():
            ci = await js.consumer_info("READINGS", PROJECTION)
            return ci.num_pending == 0 and ci.num_ack_pending == 0
        await eventually(caught_up, timeout_s=120, what="restarted projection catching up")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err.decode()[-2000:]

    db.wait_for_wal("readings")
    got = {s: (n, total) for s, n, total in db.rows(
        f"select sensor, count(), sum(value) from readings where tenant = '{tenant}'")}
    want = expected_sums()
    assert sum(n for n, _ in got.values()) == N, (at_kill, written_by_first)
    assert sorted(got) == sorted(want)
    for sensor, total in want.items():
        assert got[sensor][0] == ROWS, (sensor, got[sensor])
        assert abs(got[sensor][1] - float(total)) <= 1e-9 * float(total), (sensor, got[sensor])
    distinct = db.rows(f"select count_distinct(ts) from readings where tenant = '{tenant}'")
    assert distinct == [[ROWS]]

    normalised = [decode("readings", m.data) for m in await stream_messages(
        nc, "READINGS", f"tagus.readings.{tenant}.normalised")]
    assert len(normalised) == N // 100_000
    assert sum(len(s.values) for e in normalised for s in e.series) == N
    (parsed,) = [decode("intake", m.data) for m in await stream_messages(
        nc, "INTAKE", f"tagus.intake.{tenant}.parsed")]
    assert isinstance(parsed, IntakeParsed) and parsed.intake_id == intake.event_id
    assert (parsed.values_accepted, parsed.values_received) == (N, N)
    assert not await stream_messages(nc, "DEADLETTER")
