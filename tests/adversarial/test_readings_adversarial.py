"""Issue 6 repros on the readings path (normalise, projections, runner, CLI), real servers.

Each test failed on the code before the fix: readings accepted but never stored (a time
the store cannot hold took a whole message down), a far-future reading becoming a
sensor's latest value, sensor ids the API could not query, repeated values counted as
accepted, a junk upload blowing up memory and the runner's fetch, CLI commands hanging
on an unreachable NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid

import msgspec
import pytest

from bus.components import Projection
from bus.publish import publish
from bus.pull import Puller
from bus.runner import Runner
from bus.topology import ConsumerSpec, ensure_topology
from contracts.base import derive_id, utc_now
from contracts.intake import IntakeParsed
from contracts.readings import ReadingsNormalised, Series
from contracts.registry import decode
from ops import wiring
from ops.service import wait_caught_up
from producers.intake import Intake
from tests.conftest import REPO, free_port
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers

JSON = "application/json"
LP = "text/x-influx-line-protocol"
Y2024_NS = 1_704_067_200 * 10**9


def _tenant(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def pipeline(nc, settings):
    comps, topo = wiring.components(settings), wiring.topology(settings)
    stop = asyncio.Event()
    runners = {n: Runner(nc, c, topo.consumer(n), batch=20, fetch_timeout_s=0.2)
               for n, c in comps.items()}
    tasks = [asyncio.create_task(r.run(stop)) for r in runners.values()]
    try:
        yield runners
        await wait_caught_up(nc, topo, timeout_s=60)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def parsed(nc, tenant: str) -> IntakeParsed:
    (event,) = [decode("intake", m.data) for m in
                await stream_messages(nc, "INTAKE", f"tagus.intake.{tenant}.parsed")]
    return event


def stored(settings, tenant: str) -> list[tuple[int, str, float]]:
    db = wiring.questdb(settings)
    db.wait_for_wal("readings")
    return sorted((int(ts), s, v) for ts, s, v in db.rows(
        f"select cast(ts as long), sensor, value from readings where tenant = '{tenant}'"))


async def test_a_reading_before_1970_is_rejected_and_the_good_one_stored(nc, fast_settings):
    tenant = _tenant("epoch")
    body = msgspec.json.encode({"readings": [
        {"sensor": "p1", "ts": "1969-12-31T23:59:59Z", "value": 1, "unit": "m"},
        {"sensor": "p1", "ts": "2024-01-01T00:00:00Z", "value": 2, "unit": "m"},
        {"sensor": "p1", "ts": "2255-01-01T00:00:00Z", "value": 3, "unit": "m"},
    ]})
    async with pipeline(nc, fast_settings):
        await Intake(nc.jetstream()).submit(tenant=tenant, source="json-push",
                                            content_type=JSON, body=body, identity="request")
        await eventually(lambda: parsed_or_none(nc, tenant), what="intake.parsed")
    p = await parsed(nc, tenant)
    assert (p.values_accepted, p.values_rejected) == (1, 2)
    assert p.reasons == {"implausible_time": 2}
    assert stored(fast_settings, tenant) == [(Y2024_NS // 1000, "p1", 2.0)]


async def parsed_or_none(nc, tenant):
    return await stream_messages(nc, "INTAKE", f"tagus.intake.{tenant}.parsed")


async def test_a_projection_never_loses_good_rows_for_one_bad_row(nc, fast_settings):
    """An event from before the fix (a negative time inside a normalised batch): the good
    rows are stored, the event is dead-lettered saying which rows were not."""
    tenant = _tenant("poison")
    now = utc_now()
    good = ReadingsNormalised(
        event_id=derive_id("good", tenant), tenant=tenant, occurred_at=now, recorded_at=now,
        source="test", series=[Series(sensor_id="a", unit="m", timestamps_ns=[Y2024_NS],
                                      values=[1.0])])
    mixed = ReadingsNormalised(
        event_id=derive_id("mixed", tenant), tenant=tenant, occurred_at=now, recorded_at=now,
        source="test", series=[Series(sensor_id="b", unit="m",
                                      timestamps_ns=[-10**9, Y2024_NS + 60 * 10**9],
                                      values=[5.0, 6.0])])
    js = nc.jetstream()
    await publish(js, good)
    await publish(js, mixed)
    comps, topo = wiring.components(fast_settings), wiring.topology(fast_settings)
    runner = Runner(nc, comps["questdb-readings"], topo.consumer("questdb-readings"),
                    batch=10, fetch_timeout_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: runner.stats.handled == 1 and runner.stats.dead_lettered == 1,
                         what="good written, mixed dead-lettered")
    finally:
        stop.set()
        await task
    assert stored(fast_settings, tenant) == [(Y2024_NS // 1000, "a", 1.0),
                                             ((Y2024_NS + 60 * 10**9) // 1000, "b", 6.0)]
    (dead,) = [decode("deadletter", m.data) for m in await stream_messages(nc, "DEADLETTER")]
    assert dead.causation_id == mixed.event_id
    assert "1 of 2 readings" in dead.reason and "were written" in dead.reason


async def test_sensor_ids_the_api_could_not_query_are_rejected_at_every_push_door(nc, fast_settings):
    tenant = _tenant("ids")
    body_json = msgspec.json.encode({"readings": [
        {"sensor": "", "ts": Y2024_NS // 10**6, "value": 1, "unit": "m"},
        {"sensor": "x" * 311, "ts": Y2024_NS // 10**6, "value": 1, "unit": "m"},
        {"sensor": "ok.1", "ts": Y2024_NS // 10**6, "value": 1, "unit": "m"},
    ]})
    body_lp = f"level,site=a\\\tb,unit=m v=1 {Y2024_NS}\nlevel,site=c,unit=m v=2 {Y2024_NS}\n"
    intake = Intake(nc.jetstream())
    async with pipeline(nc, fast_settings):
        await intake.submit(tenant=tenant, source="json-push", content_type=JSON,
                            body=body_json, identity="request")
        await intake.submit(tenant=tenant, source="line-protocol", content_type=LP,
                            body=body_lp.encode(), params={"precision": "ns"},
                            identity="request")
    outcomes = [decode("intake", m.data) for m in
                await stream_messages(nc, "INTAKE", f"tagus.intake.{tenant}.parsed")]
    reasons = {}
    for p in outcomes:
        for k, v in p.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    assert reasons == {"invalid_sensor_id": 3}
    assert {s for _, s, _ in stored(fast_settings, tenant)} == {"ok.1", "level.c.v"}


async def test_repeated_values_for_one_instant_are_duplicates_not_accepted(nc, fast_settings):
    tenant = _tenant("dup")
    body = f"m,unit=m v=1 {Y2024_NS}\nm,unit=m v=2 {Y2024_NS}\nm,unit=m v=3 {Y2024_NS}\n"
    async with pipeline(nc, fast_settings):
        await Intake(nc.jetstream()).submit(tenant=tenant, source="line-protocol",
                                            content_type=LP, body=body.encode(),
                                            params={"precision": "ns"}, identity="request")
    p = await parsed(nc, tenant)
    assert (p.values_accepted, p.reasons) == (1, {"duplicate": 2})
    assert stored(fast_settings, tenant) == [(Y2024_NS // 1000, "m.v", 1.0)]


async def test_a_junk_upload_costs_bounded_rejection_detail_with_exact_counts(nc, fast_settings):
    tenant = _tenant("junk")
    n = 60_000
    body = b"".join(b"junk line %d\n" % i for i in range(n))
    async with pipeline(nc, fast_settings) as runners:
        await Intake(nc.jetstream()).submit(tenant=tenant, source="line-protocol",
                                            content_type=LP, body=body, identity="request")
    p = await parsed(nc, tenant)
    assert (p.values_received, p.values_rejected, p.reasons) == (n, n, {"malformed_row": n})
    rejected = [decode("readings", m.data) for m in
                await stream_messages(nc, "READINGS", f"tagus.readings.{tenant}.rejected")]
    entries = [r for e in rejected for r in e.rejected]
    assert sum(r.count for r in entries) == n
    assert len(entries) <= 1_001  # 1,000 itemised, then one summary entry per chunk
    assert "not itemised" in entries[-1].detail
    assert runners["questdb-rejected"].stats.dead_lettered == 0


async def test_fetches_are_bounded_by_bytes(nc):
    """Thirty 1 MB messages, a batch of 100 and 4 MB per fetch: never more than 4 MB."""
    js = nc.jetstream()
    stream, durable = "BOUNDED_TEST", "bounded"
    with contextlib.suppress(Exception):
        await js.delete_stream(stream)
    from nats.js import api

    await js.add_stream(api.StreamConfig(name=stream, subjects=["bounded.test"]))
    for i in range(30):
        await js.publish("bounded.test", bytes([i % 256]) * 1_000_000)
    await js.add_consumer(stream, api.ConsumerConfig(durable_name=durable,
                                                     ack_policy=api.AckPolicy.EXPLICIT))
    puller = Puller(nc, stream, durable, max_bytes=4_000_000)
    puller.max_bytes = 4_000_000  # below the server's max_payload floor, for the test
    got, sizes = 0, []
    try:
        while got < 30:
            msgs = await puller.fetch(100, timeout=1)
            assert msgs, "the stream still holds messages"
            sizes.append(sum(len(m.data) for m in msgs))
            got += len(msgs)
            for m in msgs:
                await m.ack()
    finally:
        await puller.close()
        await js.delete_stream(stream)
    assert max(sizes) <= 4_000_000 and len(sizes) >= 8


@pytest.mark.parametrize("command", [["status"], ["topology"], ["deadletters", "list"]])
def test_cli_fails_fast_when_nats_is_unreachable(command, tmp_path):
    env = {**os.environ, "TAGUS_NATS_URL": f"nats://127.0.0.1:{free_port()}",
           "TAGUS_CLI_TIMEOUT_S": "2", "TAGUS_DATA_DIR": str(tmp_path)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ops.cli", *command], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert time.monotonic() - started < 20
    last = done.stderr.strip().splitlines()[-1]
    assert "NATS unreachable" in last and "after 2 s" in last


async def test_an_event_naming_another_tenant_than_its_subject_is_refused(nc, fast_settings):
    """A tenant's NATS user may publish only its own subjects; the body must agree, or
    tenant a could write readings into tenant b."""
    from bus.publish import headers_for
    from contracts.readings import ReadingsReported
    from contracts.registry import encode

    victim = _tenant("victim")
    now = utc_now()
    forged = ReadingsReported(event_id=derive_id("forged", victim), tenant=victim,
                              occurred_at=now, recorded_at=now, source="attacker",
                              series=[Series(sensor_id="p1", unit="m", values=[1.0],
                                             timestamps_ns=[Y2024_NS])])
    js = nc.jetstream()
    await js.publish("tagus.readings.attacker.reported", encode(forged),
                     headers=headers_for(forged))
    comps, topo = wiring.components(fast_settings), wiring.topology(fast_settings)
    runner = Runner(nc, comps["normalise-units"], topo.consumer("normalise-units"),
                    fetch_timeout_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: runner.stats.dead_lettered == 1, what="refused")
    finally:
        stop.set()
        await task
    (dead,) = [decode("deadletter", m.data) for m in await stream_messages(nc, "DEADLETTER")]
    assert dead.error_kind == "invalid" and "refused" in dead.reason
    assert await stream_messages(nc, "READINGS", f"tagus.readings.{victim}.>") == []
