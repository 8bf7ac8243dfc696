"""Tasks: scheduled and on-demand work, every request, start, progress and outcome an event.

``task.requested`` goes to ``tagus.task.<tenant>.req-<kind>`` (dots of the kind become
dashes: ``req-forecast-run``), so each worker's durable consumer receives only the kinds it
does; the other transitions go to ``tagus.task.<tenant>.<transition>``.  ``task_id`` is the
request's event id: deterministic for a scheduled slot (scheduler replicas and restarts
request it once) and for a chained request (from the event that caused it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from contracts.base import Event

# task kinds known to this deployment, with what they do (workers register more)
TASK_KINDS: dict[str, str] = {
    "forecast.train": "train demand models per series (rolling-origin selection)",
    "forecast.run": "issue demand and PV forecasts",
    "simulate": "run the digital twin (EPANET) on a scenario",
    "optimise": "optimise pump schedules, verified in EPANET",
    "schedule.release": "release a verified schedule to SCADA",
    "kpi.compute": "compute the day's KPIs",
    "data.completeness": "readings received vs expected per bound sensor",
    "alerts.evaluate": "evaluate periodic alert rules (stale sensors, forecast deviation, "
                       "dead letters, digests)",
}


# what each kind publishes besides its task outcome (chain rules are checked for cycles)
TASK_PRODUCES: dict[str, tuple[str, ...]] = {
    "forecast.train": ("forecast.model_trained",),
    "forecast.run": ("forecast.issued",),
    "simulate": ("simulation.completed",),
    "optimise": ("schedule.proposed",),
    "schedule.release": ("schedule.released",),
    "kpi.compute": ("kpi.computed",),
    "data.completeness": ("kpi.computed",),
    "alerts.evaluate": ("alert.raised", "alert.cleared", "alert.pending", "alert.digest_due"),
}


# the configuration kinds a task request pins (the worker loads exactly those versions)
PINNED_KINDS = ("tenant", "network", "assets", "tariff", "rules")
KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"  # e.g. forecast.run: subject-safe


def kind_token(kind: str) -> str:
    """The subject token of a kind's requests: ``forecast.run`` -> ``req-forecast-run``."""
    return "req-" + kind.replace(".", "-")


class TaskRequested(Event, frozen=True, kw_only=True, tag="task.requested"):
    """Somebody (an operator, the scheduler, a chain rule) asks for work.

    ``slot``: the scheduled instant it is for (UTC), None on demand.  ``schedule``: the
    schedule's name, or the chain rule's.  ``requested_by``: token name, ``scheduler`` or
    ``chain:<rule>``.  ``config_versions``: configuration versions pinned at request time
    (the worker loads exactly those: a replay reproduces the outcome).
    ``time_limit_s``: the worker fails the task ("timed out") past this.
    ``not_before``: do not start before (e.g. a chained task that waits for the readings
    that triggered it to be stored, or for a debounce window to fill).
    """

    __subject_key__: ClassVar[str] = "subject_token"

    kind: str
    params: dict[str, Any] = {}
    slot: datetime | None = None
    schedule: str | None = None
    requested_by: str = ""
    config_versions: dict[str, int] = {}
    time_limit_s: float | None = None
    not_before: datetime | None = None

    @property
    def task_id(self) -> str:
        return self.event_id

    @property
    def subject_token(self) -> str:
        return kind_token(self.kind)


class _Transition(Event, frozen=True, kw_only=True):
    task_id: str
    kind: str


class TaskStarted(_Transition, frozen=True, kw_only=True, tag="task.started"):
    """A worker took the task (``attempt`` 1, 2... after redeliveries)."""

    worker: str
    attempt: int = 1
    queued_s: float = 0.0  # from the request to this start


class TaskProgressed(_Transition, frozen=True, kw_only=True, tag="task.progressed"):
    fraction: float  # 0..1
    message: str = ""


class TaskCompleted(_Transition, frozen=True, kw_only=True, tag="task.completed"):
    """Done: ``outputs`` are the ids of the events the task produced."""

    outputs: list[str] = []
    duration_s: float = 0.0
    summary: dict[str, Any] = {}


class TaskFailed(_Transition, frozen=True, kw_only=True, tag="task.failed"):
    """``retryable``: whether asking again could help (a transient cause, a time limit)
    or not (bad configuration, bad parameters)."""

    reason: str
    detail: str = ""
    retryable: bool = False
    attempt: int = 1


class TaskCancelled(_Transition, frozen=True, kw_only=True, tag="task.cancelled"):
    """Cancelled before it started (``while_running`` False) or while it ran."""

    by: str = ""
    reason: str = ""
    while_running: bool = False


class TaskCancelRequested(_Transition, frozen=True, kw_only=True,
                          tag="task.cancel_requested"):
    """An operator asked to cancel; the worker holding (or taking) it answers with
    ``task.cancelled``, or the task ends otherwise first."""

    by: str = ""
    reason: str = ""


OUTCOMES = (TaskCompleted, TaskFailed, TaskCancelled)
