"""A task worker process for tests: ``python -m tests.tasks_support.worker`` runs the test
handlers under the real task runner against the NATS in ``TAGUS_*`` until SIGTERM."""

from __future__ import annotations

import asyncio

from bus.components import TaskWorker
from bus.tasks import TaskRunner
from bus.topology import ConsumerSpec, ensure_topology
from ops import wiring
from ops.service import install_stop_signals
from ops.settings import load_settings
from tests.tasks_support.handlers import HANDLERS

WORKER = TaskWorker(name="worker-test", handlers=HANDLERS, time_limit_s=30, max_attempts=3,
                    preload=("tests.tasks_support.handlers",))


def consumer(ack_wait_s: float = 2.0) -> ConsumerSpec:
    return ConsumerSpec(stream="TASKS", durable=WORKER.name,
                        filter_subjects=tuple(sorted(f"tagus.task.*.req-{k.replace('.', '-')}"
                                                     for k in WORKER.kinds)),
                        ack_wait_s=ack_wait_s, max_deliver=-1, backoff_s=())


async def main() -> None:
    settings = load_settings()
    nc = await wiring.nats_connection(settings, "tagus-test-worker")
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        spec = consumer()
        await ensure_topology(nc.jetstream(), wiring.topology(settings).with_consumers(spec))
        await TaskRunner(nc, WORKER, spec).run(stop)
    finally:
        await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
