"""Train and forecast one hourly series: the functions tasks and the CLI both call.

Unit-agnostic: forecasts come out in the history's unit (L/s, m3/s, ...).  Time: UTC
instants everywhere, calendar from local time in ``tz``.  Pure: no I/O; the same inputs
give the same artefact bytes and the same forecast, bit for bit (seeded,
single-threaded LightGBM; deterministic statsmodels fits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from processors.forecast import artefact
from processors.forecast.features import WEEK_H, make_frame
from processors.forecast.models import (
    DayTypeProfile, GradientBoosting, InsufficientHistory, SeasonalNaive,
    WeeklyExponentialSmoothing, Ensemble, from_state)
from processors.forecast.quality import ExcludedPeriod, QualityConfig, assess
from processors.forecast.selection import (
    apply_quantiles, backtest_origins, choose, residual_quantiles, run_backtests, score)

CANDIDATE_ORDER = ("seasonal_naive", "profile", "ets", "gbm", "ensemble")


@dataclass(frozen=True)
class TrainConfig:
    """How to train.  ``backtest_origins`` origins ``backtest_spacing_h`` apart before the
    training origin score the candidates (with ``refit_backtests`` False the trees are
    grown once, at the first backtest origin, and reused at the later ones: less work,
    still no look-ahead).  ``ensemble`` names its members, ``ensemble_weights`` their
    weights.  ``gbm_params`` overrides LightGBM parameters (``models.GBM_DEFAULTS``)."""

    horizon_h: int = WEEK_H
    candidates: tuple[str, ...] = CANDIDATE_ORDER
    ensemble: tuple[str, ...] = ("gbm", "ets")
    ensemble_weights: tuple[float, ...] = (0.75, 0.25)
    backtest_origins: int = 4
    backtest_spacing_h: int = WEEK_H
    refit_backtests: bool = False
    quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    gbm_params: tuple[tuple[str, object], ...] = ()
    gbm_origin_step_h: int = 24
    history_days: int = 730
    ets_weeks: int = 6
    seed: int = 0
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if list(self.quantiles) != sorted(set(self.quantiles)) or \
                not all(0 < q < 1 for q in self.quantiles):
            raise ValueError(f"quantiles must be increasing, in (0, 1): {self.quantiles}")
        if len(self.ensemble) != len(self.ensemble_weights) or \
                abs(sum(self.ensemble_weights) - 1) > 1e-9:
            raise ValueError(f"ensemble weights must match {self.ensemble} and sum to 1, "
                             f"found {self.ensemble_weights}")
        unknown = set(self.candidates) - set(CANDIDATE_ORDER)
        if unknown:
            raise ValueError(f"unknown candidates {sorted(unknown)}; known: {CANDIDATE_ORDER}")
        if not 1 <= self.horizon_h <= WEEK_H:
            raise ValueError(f"horizon must be 1..{WEEK_H} hours, found {self.horizon_h}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["gbm_params"] = dict(self.gbm_params)
        return d


@dataclass(frozen=True)
class TrainResult:
    """A trained series model and everything a ``forecast.model_trained`` event reports.

    ``metrics[candidate]``: backtest means of PI1, PI2, PI3 (series unit), ``score``
    (PI1 + PI3), ``coverage`` of the outer quantile band, ``pinball_<q>``, ``runs``.
    ``weather_observed``: True when observations stood in for weather forecasts.
    """

    artefact: bytes
    sha256: str
    chosen: str
    metrics: dict[str, dict[str, float]]
    origin: pd.Timestamp
    backtest_origins: tuple[pd.Timestamp, ...]
    data_window: tuple[pd.Timestamp, pd.Timestamp]
    features: tuple[str, ...]
    excluded: tuple[ExcludedPeriod, ...]
    library_versions: dict[str, str]
    training_seconds: float
    weather_observed: bool


def train(history: pd.Series, weather: pd.DataFrame | None, holidays: Iterable[date], tz: str,
          *, origin: pd.Timestamp, config: TrainConfig = TrainConfig(),
          progress: Callable[[str], None] | None = None) -> TrainResult:
    """Backtest the candidates on rolling origins before ``origin``, choose one, fit it on
    all clean history before ``origin`` and return it as an artefact.

    ``history``: hourly values, zone-aware index; only values strictly before ``origin``
    are read.  ``weather``: hourly frame with any of ``features.WEATHER_COLUMNS`` (may run
    past ``origin``: observations standing in for forecasts in the backtests).
    """
    started = time.perf_counter()
    origin = _hour(origin)
    holidays = frozenset(holidays)
    past = history[history.index < origin]
    report = assess(past, config.quality)
    clean = report.clean
    if clean.notna().sum() < 3 * WEEK_H:
        raise InsufficientHistory(f"{int(clean.notna().sum())} clean hours before {origin}, "
                                  f"need at least {3 * WEEK_H}")
    level = float(np.nanmedian(np.abs(clean.to_numpy())))
    origins = [o for o in backtest_origins(origin, config.backtest_origins,
                                           config.backtest_spacing_h) if o > clean.index[0]]
    ensembles = {"ensemble": (list(config.ensemble), list(config.ensemble_weights))} \
        if "ensemble" in config.candidates else {}
    runs = run_backtests(past, clean, weather, holidays, tz, origins, config.horizon_h,
                         lambda: _candidates(config), ensembles, config.quality,
                         config.refit_backtests, progress)
    scores = score(runs, config.quantiles, level)
    try:
        chosen_name = choose(scores, config.candidates)
    except InsufficientHistory:  # nothing could be scored (no observations after the origins)
        chosen_name = "profile"
    model = _candidate(chosen_name, config)
    frame = make_frame(clean, weather, holidays, tz, origin)
    try:
        model.fit(frame, len(frame.y))
    except InsufficientHistory:
        chosen_name, model = "profile", DayTypeProfile()
    table = residual_quantiles(runs, chosen_name, config.quantiles, level)
    features = tuple(_features_of(model))
    manifest = {
        "model": model.state(), "chosen": chosen_name, "tz": tz,
        "horizon_h": config.horizon_h, "quantiles": list(config.quantiles),
        "quantile_table": table, "level": level, "quality": asdict(config.quality),
        "trained_origin": origin.isoformat(), "config": config.as_dict(),
        "features": list(features), "libraries": artefact.library_versions(),
    }
    data = artefact.dump(manifest)
    return TrainResult(
        artefact=data, sha256=artefact.content_hash(data), chosen=chosen_name, metrics=scores,
        origin=origin, backtest_origins=tuple(r.origin for r in runs),
        data_window=(clean.first_valid_index(), clean.last_valid_index()),
        features=features, excluded=report.excluded,
        library_versions=manifest["libraries"],
        training_seconds=time.perf_counter() - started,
        weather_observed=weather is not None and not weather.empty)


def predict(model: bytes, history: pd.Series, weather: pd.DataFrame | None,
            holidays: Iterable[date], tz: str, *, issued_at: pd.Timestamp,
            horizon_h: int = WEEK_H, step: str = "1h", sha256: str | None = None) -> pd.DataFrame:
    """Quantile forecast for the ``horizon_h`` hours from ``issued_at`` (inclusive).

    ``model``: artefact bytes from ``train`` (checked against ``sha256`` when given).
    ``history``: only values strictly before ``issued_at`` are read, cleaned by the
    model's quality rules.  ``weather``: observations before ``issued_at`` and the
    forecast after it.  Returns columns ``p10, p25, p50, p75, p90`` (the model's
    quantiles) indexed by UTC valid time; no missing values.
    """
    if pd.Timedelta(step) != pd.Timedelta(hours=1):
        raise ValueError(f"only an hourly step is supported, found {step!r}")
    if not 1 <= horizon_h <= WEEK_H:
        raise ValueError(f"horizon must be 1..{WEEK_H} hours, found {horizon_h}")
    manifest = artefact.load(model, sha256)
    issued_at = _hour(issued_at)
    quality = QualityConfig(**manifest["quality"])
    past = history[history.index < issued_at]
    clean = assess(past, quality).clean
    if clean.notna().sum() == 0:
        raise InsufficientHistory(f"no clean history before {issued_at}")
    frame = make_frame(clean, weather, frozenset(holidays), tz,
                       issued_at + pd.Timedelta(hours=horizon_h))
    pos = frame.position(issued_at)
    p50 = from_state(manifest["model"]).predict(frame, pos, horizon_h)
    quantiles = manifest["quantiles"]
    bands = apply_quantiles(p50, manifest["quantile_table"], quantiles, manifest["level"])
    out = pd.DataFrame({f"p{round(q * 100):02d}": bands[q] for q in quantiles},
                       index=frame.index[pos:pos + horizon_h])
    out.index.name = "valid_time"
    return out


def fallback_forecast(history: pd.Series, holidays: Iterable[date], tz: str, *,
                      issued_at: pd.Timestamp, horizon_h: int = WEEK_H) -> pd.DataFrame:
    """A forecast without a trained model (too little history): the weekly naive, else the
    day-type profile, else the last known value; all quantiles equal.  Columns as
    ``predict``'s."""
    issued_at = _hour(issued_at)
    past = history[history.index < issued_at]
    if past.notna().sum() == 0:
        raise InsufficientHistory(f"no history at all before {issued_at}")
    clean = assess(past).clean
    if clean.notna().sum() == 0:
        clean = past.astype(float)
    frame = make_frame(clean, None, frozenset(holidays), tz, issued_at + pd.Timedelta(hours=horizon_h))
    pos = frame.position(issued_at)
    p50 = SeasonalNaive().predict(frame, pos, horizon_h)
    index = frame.index[pos:pos + horizon_h]
    out = pd.DataFrame({c: p50 for c in ("p10", "p25", "p50", "p75", "p90")}, index=index)
    out.index.name = "valid_time"
    return out


def _candidates(config: TrainConfig) -> list:
    names = [n for n in config.candidates if n != "ensemble"]
    if "ensemble" in config.candidates:
        names += [m for m in config.ensemble if m not in names]
    return [_candidate(n, config) for n in names]


def _candidate(name: str, config: TrainConfig):
    if name == "seasonal_naive":
        return SeasonalNaive()
    if name == "profile":
        return DayTypeProfile()
    if name == "gbm":
        return GradientBoosting(params=dict(config.gbm_params),
                                origin_step_h=config.gbm_origin_step_h,
                                history_days=config.history_days, seed=config.seed)
    if name == "ets":
        return WeeklyExponentialSmoothing(weeks=config.ets_weeks)
    if name == "ensemble":
        return Ensemble(members=[_candidate(m, config) for m in config.ensemble],
                        weights=list(config.ensemble_weights))
    raise ValueError(f"unknown candidate {name!r}; known: {CANDIDATE_ORDER}")


def _features_of(model) -> list[str]:
    if isinstance(model, GradientBoosting):
        return list(model.features_ or [])
    if isinstance(model, Ensemble):
        return sorted({f for m in model.members for f in _features_of(m)})
    return ["lag168", "lag336"] if isinstance(model, SeasonalNaive) else ["profile_own"]


def _hour(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    if t.tzinfo is None:
        raise ValueError(f"expected a zone-aware time, found naive {t}")
    t = t.tz_convert("UTC")
    if t != t.floor("h"):
        raise ValueError(f"expected a whole hour, found {t}")
    return t
