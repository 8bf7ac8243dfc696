"""Runs of the digital twin (task ``simulate``): what EPANET says a scenario does to the
tenant's network over a horizon, and how far the twin was from reality in the past days.

Units: s, m, m3/s, kW, kWh, the tariff's currency.  Per-period series have one value per
period of ``period_s`` from ``start``; tank levels one more (the end of the horizon).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from contracts.base import Event


class SimulationScenario(msgspec.Struct, frozen=True, kw_only=True):
    """What was simulated: ``demand`` (``forecast`` or ``actual``) and per zone what drove
    it in words; ``schedule``: ``schedule <id>`` (a proposal, or ``in force vN`` of a
    release), ``own controls``, or ``given statuses``; pumps out of service; the demand
    multiplier on top; the initial levels (m) and where each came from."""

    demand: str
    demand_sources: dict[str, str] = {}
    schedule: str
    out_of_service: list[str] = []
    demand_multiplier: float = 1.0
    initial_levels_m: dict[str, float] = {}
    initial_level_sources: dict[str, str] = {}


class TankRun(msgspec.Struct, frozen=True, kw_only=True):
    """A tank's level at each period start and at the end (m), its lowest and highest
    level over every hydraulic step, and the model's [min, max] levels."""

    tank: str
    levels_m: list[float]
    min_m: float
    max_m: float
    lower_m: float
    upper_m: float


class PumpRun(msgspec.Struct, frozen=True, kw_only=True):
    """A pump per period: ``status`` the share of the period it ran (0..1), ``speed`` the
    relative speed it was given (None: its own controls decided), mean ``flow_m3s``,
    mean ``head_m`` while running (None when off all period), mean ``power_kw``,
    ``energy_kwh`` and ``cost``."""

    pump: str
    status: list[float]
    speed: list[float | None] = []
    flow_m3s: list[float]
    head_m: list[float | None]
    power_kw: list[float]
    energy_kwh: list[float]
    cost: list[float] = []


class TankFit(msgspec.Struct, frozen=True, kw_only=True):
    """Simulated minus measured level (the sensor's offset included) at every reading of
    the days compared: root mean square, mean (bias) and largest absolute error, m; None
    with ``reason`` when the tank cannot be compared (no level sensor, no readings)."""

    tank: str
    sensor: str | None = None
    points: int = 0
    rmse_m: float | None = None
    bias_m: float | None = None
    max_abs_m: float | None = None
    rmse_per_day_m: list[float | None] = []
    reason: str = ""


class PumpFit(msgspec.Struct, frozen=True, kw_only=True):
    """Simulated minus measured flow, per period with readings: RMSE and bias in m3/s,
    RMSE as % of the mean measured flow while running."""

    pump: str
    sensor: str | None = None
    points: int = 0
    rmse_m3s: float | None = None
    bias_m3s: float | None = None
    rmse_pct: float | None = None
    reason: str = ""


class Calibration(msgspec.Struct, frozen=True, kw_only=True):
    """The twin against the readings over ``days`` whole days before the start (each
    simulated from its measured start levels, with measured demand and the pumps driven
    by their readings): a KPI of how far the model is from reality."""

    days: int
    windows: list[datetime] = []
    period_s: int = 300
    tanks: list[TankFit] = []
    pumps: list[PumpFit] = []
    notes: list[str] = []


class SimulationCompleted(Event, frozen=True, kw_only=True, tag="simulation.completed"):
    """One run of the twin for task ``task_id`` from ``start`` over ``periods`` periods of
    ``period_s``.  ``min_pressure_m``: per zone (or ``*``, every junction) the lowest
    pressure at any junction in each period.  ``warnings``: negative pressure, tanks
    empty or full, pumps outside their curve, EPANET's own, missing inputs.  ``inputs``:
    configuration versions, prices per kWh, what was loaded."""

    task_id: str
    start: datetime
    period_s: int
    periods: int
    scenario: SimulationScenario
    tanks: list[TankRun] = []
    pumps: list[PumpRun] = []
    min_pressure_m: dict[str, list[float]] = {}
    energy_kwh: float
    cost: float
    currency: str = "EUR"
    warnings: list[str] = []
    calibration: Calibration | None = None
    inputs: dict[str, Any] = {}

    @property
    def simulation_id(self) -> str:
        return self.event_id
