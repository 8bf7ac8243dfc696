"""The chain processor: an event in, the task requests its tenant's chain rules make out.

Pure.  Resource ``config`` (as of the event): the tenant, its assets and its ``chains``
document (a configured tenant without one gets ``contracts.config.DEFAULT_CHAINS``; an
unconfigured tenant gets nothing).  Requests keep the event's correlation id (one chain,
one correlation from the first reading to the released schedule) and pin the
configuration versions in force, so the task sees what the rule saw.
"""

from __future__ import annotations

from datetime import timedelta

from bus.components import Context
from contracts.config import ChainsDoc
from contracts.forecasts import ForecastIssued
from contracts.intake import IntakeParsed
from contracts.readings import ReadingsNormalised
from contracts.schedules import ScheduleProposed
from contracts.tasks import TaskCompleted, TaskFailed, TaskRequested
from processors.chain.rules import matches, params_for, task_id_for

NEEDS = ("config",)


def handle(event, ctx: Context) -> list[TaskRequested]:
    config = ctx.resources["config"]
    tenant = config.get("tenant")
    if tenant is None or tenant.suspended:
        return []
    chains = config.get("chains") or ChainsDoc()
    out = []
    for rule in chains.rules:
        if not matches(rule, event, config.get("assets"), tenant):
            continue
        out.append(TaskRequested(
            event_id=task_id_for(rule, event), tenant=event.tenant,
            occurred_at=event.occurred_at, recorded_at=ctx.now, causation_id=event.event_id,
            correlation_id=event.correlation_id or event.event_id, kind=rule.request,
            params=params_for(rule, event), schedule=rule.name,
            requested_by=f"chain:{rule.name}",
            config_versions=dict(config.get("versions") or {}),
            not_before=(event.occurred_at + timedelta(seconds=rule.delay_s)
                        if rule.delay_s else None)))
    return out


# one processor per stream the rules may listen to (a consumer reads one stream)
CHAINS = {
    "chain-readings": (ReadingsNormalised,),
    "chain-intake": (IntakeParsed,),
    "chain-tasks": (TaskCompleted, TaskFailed),
    "chain-forecast": (ForecastIssued,),
    "chain-schedule": (ScheduleProposed,),
}
