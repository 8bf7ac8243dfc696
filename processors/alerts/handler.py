"""The alert processors (one per stream they watch) and the periodic evaluation task.

Pure.  Resources, loaded by the runner as of the input:

- ``config``: the tenant's documents (``alerts``, ``assets``, ``rules``, ``tenant``);
- ``alert_book``: the tenant's pending and open alerts as of the input
  (``contracts.alerts.AlertBook``, the fold of its ``alert.*`` events);
- ``recent_readings`` (readings only): the stored readings before the batch that rate
  rules compare with, {sensor: (epoch ns, values)};
- ``alert_inputs`` (task ``alerts.evaluate`` only): what the clock rules judge
  (``processors.alerts.periodic``).

Each rule kind is judged by exactly one of them (one writer per rule and subject):
readings -> threshold, rate_of_change; intake -> intake; tasks -> task_failed;
schedules -> schedule_deviation, tank_breach (schedule); forecasts -> tank_breach
(forecast); the periodic task -> stale, forecast_deviation, dead_letters, digests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bus.components import Context, Processor, TaskWorker
from contracts.alerts import evaluation_instant
from contracts.forecasts import ForecastIssued
from contracts.intake import IntakeFailed, IntakeParsed
from contracts.readings import ReadingsNormalised
from contracts.schedules import ScheduleDeviated, ScheduleProposed, ScheduleReleased
from contracts.tasks import TaskCompleted, TaskFailed
from processors.alerts import discrete, periodic, readings
from processors.alerts.machine import Machine

NEEDS = ("config", "alert_book")
TASK_KIND = "alerts.evaluate"

# processor (consumer) name -> what it accepts (a consumer reads one stream)
ALERTS = {
    "alerts-readings": (ReadingsNormalised,),
    "alerts-intake": (IntakeParsed, IntakeFailed),
    "alerts-tasks": (TaskFailed, TaskCompleted),
    "alerts-schedule": (ScheduleProposed, ScheduleDeviated, ScheduleReleased),
    "alerts-forecast": (ForecastIssued,),
}


def _setup(ctx: Context):
    config = ctx.resources["config"]
    tenant, doc = config.get("tenant"), config.get("alerts")
    if tenant is None or tenant.suspended or doc is None or not doc.rules:
        return None, config
    return doc, config


def handle(event, ctx: Context) -> list:
    doc, config = _setup(ctx)
    if doc is None:
        return []
    m = Machine(ctx.resources["alert_book"], ctx, as_of=event.recorded_at)
    if isinstance(event, ReadingsNormalised):
        readings.evaluate(event, doc, config.get("assets"), m,
                          ctx.resources.get("recent_readings") or {})
    elif isinstance(event, IntakeParsed | IntakeFailed):
        discrete.intake(event, doc, m)
    elif isinstance(event, TaskFailed | TaskCompleted):
        discrete.task(event, doc, m)
    elif isinstance(event, ForecastIssued):
        discrete.forecast(event, doc, config.get("rules"), m)
    else:
        discrete.schedule(event, doc, config.get("rules"), m)
    return m.out


def evaluate(event, ctx: Context) -> list:
    """Task ``alerts.evaluate``: the clock rules at ``evaluation_instant(event)``."""
    doc, config = _setup(ctx)
    if doc is None:
        return []
    at = evaluation_instant(event)
    m = Machine(ctx.resources["alert_book"], ctx, as_of=at)
    periodic.evaluate(doc, config.get("assets"), ctx.resources["alert_inputs"] or {}, at, m)
    periodic.digest_due(doc, at, ctx, m)
    return m.out


HANDLERS = {TASK_KIND: evaluate}
# what the loaders fetch is decided here (pure): sensors with rate rules, the evaluation's
PLANS = {"select": readings.rate_sensors, "plan": periodic.plan}


def components(loaders: Mapping[str, Callable[..., Any]]) -> list:
    """The processors and the task worker, with the loaders the bootstrap binds
    (``config``, ``alert_book``, ``recent_readings``, ``alert_inputs``)."""
    out: list = []
    for name, accepts in ALERTS.items():
        needs = NEEDS + (("recent_readings",) if name == "alerts-readings" else ())
        out.append(Processor(name=name, accepts=accepts, handle=handle, needs=needs,
                             loaders={n: loaders[n] for n in needs}))
    needs = NEEDS + ("alert_inputs",)
    out.append(TaskWorker(name="worker-alerts", handlers=HANDLERS, needs=needs,
                          loaders={n: loaders[n] for n in needs}, time_limit_s=120,
                          preload=("processors.alerts.handler",)))
    return out
