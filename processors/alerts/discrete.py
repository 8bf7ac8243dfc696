"""Rules on single events (pure): uploads that fail or are mostly rejected, failed tasks,
pumps that deviate from the released schedule, tanks predicted out of bounds.

Each raises on the event that shows the condition and clears on the event that shows it
is over: a source's next good upload, the next completed task of the kind, the next
release, the next prediction that keeps the tank within its bounds.
"""

from __future__ import annotations

from datetime import timedelta

from contracts.alerts import AlertsDoc
from contracts.forecasts import ForecastIssued
from contracts.intake import IntakeFailed, IntakeParsed
from contracts.schedules import ScheduleDeviated, ScheduleProposed, ScheduleReleased
from contracts.tasks import TaskCompleted, TaskFailed
from processors.alerts.machine import Machine, Observation


def intake(event: IntakeParsed | IntakeFailed, doc: AlertsDoc, m: Machine) -> None:
    source = event.source or "unknown"
    name = event.filename or event.intake_id
    for rule in doc.active("intake"):
        if rule.sources and source not in rule.sources:
            continue
        t = event.occurred_at
        if isinstance(event, IntakeFailed):
            if rule.on_failed:
                m.observe(rule, source, t, on=True, off=False, seen=Observation(
                    f"upload {name} from {source} failed: {event.reason}: {event.detail}",
                    detail={"intake_id": event.intake_id, "reason": event.reason}))
            continue
        judged = event.values_accepted + event.values_rejected
        if judged == 0:
            continue
        share = event.values_rejected / judged
        m.observe(rule, source, t, on=share > rule.max_rejected_share,
                  off=share <= rule.max_rejected_share, seen=Observation(
                      f"upload {name} from {source}: {event.values_rejected} of {judged} "
                      f"values rejected ({share:.0%}; reasons {dict(event.reasons)})",
                      value=share, limit=rule.max_rejected_share, unit="1",
                      detail={"intake_id": event.intake_id}),
                  cleared=f"upload {name} from {source} accepted ({share:.0%} rejected)")


def task(event: TaskFailed | TaskCompleted, doc: AlertsDoc, m: Machine) -> None:
    for rule in doc.active("task_failed"):
        if rule.kinds and event.kind not in rule.kinds:
            continue
        if isinstance(event, TaskFailed):
            m.observe(rule, event.kind, event.occurred_at, on=True, off=False,
                      seen=Observation(f"task {event.kind} failed: {event.reason}"
                                       + (f" ({event.detail})" if event.detail else ""),
                                       detail={"task_id": event.task_id,
                                               "retryable": event.retryable}))
        else:
            m.clear(rule, event.kind, event.occurred_at,
                    f"task {event.kind} completed again ({event.task_id})")


def _rule_bounds(rules_doc) -> dict[str, list]:
    return {name: [r.min_level_m, r.max_level_m]
            for name, r in (rules_doc.tanks.items() if rules_doc else ())}


def schedule(event, doc: AlertsDoc, rules_doc, m: Machine) -> None:
    if isinstance(event, ScheduleDeviated):
        for rule in doc.active("schedule_deviation"):
            if rule.pumps and event.pump not in rule.pumps:
                continue
            m.observe(rule, event.pump, event.period_start, on=True, off=False,
                      seen=Observation(
                          f"pump {event.pump} should have been at {event.expected:g} from "
                          f"{event.period_start:%Y-%m-%d %H:%M} UTC; {event.sensor} says "
                          f"{event.observed:g}" + (f" ({event.detail})" if event.detail else ""),
                          value=event.observed, limit=event.expected, unit="1",
                          detail={"schedule_id": event.schedule_id, "sensor": event.sensor}))
    elif isinstance(event, ScheduleReleased):
        for rule in doc.active("schedule_deviation"):
            for held in m.book.of_rule(rule.name):
                m.clear(rule, held.subject, event.occurred_at,
                        f"schedule version {event.version} released")
    elif isinstance(event, ScheduleProposed):
        for rule in doc.active("tank_breach"):
            if rule.source == "schedule":
                bounds = _rule_bounds(rules_doc) | {k: list(v) for k, v in
                                                    event.tank_bounds.items()}
                _tanks(rule, m, event.occurred_at, event.start, event.period_s, event.tanks,
                       bounds, where=f"proposed schedule {event.event_id}")


def forecast(event: ForecastIssued, doc: AlertsDoc, rules_doc, m: Machine) -> None:
    """A forecast of ``tank:<name>`` (its median, m) against the ``rules`` bounds."""
    if not event.series.startswith("tank:"):
        return
    bounds = _rule_bounds(rules_doc)
    for rule in doc.active("tank_breach"):
        if rule.source == "forecast":
            _tanks(rule, m, event.occurred_at, event.valid_from, event.step_s,
                   {event.series[5:]: event.p50}, bounds, where=f"forecast {event.event_id}")


def _tanks(rule, m: Machine, t, start, step_s: int, levels: dict[str, list[float]],
           bounds: dict, *, where: str) -> None:
    """Levels (m) per period of ``step_s`` from ``start``; bounds ``[low, high]`` (m)."""
    periods = int(rule.horizon_h * 3600 // step_s) + 1
    for tank, series in sorted(levels.items()):
        if rule.tanks and tank not in rule.tanks:
            continue
        lo, hi = (list(bounds.get(tank) or []) + [None, None])[:2]
        if lo is None and hi is None:
            continue
        breach = None
        for k, level in enumerate(series[:periods]):
            if lo is not None and level < lo + rule.margin_m:
                breach = (k, level, "below", lo)
                break
            if hi is not None and level > hi - rule.margin_m:
                breach = (k, level, "above", hi)
                break
        if breach is None:
            m.observe(rule, tank, t, on=False, off=True, seen=Observation(""),
                      cleared=f"tank {tank} within its bounds in the {where}")
            continue
        k, level, side, bound = breach
        when = start + timedelta(seconds=k * step_s)
        m.observe(rule, tank, t, on=True, off=False, since=t, seen=Observation(
            f"tank {tank} predicted {side} its bound {bound:g} m at {when:%Y-%m-%d %H:%M} "
            f"UTC ({level:.3g} m) in the {where}",
            value=level, limit=bound, unit="m", detail={"at": when.isoformat(), "side": side}))
