"""Pump schedules: proposed (verified in EPANET), approved, released to SCADA,
acknowledged by SCADA, and deviations of what ran from what was released.

``schedule.released`` goes to ``tagus.schedule.<tenant>.released``: the subject SCADA
gateways subscribe to (a tenant's NATS user may), also bridged to MQTT
(``tagus/schedule/<tenant>/released``) and OPC UA.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from contracts.base import Event


class PumpPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One pump over the horizon: ``speeds[k]`` for period k (0 = off, else the relative
    speed in (0, 1]; 1 for a fixed-speed pump that runs); ``reasons[k]``: why, in words an
    operator reads ("cheap period", "tank T1 at its lower bound", "minimum run time")."""

    pump: str
    speeds: list[float]
    reasons: list[str] = []


class ScheduleProposed(Event, frozen=True, kw_only=True, tag="schedule.proposed"):
    """A schedule from the optimiser.  ``verified``: EPANET's extended-period simulation of
    it keeps every tank within its bounds (``feasibility`` says per tank); a schedule that
    is not verified is never released.  ``tanks``: EPANET levels (m) at each period start
    and at the end; ``baseline_*``: the network's own controls under the same demand,
    levels and tariff; ``saving`` = baseline_cost - cost.  ``inputs``: the forecast(s),
    initial levels, tariff and config versions, the released schedule it replaces."""

    task_id: str
    start: datetime
    period_s: int
    pumps: list[PumpPlan]
    tanks: dict[str, list[float]] = {}
    tank_bounds: dict[str, list[float]] = {}
    energy_kwh: float
    cost: float
    currency: str = "EUR"
    baseline_energy_kwh: float | None = None
    baseline_cost: float | None = None
    saving: float | None = None
    verified: bool
    status: str = ""  # optimal, feasible, fallback: ..., infeasible: ...
    reason: str = ""
    feasibility: dict[str, Any] = {}
    solver: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    mode: str = "advisory"  # the tenant's mode when proposed: advisory | automatic, or
    # what-if (an operator's question, never released)

    @property
    def schedule_id(self) -> str:
        return self.event_id


class ScheduleApproved(Event, frozen=True, kw_only=True, tag="schedule.approved"):
    """An operator (token ``by``) approved a proposed schedule in advisory mode."""

    schedule_id: str
    by: str
    comment: str = ""


class ScheduleReleased(Event, frozen=True, kw_only=True, tag="schedule.released"):
    """What SCADA is to run: the pump plans from ``start`` in periods of ``period_s``.
    ``version`` counts the tenant's releases; ``released_by``: ``automatic`` or the
    approving token's name."""

    schedule_id: str
    version: int
    start: datetime
    period_s: int
    pumps: list[PumpPlan]
    released_by: str
    proposed_event_id: str


class ScheduleAcknowledged(Event, frozen=True, kw_only=True, tag="schedule.acknowledged"):
    """SCADA confirmed it received (and loaded) a released schedule."""

    schedule_id: str
    version: int
    channel: str  # opcua, mqtt, nats, api
    by: str = ""


class ScheduleDeviated(Event, frozen=True, kw_only=True, tag="schedule.deviated"):
    """What ran differs from what was released: ``pump`` should have been at
    ``expected`` (relative speed, 0 = off) in the period from ``period_start`` and the
    readings of ``sensor`` say ``observed``."""

    schedule_id: str
    pump: str
    period_start: datetime
    expected: float
    observed: float
    sensor: str
    detail: str = ""
