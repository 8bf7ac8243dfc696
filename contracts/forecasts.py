"""Demand and PV forecasts, and the models behind them.

A series is what is forecast: ``zone:<name>`` (the summed inflow of the sensors bound to
that zone, m3/s) or ``pv:<system>`` (AC power, W).  Every forecast names every input it
used, so replaying the same inputs gives the same bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.base import Event

MODELS_BUCKET = "tagus-models"  # object store: <tenant>/<sha256> -> a model artefact


class ForecastModelTrained(Event, frozen=True, kw_only=True, tag="forecast.model_trained"):
    """A model chosen for ``series`` by rolling-origin backtests before ``origin``.

    ``metrics[candidate]``: PI1, PI2, PI3 (series unit), score, coverage, pinball per
    quantile, over the backtests.  The artefact is object ``object_name`` of bucket
    ``tagus-models`` (content-addressed by ``model_sha256``; loaded only by that hash).
    ``excluded``: history left out of training, with reasons (gaps, stuck sensor...).
    """

    task_id: str
    series: str
    unit: str
    model_sha256: str
    object_name: str
    chosen: str
    metrics: dict[str, dict[str, float]]
    origin: datetime
    backtest_origins: list[datetime] = []
    data_start: datetime | None = None
    data_end: datetime | None = None
    features: list[str] = []
    excluded: list[dict[str, str]] = []
    library_versions: dict[str, str] = {}
    training_s: float = 0.0
    weather_observed: bool = False


class ForecastIssued(Event, frozen=True, kw_only=True, tag="forecast.issued"):
    """A forecast of ``series`` issued at ``issued_at`` for ``len(p50)`` steps of
    ``step_s`` from ``valid_from`` (UTC): the median and quantiles (``p10``..``p90``), in
    ``unit``.  ``method``: the model (``gbm``, ``ets``...) or ``fallback: ...``.
    ``inputs``: the data window and its hash, the model, the weather forecast used (or
    that observations stood in), the configuration versions."""

    task_id: str
    series: str
    unit: str
    issued_at: datetime
    valid_from: datetime
    step_s: int = 3600
    quantiles: dict[str, list[float]]
    method: str
    model_sha256: str | None = None
    inputs: dict[str, Any] = {}

    @property
    def p50(self) -> list[float]:
        return self.quantiles["p50"]
