"""The forecast tasks: ``forecast.train`` and ``forecast.run`` (pure handlers).

Series: one per zone, the summed inflow (m3/s) of the sensors the tenant bound as
``zone_inflow`` of that zone; one per PV system when a weather forecast with cloud cover
or irradiance is at hand (``pv:<name>``, W).

Resources (loaded by the runner, as of the request): ``config`` (tenant zone and
holidays, assets, PV systems), ``forecast_inputs`` (``demand``: {series: hourly
``pd.Series``, UTC index}; ``weather``: hourly observations with the model's weather
columns, observed stand-ins flagged; ``weather_forecast``: the latest weather forecast
issued before the issue time and its event id, or None; ``window`` and ``data_sha256``),
``models`` ({series: (ForecastModelTrained, artefact bytes)}: the latest trained before
the request).  Params: ``origin`` / ``issued_at`` (ISO, default the request time floored
to the hour), ``horizon_h`` (default 168), ``series`` (names, default all), ``quick``
(shorter training, for tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pandas as pd

from bus.components import Blob, Context
from contracts.base import Event
from contracts.errors import TenantConfigError
from contracts.forecasts import MODELS_BUCKET, ForecastIssued, ForecastModelTrained
from processors.forecast.api import TrainConfig, fallback_forecast, predict, train
from processors.forecast.models import InsufficientHistory

NAME = "forecast"
KINDS = ("forecast.train", "forecast.run")
NEEDS = ("config", "forecast_inputs", "models")
HISTORY_DAYS = 730
RUN_HISTORY_DAYS = 63
QUICK = TrainConfig(candidates=("seasonal_naive", "profile", "gbm"), backtest_origins=2,
                    gbm_params=(("n_estimators", 60),), history_days=120)


def zones(assets) -> dict[str, list[str]]:
    """Series name -> the sensors whose sum it is (zone inflow bindings)."""
    out: dict[str, list[str]] = {}
    for b in assets.bindings if assets else ():
        if b.role == "zone_inflow":
            out.setdefault(f"zone:{b.element}", []).append(b.sensor)
    return {k: sorted(v) for k, v in sorted(out.items())}


def holidays_of(tenant, years: range) -> frozenset[date]:
    """Public holidays of the tenant's country/region plus its own days."""
    return tenant.holidays(years)


def instant(event, param: str) -> pd.Timestamp:
    """The task's reference instant: a param (ISO) or the request time, floored to the hour."""
    raw = event.params.get(param)
    try:
        t = pd.Timestamp(raw) if raw else pd.Timestamp(event.recorded_at)
    except (ValueError, TypeError):
        raise TenantConfigError(f"params.{param}: expected an ISO time, got {raw!r}") from None
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.floor("h")


def _selected(event, series: dict) -> dict:
    wanted = event.params.get("series")
    if not wanted:
        return series
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [n for n in names if n not in series]
    if unknown:
        raise TenantConfigError(f"params.series: no series {unknown}; the tenant has "
                                f"{sorted(series)}")
    return {n: series[n] for n in names}


def _common(ctx: Context):
    config = ctx.resources["config"]
    tenant = config.get("tenant")
    if tenant is None:
        raise TenantConfigError("the tenant is not configured")
    if not zones(config.get("assets")):
        raise TenantConfigError("no sensor is bound as zone_inflow: nothing to forecast "
                                "(configure assets)")
    return config, tenant, ctx.resources["forecast_inputs"]


def handle_train(event, ctx: Context) -> Iterator[Event | Blob]:
    config, tenant, inputs = _common(ctx)
    origin = instant(event, "origin")
    cfg = QUICK if event.params.get("quick") else TrainConfig()
    holidays = holidays_of(tenant, range(origin.year - 3, origin.year + 2))
    demand = _selected(event, inputs["demand"])
    for i, (name, history) in enumerate(demand.items()):
        yield ctx.progress(i / len(demand), f"training {name}")
        try:
            result = train(history, inputs["weather"], holidays, tenant.timezone,
                           origin=origin, config=cfg)
        except InsufficientHistory as e:
            raise TenantConfigError(f"{name}: {e}") from None
        object_name = f"{event.tenant}/{result.sha256}"
        yield Blob(MODELS_BUCKET, object_name, result.artefact)
        yield ctx.derive(
            ForecastModelTrained, key=name, task_id=event.event_id, series=name, unit="m3/s",
            model_sha256=result.sha256, object_name=object_name, chosen=result.chosen,
            metrics={k: {m: float(v) for m, v in d.items()} for k, d in result.metrics.items()},
            origin=origin.to_pydatetime(),
            backtest_origins=[o.to_pydatetime() for o in result.backtest_origins],
            data_start=_dt(result.data_window[0]), data_end=_dt(result.data_window[1]),
            features=list(result.features),
            excluded=[{"start": str(x.start), "end": str(x.end), "reason": x.reason}
                      for x in result.excluded],
            library_versions=result.library_versions,
            training_s=round(result.training_seconds, 3),
            weather_observed=result.weather_observed)
    yield ctx.progress(1.0, f"trained {len(demand)} series")


def handle_run(event, ctx: Context) -> Iterator[Event]:
    config, tenant, inputs = _common(ctx)
    issued_at = instant(event, "issued_at")
    horizon = int(event.params.get("horizon_h", 168))
    if not 1 <= horizon <= 168:
        raise TenantConfigError(f"params.horizon_h: 1..168 hours, got {horizon}")
    holidays = holidays_of(tenant, range(issued_at.year - 3, issued_at.year + 2))
    weather = inputs["weather"]
    forecast = inputs.get("weather_forecast")
    if forecast is not None:
        weather = _merge(weather, forecast["frame"], issued_at)
    models = ctx.resources["models"] or {}
    for name, history in _selected(event, inputs["demand"]).items():
        trained = models.get(name)
        try:
            if trained is not None:
                model_event, blob = trained
                frame = predict(blob, history, weather, holidays, tenant.timezone,
                                issued_at=issued_at, horizon_h=horizon,
                                sha256=model_event.model_sha256)
                method, sha = model_event.chosen, model_event.model_sha256
            else:
                frame = fallback_forecast(history, holidays, tenant.timezone,
                                          issued_at=issued_at, horizon_h=horizon)
                method, sha = "fallback: seasonal naive (no trained model yet)", None
        except InsufficientHistory as e:
            raise TenantConfigError(f"{name}: {e}") from None
        yield ctx.derive(
            ForecastIssued, key=name, task_id=event.event_id, series=name, unit="m3/s",
            issued_at=issued_at.to_pydatetime(), valid_from=frame.index[0].to_pydatetime(),
            quantiles={c: [float(x) for x in frame[c].to_numpy()] for c in frame.columns},
            method=method, model_sha256=sha,
            inputs={"data_window": [str(x) for x in inputs["window"]],
                    "data_sha256": inputs["data_sha256"].get(name, ""),
                    "weather_forecast": forecast["event_id"] if forecast else None,
                    "weather": "forecast" if forecast else
                               ("observed history only" if weather is not None else "none"),
                    "config_versions": dict(ctx.resources["config"].get("versions") or {})})


def _merge(observed: pd.DataFrame | None, forecast: pd.DataFrame, issued_at) -> pd.DataFrame:
    """Observations before the issue time, the weather forecast from it on."""
    ahead = forecast[forecast.index >= issued_at]
    if observed is None:
        return ahead
    return pd.concat([observed[observed.index < issued_at], ahead]).sort_index()


def _dt(t):
    return None if t is None or pd.isna(t) else pd.Timestamp(t).to_pydatetime()


HANDLERS = {"forecast.train": handle_train, "forecast.run": handle_run}
