"""A runner killed with SIGKILL mid-batch loses nothing and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bus.publish import publish
from contracts.registry import decode
from tests.conftest import REPO
from tests.helpers import eventually, reported, stream_messages

pytestmark = pytest.mark.servers
N = 3000
OUT = "tagus.readings.*.normalised"


def start_runner(fast_settings) -> subprocess.Popen:
    env = dict(os.environ, TAGUS_CONSUMER_ACK_WAIT_S=str(fast_settings.consumer_ack_wait_s),
               TAGUS_CONSUMER_MAX_DELIVER=str(fast_settings.consumer_max_deliver),
               TAGUS_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "run", "normalise-units",
                             "--batch", "50"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def output_count(nc) -> int:
    info = await nc.jetstream().stream_info("READINGS", subjects_filter=OUT)
    return sum((info.state.subjects or {}).values())


async def test_sigkill_mid_batch_then_restart(nc, fast_settings):
    js = nc.jetstream()
    for i in range(N):
        await publish(js, reported(i))

    first = start_runner(fast_settings)
    try:
        done_before_kill = await eventually(
            lambda: _between(output_count(nc), 200, N - 500), interval_s=0.01,
            what="runner part-way through the inputs")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    info = await js.consumer_info("READINGS", "normalise-units")
    assert info.num_ack_pending + info.num_pending > 0, "nothing left in flight: kill came late"

    second = start_runner(fast_settings)
    try:
        async def caught_up():
            ci = await js.consumer_info("READINGS", "normalise-units")
            return ci.num_pending == 0 and ci.num_ack_pending == 0
        await eventually(caught_up, timeout_s=120, what="restarted runner catching up")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err.decode()[-2000:]

    outs = [decode("readings", m.data) for m in await stream_messages(nc, "READINGS", OUT)]
    ids = [o.event_id for o in outs]
    assert len(ids) == len(set(ids)) == N, (len(ids), len(set(ids)), done_before_kill)
    assert {o.causation_id for o in outs} == {reported(i).event_id for i in range(N)}
    assert not await stream_messages(nc, "DEADLETTER")


async def _between(count_coro, lo: int, hi: int):
    n = await count_coro
    return n if lo <= n <= hi else 0
