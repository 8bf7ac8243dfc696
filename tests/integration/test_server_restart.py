"""The runner keeps pulling across a nats-server restart (nats-py fetch stalls, reconnects)."""

from __future__ import annotations

import asyncio

import pytest

from bus.publish import publish
from bus.runner import Runner
from ops import wiring
from ops.dev import stack
from tests.helpers import eventually, reported, stream_messages

pytestmark = pytest.mark.servers


async def test_runner_survives_nats_restart(nc, fast_settings):
    topo = wiring.topology(fast_settings)
    js = nc.jetstream()
    for i in range(20):
        await publish(js, reported(i))
    stop = asyncio.Event()
    runner = Runner(nc, wiring.components(fast_settings)["normalise-units"],
                    topo.consumer("normalise-units"), batch=10, fetch_timeout_s=0.3)
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: runner.stats.handled == 20, what="first 20 handled")
        assert stack._stop(fast_settings, "nats"), "the test stack's nats-server was not ours"
        await asyncio.sleep(1.0)  # the runner's fetches fail meanwhile
        stack.nats_up(fast_settings)
        await eventually(lambda: nc.is_connected, what="client reconnected")
        for i in range(20, 40):
            await publish(js, reported(i))
        await eventually(lambda: runner.stats.handled == 40, timeout_s=60,
                         what="20 more handled after the restart")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    outs = await stream_messages(nc, "READINGS", "tagus.readings.*.normalised")
    assert len(outs) == len({m.headers["Nats-Msg-Id"] for m in outs}) == 40
