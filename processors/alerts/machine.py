"""The life of an alert on one (rule, subject), and the events it takes (pure).

Each evaluation starts from the tenant's ``AlertBook`` as of its input and feeds the
machine observations in time order: at instant ``t`` the condition is **on** (raise
it), **off** (clear it) or neither (a value inside the hysteresis band, or nothing to
judge: keep the state).  With a minimum duration an ``on`` first makes the alert
pending; it is raised once it has held that long, or cleared unraised when it goes off
first.  Several observations of one input see each other (a batch that goes on and off
again raises and clears within itself), and at most one alert is pending or open per
(rule, subject).

Ids: ``alert_id`` and every event id derive from the input event's id, the rule, the
subject and the step's place in the input, so handling the same input again (a
redelivery, a replay) yields the same events.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bus.components import Context
from contracts.alerts import (
    AlertBook, AlertCleared, AlertPending, AlertRaised, Track,
)
from contracts.base import Event, derive_id


@dataclass
class Observation:
    """What one check found: ``value``/``limit`` in ``unit`` (SI), words for people."""

    message: str
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Machine:
    def __init__(self, book: AlertBook, ctx: Context, *, as_of: datetime) -> None:
        self.book = copy.deepcopy(book)  # the loader's copy stays as loaded
        self.ctx = ctx
        self.as_of = as_of
        self.out: list[Event] = []
        self._steps: dict[tuple[str, str], int] = {}

    def track(self, rule, subject: str) -> Track | None:
        return self.book.get(rule.name, subject)

    def observe(self, rule, subject: str, t: datetime, *, on: bool, off: bool,
                seen: Observation, since: datetime | None = None,
                cleared: str = "") -> None:
        """The condition of ``rule`` on ``subject`` at ``t`` (``since``: when it began,
        if earlier than ``t``, e.g. a stale sensor's last reading plus the allowance)."""
        held = self.track(rule, subject)
        min_s = float(getattr(rule, "min_duration_s", 0.0) or 0.0)
        if held is None:
            if not on:
                return
            began = min(since or t, t)
            if min_s > 0 and t - began < timedelta(seconds=min_s):
                self._emit(AlertPending, rule, subject, t, self._new_id(rule, subject),
                           since=began, severity=rule.severity, message=seen.message,
                           value=seen.value)
            else:
                self._raise(rule, subject, t, self._new_id(rule, subject), began, seen)
        elif held.status == "pending":
            if off:
                self._emit(AlertCleared, rule, subject, t, held.alert_id, raised=False,
                           message=cleared or f"{rule.name} on {subject}: over before "
                                              f"{min_s:g} s", value=seen.value,
                           severity=held.severity, notify=False)
            elif t - held.since >= timedelta(seconds=min_s):
                self._raise(rule, subject, t, held.alert_id, held.since, seen)
        elif off:
            self._emit(AlertCleared, rule, subject, t, held.alert_id,
                       message=cleared or f"{rule.name} on {subject}: back to normal",
                       value=seen.value, severity=held.severity, notify=rule.notify)

    def clear(self, rule, subject: str, t: datetime, message: str) -> None:
        """Clear whatever is pending or open on (rule, subject), if anything."""
        held = self.track(rule, subject)
        if held is not None:
            self._emit(AlertCleared, rule, subject, t, held.alert_id, message=message,
                       raised=held.status == "open", severity=held.severity,
                       notify=rule.notify and held.status == "open")

    # ------------------------------------------------------------ internals

    def _raise(self, rule, subject: str, t: datetime, alert_id: str, since: datetime,
               seen: Observation) -> None:
        self._emit(AlertRaised, rule, subject, t, alert_id, since=since,
                   severity=rule.severity, message=seen.message, value=seen.value,
                   limit=seen.limit, unit=seen.unit, detail=seen.detail, notify=rule.notify)

    def _new_id(self, rule, subject: str) -> str:
        n = self._steps.get((rule.name, subject), 0)
        return derive_id("alert", self.ctx.input.tenant, rule.name, subject,
                         self.ctx.input.event_id, n)

    def _emit(self, cls, rule, subject: str, t: datetime, alert_id: str, **fields) -> None:
        n = self._steps.get((rule.name, subject), 0)
        self._steps[(rule.name, subject)] = n + 1
        event = self.ctx.derive(cls, key=f"{rule.name}/{subject}/{n}", occurred_at=t,
                                alert_id=alert_id, rule=rule.name, kind=rule.kind,
                                subject=subject, as_of=self.as_of, **fields)
        self.book.apply(event)
        self.out.append(event)
