"""The task runner against the real servers: outcomes, retries, time limits, cancels,
fairness between tenants, and a worker killed mid-task (issue 9)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from bus.publish import publish
from bus.tasks import TaskRunner, request_cancel
from bus.topology import ensure_topology
from contracts.base import new_id, utc_now
from contracts.registry import decode
from contracts.tasks import (
    TaskCancelled, TaskCompleted, TaskFailed, TaskProgressed, TaskRequested, TaskStarted,
)
from ops import wiring
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages
from tests.tasks_support.worker import WORKER, consumer

pytestmark = pytest.mark.servers


def _tenant(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:6]}"


def request(tenant: str, kind: str, **params) -> TaskRequested:
    now = utc_now()
    limit = params.pop("time_limit_s", None)
    return TaskRequested(event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now,
                         kind=kind, params=params, requested_by="test", time_limit_s=limit)


@contextlib.asynccontextmanager
async def worker(nc, settings, **overrides):
    from dataclasses import replace

    w = replace(WORKER, **overrides)
    spec = consumer()
    await ensure_topology(nc.jetstream(), wiring.topology(settings).with_consumers(spec))
    runner = TaskRunner(nc, w, spec, grace_s=2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def transitions(nc, task_id: str) -> list:
    return [e for e in (decode("task", m.data) for m in await stream_messages(nc, "TASKS"))
            if getattr(e, "task_id", None) == task_id and not isinstance(e, TaskRequested)]


async def outcome(nc, task_id: str):
    done = [e for e in await transitions(nc, task_id)
            if isinstance(e, TaskCompleted | TaskFailed | TaskCancelled)]
    return done[0] if len(done) == 1 else None


async def test_a_task_reports_start_progress_outputs_and_completion(nc, fast_settings):
    tenant = _tenant("ok")
    req = request(tenant, "test.sleep", seconds=0.2, steps=2)
    async with worker(nc, fast_settings):
        await publish(nc.jetstream(), req)
        await eventually(lambda: outcome(nc, req.event_id), timeout_s=30, what="outcome")
    events = await transitions(nc, req.event_id)
    kinds = [type(e) for e in events]
    assert kinds == [TaskStarted, TaskProgressed, TaskProgressed, TaskCompleted]
    done = events[-1]
    (kpi,) = [decode("kpi", m.data) for m in await stream_messages(nc, "KPI")]
    assert done.outputs == [kpi.event_id] and kpi.causation_id == req.event_id
    assert [e.fraction for e in events if isinstance(e, TaskProgressed)] == [0.5, 1.0]
    # the request again (as after the dedup window): nothing runs, nothing is published
    count = (await nc.jetstream().stream_info("TASKS")).state.messages
    async with worker(nc, fast_settings):
        await nc.jetstream().publish(f"tagus.task.{tenant}.req-test-sleep",
                                     (await stream_messages(nc, "TASKS"))[0].data)
        await asyncio.sleep(1.5)
    assert (await nc.jetstream().stream_info("TASKS")).state.messages == count + 1


async def test_permanent_failures_fail_at_once_transient_ones_are_retried(nc, fast_settings):
    tenant = _tenant("fail")
    bad_config = request(tenant, "test.fail", how="config")
    flaky = request(tenant, "test.fail", how="transient")
    async with worker(nc, fast_settings, max_attempts=2, per_tenant=2, concurrency=2):
        for r in (bad_config, flaky):
            await publish(nc.jetstream(), r)
        await eventually(lambda: outcome(nc, bad_config.event_id), timeout_s=20, what="config")
        await eventually(lambda: outcome(nc, flaky.event_id), timeout_s=30, what="transient")
    permanent = await outcome(nc, bad_config.event_id)
    assert (permanent.retryable, permanent.attempt) == (False, 1)
    assert "pump P9 is not in the network" in permanent.detail
    transient = await outcome(nc, flaky.event_id)
    assert (transient.retryable, transient.attempt) == (True, 2)
    starts = [e for e in await transitions(nc, flaky.event_id) if isinstance(e, TaskStarted)]
    assert [s.attempt for s in starts] == [1, 2]


async def test_a_task_past_its_time_limit_fails_timed_out(nc, fast_settings):
    req = request(_tenant("slow"), "test.sleep", seconds=30, steps=1, time_limit_s=1.5)
    started = time.monotonic()
    async with worker(nc, fast_settings):
        await publish(nc.jetstream(), req)
        await eventually(lambda: outcome(nc, req.event_id), timeout_s=20, what="timeout")
    failed = await outcome(nc, req.event_id)
    assert isinstance(failed, TaskFailed) and failed.reason == "timed out"
    assert time.monotonic() - started < 15


async def test_cancel_a_queued_and_a_running_task(nc, fast_settings):
    tenant = _tenant("cancel")
    running = request(tenant, "test.sleep", seconds=30, steps=30)
    queued = request(tenant, "test.sleep", seconds=0.1)
    js = nc.jetstream()
    async with worker(nc, fast_settings):
        await publish(js, running)
        await eventually(lambda: _started(nc, running.event_id), timeout_s=20, what="running")
        await publish(js, queued)  # waits: one task of a tenant at a time
        await request_cancel(js, tenant, queued.event_id, queued.kind, by="ana",
                             reason="tank 2 out of service")
        t0 = time.monotonic()
        await request_cancel(js, tenant, running.event_id, running.kind, by="ana")
        await eventually(lambda: outcome(nc, running.event_id), timeout_s=10, what="cancel")
        assert time.monotonic() - t0 < 5
        await eventually(lambda: outcome(nc, queued.event_id), timeout_s=20, what="queued")
    a, b = await outcome(nc, running.event_id), await outcome(nc, queued.event_id)
    assert isinstance(a, TaskCancelled) and a.while_running
    assert isinstance(b, TaskCancelled) and not b.while_running
    assert b.by == "ana" and b.reason == "tank 2 out of service"
    assert not [e for e in await transitions(nc, queued.event_id) if isinstance(e, TaskStarted)]


async def _started(nc, task_id) -> bool:
    return any(isinstance(e, TaskStarted) for e in await transitions(nc, task_id))


async def test_one_tenants_burst_does_not_hold_up_another_tenant(nc, fast_settings):
    """Fifty requests of tenant A, then one of tenant B: B starts within one task's
    duration of its request, not after A's fifty."""
    a, b = _tenant("burst"), _tenant("other")
    duration = 0.4
    js = nc.jetstream()
    async with worker(nc, fast_settings) as runner:
        for _ in range(50):
            await publish(js, request(a, "test.sleep", seconds=duration, steps=1))
        await eventually(lambda: runner.stats.started >= 1, timeout_s=20, what="A running")
        b_req = request(b, "test.sleep", seconds=duration, steps=1)
        await publish(js, b_req)
        sent = time.time()
        await eventually(lambda: any(t == b_req.event_id for _, t, _ in runner.stats.starts),
                         timeout_s=30, what="B started")
        b_start = next(s for _, t, s in runner.stats.starts if t == b_req.event_id)
        a_before_b = sum(1 for ten, _, s in runner.stats.starts if ten == a and s < b_start)
    waited = b_start - sent
    assert waited <= duration + 1.5, f"B waited {waited:.2f} s behind {a_before_b} of A's"
    assert a_before_b <= 3


async def test_a_worker_killed_mid_task_is_redelivered_and_completes_once(
        nc, fast_settings, tmp_path):
    tenant = _tenant("kill")
    req = request(tenant, "test.sleep", seconds=6, steps=12)
    env = {**os.environ, "TAGUS_CONSUMER_ACK_WAIT_S": "2"}
    cmd = [sys.executable, "-m", "tests.tasks_support.worker"]
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        await publish(nc.jetstream(), req)
        await eventually(lambda: _progressed(nc, req.event_id), timeout_s=60,
                         what="task under way")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            await eventually(lambda: outcome(nc, req.event_id), timeout_s=90, what="completed")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    events = await transitions(nc, req.event_id)
    assert sum(isinstance(e, TaskCompleted) for e in events) == 1
    assert [e.attempt for e in events if isinstance(e, TaskStarted)] == [1, 2]
    kpis = [decode("kpi", m.data) for m in await stream_messages(nc, "KPI")]
    assert len(kpis) == 1 and kpis[0].causation_id == req.event_id  # output published once


async def _progressed(nc, task_id) -> bool:
    return any(isinstance(e, TaskProgressed) for e in await transitions(nc, task_id))
