"""Running components: one process can host several runners (or one, as a replica)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass

import structlog
from nats.aio.client import Client
from nats.js.errors import NotFoundError as JsNotFound

from bus.runner import Runner, RunnerStats
from bus.topology import Topology
from ops import wiring
from ops.settings import Settings

log = structlog.get_logger("tagus.service")


@dataclass(frozen=True)
class ConsumerPosition:
    """Where a durable consumer stands: lag is what it has not acknowledged yet."""

    stream: str
    durable: str
    delivered_stream_seq: int
    ack_floor_stream_seq: int
    num_pending: int  # not yet delivered
    num_ack_pending: int  # delivered, not yet acknowledged
    num_redelivered: int

    @property
    def lag(self) -> int:
        return self.num_pending + self.num_ack_pending


async def positions(nc: Client, topology: Topology) -> list[ConsumerPosition]:
    js = nc.jetstream()
    out = []
    for spec in topology.consumers:
        try:
            info = await js.consumer_info(spec.stream, spec.durable)
        except JsNotFound:
            continue
        out.append(ConsumerPosition(
            spec.stream, spec.durable, info.delivered.stream_seq or 0,
            info.ack_floor.stream_seq or 0, info.num_pending or 0,
            info.num_ack_pending or 0, info.num_redelivered or 0))
    return out


async def wait_caught_up(nc: Client, topology: Topology, *, timeout_s: float = 120.0,
                         on_progress=None) -> list[ConsumerPosition]:
    """Return once every consumer of ``topology`` has acknowledged everything pending."""
    deadline = time.monotonic() + timeout_s
    while True:
        pos = await positions(nc, topology)
        if on_progress:
            on_progress(pos)
        if all(p.lag == 0 for p in pos):
            return pos
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumers still behind after {timeout_s}s: "
                               + ", ".join(f"{p.durable} lag {p.lag}" for p in pos if p.lag))
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def components_running(nc: Client, settings: Settings, topology: Topology, *,
                             on_progress=None, batch: int = 50, timeout_s: float = 3600.0):
    """Run every component in this process while the body runs; on a normal exit, keep
    them running until all consumers have caught up, then stop them."""
    comps = wiring.components(settings)
    stop = asyncio.Event()
    runners = [runner_for(nc, c, topology.consumer(n), batch=batch) for n, c in comps.items()
               if n in {s.durable for s in topology.consumers}]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        yield runners
        await wait_caught_up(nc, topology, timeout_s=timeout_s, on_progress=on_progress)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def run_components(settings: Settings, names: list[str], stop: asyncio.Event,
                         *, batch: int = 100) -> list[RunnerStats]:
    """Run the named components until ``stop`` is set, then drain the connection."""
    comps = wiring.components(settings)
    unknown = [n for n in names if n not in comps]
    if unknown:
        raise SystemExit(f"unknown component(s) {unknown}; known: {sorted(comps)}")
    topo = wiring.topology(settings)
    from ops.telemetry import runner_health

    service = "tagus-" + "+".join(names)
    nc = await wiring.nats_connection(settings, name=service)
    try:
        runners = [runner_for(nc, comps[n], topo.consumer(n), batch=batch) for n in names]
        tasks = {n: asyncio.create_task(r.run(stop)) for n, r in zip(names, runners,
                                                                      strict=True)}
        # TAGUS_METRICS_PORT: /healthz, /readyz, /metrics while the runners run
        async with runner_health(settings, nc, [topo.consumer(n) for n in names], tasks,
                                 service):
            return list(await asyncio.gather(*tasks.values()))
    finally:
        await nc.drain()


def runner_for(nc: Client, component, consumer, *, batch: int = 100):
    """The runner of a component: task workers get the task runner."""
    from bus.components import TaskWorker
    from bus.tasks import TaskRunner

    if isinstance(component, TaskWorker):
        return TaskRunner(nc, component, consumer)
    return Runner(nc, component, consumer, batch=batch)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
