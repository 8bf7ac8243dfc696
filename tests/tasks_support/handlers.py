"""Small real task handlers: they sleep, report progress, fail on purpose, or crash."""

from __future__ import annotations

import os
import time

from contracts.errors import TenantConfigError, TransientError
from contracts.kpis import Kpi, KpiComputed


def sleep(event, ctx):
    seconds = float(event.params.get("seconds", 0.2))
    steps = int(event.params.get("steps", 2))
    for i in range(steps):
        time.sleep(seconds / steps)
        yield ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    yield ctx.derive(KpiComputed, day="2024-01-01", task_id=event.event_id,
                     kpis=[Kpi(name="slept", subject="worker", value=seconds, unit="s")])


def fail(event, ctx):
    if event.params.get("how") == "config":
        raise TenantConfigError("pump P9 is not in the network")
    raise TransientError("QuestDB did not answer")
    yield  # a generator


def crash(event, ctx):
    marker = event.params.get("marker")
    if marker and not os.path.exists(marker):  # die on the first attempt only
        open(marker, "w").close()
        os._exit(3)
    yield from sleep(event, ctx)


HANDLERS = {"test.sleep": sleep, "test.fail": fail, "test.crash": crash}
