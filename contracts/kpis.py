"""KPIs: what a day (or a run) measured, per subject (a sensor, a tank, the network)."""

from __future__ import annotations

import msgspec

from contracts.base import Event


class Kpi(msgspec.Struct, frozen=True, kw_only=True):
    """One figure: ``name`` (``completeness``, ``energy``, ``cost``...), what it is about
    (``subject``: a sensor, tank, pump or ``network``), its ``value`` in ``unit`` (SI, or
    a currency, or ``1`` for ratios)."""

    name: str
    subject: str
    value: float
    unit: str
    detail: str = ""


class KpiComputed(Event, frozen=True, kw_only=True, tag="kpi.computed"):
    """The KPIs of one tenant for one local day (``day``: YYYY-MM-DD in the tenant's zone),
    computed by task ``task_id``."""

    day: str
    task_id: str
    kpis: list[Kpi]
