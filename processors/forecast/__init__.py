"""Demand and solar forecasting: the pure domain behind the ``forecast.*`` tasks.

No I/O here: histories, weather and holidays arrive as arguments (loaded by the runner
or the CLI), trained models leave as artefact bytes.  Public API:

- ``train(history, weather, holidays, tz, *, origin, config) -> TrainResult``
- ``predict(model, history, weather, holidays, tz, *, issued_at, horizon_h, step) -> DataFrame``
- ``fallback_forecast(history, holidays, tz, *, issued_at, horizon_h)``: no model yet
- ``metrics``: PI1/PI2/PI3, interval coverage, pinball loss
- ``calendar``: wall-clock stamps to UTC, holidays, local calendar features
- ``solar``: PV production from a weather forecast (pvlib)

Heavy libraries (LightGBM, sktime, pvlib) are imported when used, not here.
"""

from processors.forecast.api import TrainConfig, TrainResult, fallback_forecast, predict, train
from processors.forecast.models import InsufficientHistory
from processors.forecast.quality import ExcludedPeriod, QualityConfig

__all__ = ["ExcludedPeriod", "InsufficientHistory", "QualityConfig", "TrainConfig",
           "TrainResult", "fallback_forecast", "predict", "train"]
