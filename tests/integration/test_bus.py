"""The backbone against a real nats-server: dedup, dead letters, topology, traces."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import nats.errors
import pytest

from bus.components import Processor
from bus.publish import publish
from bus.runner import Runner
from bus.subjects import subject_for
from bus.topology import consumer_for, ensure_topology
from contracts.deadletters import MessageDeadLettered
from contracts.readings import ReadingsNormalised, ReadingsReported
from contracts.registry import decode, encode
from ops import wiring
from processors.normalise import reported as units
from tests.helpers import eventually, reported, stream_messages

pytestmark = pytest.mark.servers


@contextlib.asynccontextmanager
async def running(nc, component, consumer):
    stop = asyncio.Event()
    runner = Runner(nc, component, consumer, batch=20, fetch_timeout_s=0.2)
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_same_event_published_twice_is_stored_once(nc):
    js = nc.jetstream()
    event = reported(1)
    first = await publish(js, event)
    second = await publish(js, event)
    assert not first.duplicate and second.duplicate
    assert second.seq == first.seq
    msgs = await stream_messages(nc, "READINGS")
    assert len(msgs) == 1
    assert decode("readings", msgs[0].data) == event


async def test_processor_outputs_have_derived_ids_and_are_acked(nc, fast_settings):
    topo = wiring.topology(fast_settings)
    for i in range(10):
        await publish(nc.jetstream(), reported(i))
    async with running(nc, wiring.components(fast_settings)["normalise-units"],
                       topo.consumer("normalise-units")) as r:
        await eventually(lambda: r.stats.handled == 10, what="10 handled")
    outs = [decode("readings", m.data)
            for m in await stream_messages(nc, "READINGS", "tagus.readings.*.normalised")]
    assert len(outs) == 10
    inputs = {reported(i).event_id for i in range(10)}
    assert {o.causation_id for o in outs} == inputs
    # l/s -> m3/s
    assert all(o.series[0].unit == "m3/s" for o in outs)
    info = await nc.jetstream().consumer_info("READINGS", "normalise-units")
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_poison_message_is_dead_lettered_and_the_rest_flows(nc, fast_settings):
    js = nc.jetstream()
    topo = wiring.topology(fast_settings)
    await publish(js, reported(1))
    garbage = b"\xc1\xff not msgpack at all"
    await js.publish("tagus.readings.acme.reported", garbage)
    # valid msgpack, wrong contract: values are strings
    bad = msgspec.msgpack.encode({"type": "readings.reported", "event_id": "x", "tenant": "acme",
                                  "occurred_at": "2024-01-01T00:00:00Z",
                                  "recorded_at": "2024-01-01T00:00:00Z", "source": "t",
                                  "series": [{"sensor_id": "a", "unit": "m",
                                              "timestamps_ns": [1], "values": ["high"]}]})
    await js.publish("tagus.readings.acme.reported", bad)
    for i in range(2, 6):
        await publish(js, reported(i))
    async with running(nc, wiring.components(fast_settings)["normalise-units"],
                       topo.consumer("normalise-units")) as r:
        await eventually(lambda: r.stats.handled == 5 and r.stats.dead_lettered == 2,
                         what="5 handled, 2 dead-lettered")
    dead = [decode("deadletter", m.data) for m in await stream_messages(nc, "DEADLETTER")]
    assert [d.error_kind for d in dead] == ["malformed", "invalid"]
    assert dead[0].payload == garbage and dead[1].payload == bad
    assert dead[0].stream == "READINGS" and dead[0].consumer == "normalise-units"
    assert dead[0].stream_seq == 2 and dead[1].stream_seq == 3
    assert "values" in dead[1].reason and dead[0].tenant == "acme"
    assert dead[0].subject == "tagus.readings.acme.reported"
    outs = await stream_messages(nc, "READINGS", "tagus.readings.*.normalised")
    assert len(outs) == 5
    info = await js.consumer_info("READINGS", "normalise-units")
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_handler_failing_every_delivery_is_dead_lettered_with_its_error(nc, fast_settings):
    calls = []

    def flaky(event, ctx):
        calls.append(event.event_id)
        raise RuntimeError("pump curve missing")

    proc = Processor(name="always-fails", accepts=(ReadingsReported,), handle=flaky)
    spec = consumer_for("always-fails", proc.accepts, ack_wait_s=1.0, max_deliver=3,
                        backoff_s=(0.2, 0.2))
    await ensure_topology(nc.jetstream(), wiring.topology(fast_settings).with_consumers(spec))
    await publish(nc.jetstream(), reported(7))
    async with running(nc, proc, spec) as r:
        await eventually(lambda: r.stats.dead_lettered == 1, what="dead letter")
    assert len(calls) == 3
    (dead,) = [decode("deadletter", m.data) for m in await stream_messages(nc, "DEADLETTER")]
    assert dead.error_kind == "max_deliveries" and dead.deliveries == 3
    assert "pump curve missing" in dead.reason and dead.consumer == "always-fails"
    assert dead.causation_id == reported(7).event_id


async def test_never_acked_message_is_dead_lettered_from_the_advisory(nc, fast_settings):
    """A worker that dies on a message every time: the server's advisory names it."""
    proc = Processor(name="crashy", accepts=(ReadingsReported,), handle=lambda e, c: [])
    spec = consumer_for("crashy", proc.accepts, ack_wait_s=0.5, max_deliver=2,
                        backoff_s=(0.5,))
    js = nc.jetstream()
    await ensure_topology(js, wiring.topology(fast_settings).with_consumers(spec))
    await publish(js, reported(3))
    runner = Runner(nc, proc, spec)
    advisory = await runner._watch_max_deliveries()  # the runner's own watcher, alone
    sub = await js.pull_subscribe_bind("crashy", stream="READINGS")
    for _ in range(2):  # fetched, never acked: what a crashing worker looks like
        (msg,) = await sub.fetch(1, timeout=5)
        await asyncio.sleep(0.6)
    # the server notices the exhausted message when a worker next asks for work
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=1.5)
    await eventually(lambda: runner.stats.dead_lettered == 1, timeout_s=10, what="advisory")
    await advisory.unsubscribe()
    await sub.unsubscribe()
    (dead,) = [decode("deadletter", m.data) for m in await stream_messages(nc, "DEADLETTER")]
    assert dead.error_kind == "max_deliveries" and dead.stream_seq == 1
    assert decode("readings", dead.payload).event_id == reported(3).event_id


async def test_concurrent_processor_overlaps_tenants_keeps_each_tenants_order(
        nc, fast_settings):
    """``concurrency`` > 1: events of different tenants are in hand at once, one
    tenant's events are handled in stream order, an ``alone`` event has nothing else in
    flight, a failing event is retried on its own, and every message is settled."""
    import threading
    import time

    lock = threading.Lock()
    in_flight: list[str] = []
    seen: list[tuple[str, int]] = []
    overlaps: list[int] = []
    alone_company: list[list[str]] = []
    failed_once: set[str] = set()

    def slow(event, ctx):
        i = int(event.series[0].values[0])
        with lock:
            if i == 13:
                alone_company.append(list(in_flight))
            in_flight.append(event.event_id)
            overlaps.append(len(in_flight))
        time.sleep(0.05)
        with lock:
            in_flight.remove(event.event_id)
            seen.append((event.tenant, i))
        if i == 7 and event.event_id not in failed_once:
            failed_once.add(event.event_id)
            raise RuntimeError("flaky once")
        return []

    proc = Processor(name="overlapping", accepts=(ReadingsReported,), handle=slow,
                     concurrency=4, alone=lambda e: e.series[0].values[0] == 13.0)
    spec = consumer_for("overlapping", proc.accepts, ack_wait_s=2.0, max_deliver=3,
                        backoff_s=(0.2, 0.2))
    js = nc.jetstream()
    await ensure_topology(js, wiring.topology(fast_settings).with_consumers(spec))
    tenants = ("acme", "bravo", "carol", "delta")
    for i in range(20):
        await publish(js, reported(i, tenant=tenants[i % 4]))
    async with running(nc, proc, spec) as r:
        await eventually(lambda: r.stats.handled == 20, what="20 handled")
    assert max(overlaps) > 1, "nothing overlapped"
    assert max(overlaps) <= 4
    assert alone_company == [[]], "the alone event shared the runner"
    assert r.stats.retried == 1 and r.stats.dead_lettered == 0
    for t in tenants:  # the retried event came back after its tenant's later ones
        order = [i for tt, i in seen if tt == t and i != 7]
        assert order == sorted(order), (t, order)
    info = await js.consumer_info("READINGS", "overlapping")
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_ensure_topology_twice_changes_nothing(nc, fast_settings):
    topo = wiring.topology(fast_settings)
    js = nc.jetstream()
    assert await ensure_topology(js, topo) == []
    before = {s.config.name: s.config for s in await js.streams_info()}
    assert await ensure_topology(js, topo) == []
    after = {s.config.name: s.config for s in await js.streams_info()}
    assert before == after
    changed = wiring.topology(fast_settings.model_copy(update={"consumer_ack_wait_s": 2.0}))
    changes = await ensure_topology(js, changed)
    assert changes == [f"updated consumer {c.stream}/{c.durable}: ack_wait"
                       + (", backoff" if c.backoff_s else "") for c in topo.consumers]
    info = await js.consumer_info("READINGS", "normalise-units")
    assert info.config.backoff[0] == 2.0


async def test_trace_started_at_publish_is_parent_of_processor_span(nc, fast_settings, spans):
    from bus.tracing import tracer

    topo = wiring.topology(fast_settings)
    with tracer().start_as_current_span("upload") as parent:
        await publish(nc.jetstream(), reported(1))
    async with running(nc, wiring.components(fast_settings)["normalise-units"],
                       topo.consumer("normalise-units")) as r:
        await eventually(lambda: r.stats.handled == 1)
    (handled,) = [s for s in spans.get_finished_spans() if s.name == "normalise-units handle"]
    assert handled.parent is not None
    assert handled.parent.span_id == parent.get_span_context().span_id
    assert handled.context.trace_id == parent.get_span_context().trace_id
    # and the output carries the same trace onward
    (out,) = await stream_messages(nc, "READINGS", "tagus.readings.*.normalised")
    assert f"{parent.get_span_context().trace_id:032x}" in out.headers["traceparent"]


async def test_subjects_carry_the_tenant(nc):
    e = reported(1, tenant="utility-b")
    assert subject_for(e) == "tagus.readings.utility-b.reported"
    await publish(nc.jetstream(), e)
    msgs = await stream_messages(nc, "READINGS", "tagus.readings.utility-b.>")
    assert len(msgs) == 1 and msgs[0].headers["Nats-Msg-Id"] == e.event_id
    assert encode(e) == msgs[0].data


async def test_dead_letters_are_listed_and_can_be_republished(nc, fast_settings):
    from ops.deadletters import format_rows, list_dead_letters, republish

    js = nc.jetstream()
    topo = wiring.topology(fast_settings)
    await js.publish("tagus.readings.acme.reported", b"\xc1broken")
    await publish(js, reported(1, tenant="other"))
    async with running(nc, wiring.components(fast_settings)["normalise-units"],
                       topo.consumer("normalise-units")) as r:
        await eventually(lambda: r.stats.dead_lettered == 1 and r.stats.handled == 1)
    rows = await list_dead_letters(nc, tenant="acme")
    assert [(d.error_kind, d.stream_seq) for _, d in rows] == [("malformed", 1)]
    assert await list_dead_letters(nc, tenant="other") == []
    assert "malformed" in format_rows(rows)
    subject = await republish(nc, rows[0][0])
    assert subject == "tagus.readings.acme.reported"
    again = await stream_messages(nc, "READINGS", "tagus.readings.acme.reported")
    assert [m.data for m in again] == [b"\xc1broken", b"\xc1broken"]
    assert again[1].headers["Tagus-Republished-From"] == f"DEADLETTER:{rows[0][0]}"
