"""Candidate forecasters.  Parameters live in ``__init__``, learning happens in ``fit``.

Each candidate forecasts hours ``origin .. origin + horizon - 1`` of a ``SeriesFrame``
from values strictly before ``origin``, and can be stored as a plain JSON-able state
(no pickles: a model is rebuilt from numbers and LightGBM's text format).

- ``SeasonalNaive``: the same hour one week earlier, else two weeks earlier.
- ``DayTypeProfile``: the mean of the last few days of the same kind (workday, Saturday,
  Sunday/holiday) at the same local hour.
- ``GradientBoosting``: LightGBM on calendar, holiday, weather, lag and recent-anomaly
  features, direct multi-horizon, learning the departure from the day-type profile.
- ``WeeklyExponentialSmoothing``: Holt-Winters (ETS, additive weekly season) through
  sktime's statsmodels adapter, refitted on the recent weeks at every forecast.
- ``Ensemble``: a weighted mean of members.

Every prediction is complete: holes left by a model are filled from the naive forecast,
then the profile, then the last known value.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from processors.forecast.features import WEEK_H, SeriesFrame, design, feature_columns

GBM_DEFAULTS: dict[str, Any] = {
    "objective": "l2", "n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15,
    "min_child_samples": 200, "subsample": 0.8, "subsample_freq": 1,
    "colsample_bytree": 0.8, "reg_lambda": 1.0, "max_bin": 255,
}


class Candidate:
    """Base of the forecasters; ``name`` identifies the kind in artefacts."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind

    def fit(self, frame: SeriesFrame, origin: int) -> Candidate:
        return self

    @property
    def fitted(self) -> bool:
        """Whether ``fit`` has learned something worth keeping (no-op fits: always)."""
        return True

    def predict(self, frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Candidate:
        return cls(name=state["name"])


class SeasonalNaive(Candidate):
    kind = "seasonal_naive"

    def predict(self, frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
        return complete(naive_raw(frame, origin, horizon), frame, origin)


class DayTypeProfile(Candidate):
    kind = "profile"

    def predict(self, frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
        return complete(profile_raw(frame, origin, horizon), frame, origin)


class GradientBoosting(Candidate):
    """LightGBM on ``features.design`` rows, trained on origins every ``origin_step_h``
    hours over at most ``history_days`` days before the training origin; single-threaded
    and seeded so that two fits give the same trees.  Rows beyond the first day are
    thinned to one in ``long_horizon_stride`` (consecutive origins repeat them anyway)."""

    kind = "gbm"

    def __init__(self, name: str | None = None, *, params: dict[str, Any] | None = None,
                 origin_step_h: int = 24, history_days: int = 730, long_horizon_stride: int = 3,
                 seed: int = 0) -> None:
        super().__init__(name)
        self.params = {**GBM_DEFAULTS, **(params or {})}
        self.origin_step_h = origin_step_h
        self.long_horizon_stride = long_horizon_stride
        self.history_days = history_days
        self.seed = seed
        self.features_: list[str] | None = None
        self.model_text_: str | None = None
        self._booster = None

    def fit(self, frame: SeriesFrame, origin: int) -> GradientBoosting:
        import lightgbm as lgb

        from processors.forecast.features import origin_positions

        first = max(2 * WEEK_H, origin - 24 * self.history_days)
        origins = origin_positions(frame, origin, self.origin_step_h, first)
        X = design(frame, origins, WEEK_H)
        h, o = X["h"].to_numpy(), X["origin"].to_numpy()
        thin = (h < 24) | ((h + o // self.origin_step_h) % self.long_horizon_stride == 0)
        X = X[(X["t"].to_numpy() < origin) & X["y"].notna().to_numpy()
              & X["base"].notna().to_numpy() & thin]
        if len(X) < 500:
            raise InsufficientHistory(f"{len(X)} training rows before the origin, need 500")
        features = feature_columns(X)
        params = {**self.params, "random_state": self.seed, "n_jobs": 1, "verbose": -1,
                  "deterministic": True, "force_row_wise": True}
        model = lgb.LGBMRegressor(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.fit(X[features], (X["y"] - X["base"]).to_numpy())
        self.features_ = features
        self.model_text_ = model.booster_.model_to_string()
        self._booster = None
        return self

    def predict(self, frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
        X = design(frame, np.array([origin]), horizon)
        for col in self.features_ or []:
            if col not in X:
                X[col] = np.nan  # weather absent now that was there in training
        pred = self.booster().predict(X[self.features_].to_numpy(dtype=float), num_threads=1)
        out = np.full(horizon, np.nan)
        out[: len(pred)] = pred + X["base"].to_numpy()
        return complete(out, frame, origin)

    @property
    def fitted(self) -> bool:
        return self.model_text_ is not None

    def booster(self):
        if self._booster is None:
            import lightgbm as lgb

            if self.model_text_ is None:
                raise RuntimeError("GradientBoosting.predict before fit")
            self._booster = lgb.Booster(model_str=self.model_text_)
        return self._booster

    def state(self) -> dict[str, Any]:
        return {**super().state(), "params": self.params, "origin_step_h": self.origin_step_h,
                "history_days": self.history_days, "seed": self.seed,
                "long_horizon_stride": self.long_horizon_stride,
                "features": self.features_, "model": self.model_text_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GradientBoosting:
        m = cls(state["name"], params=state["params"], origin_step_h=state["origin_step_h"],
                history_days=state["history_days"], seed=state["seed"],
                long_horizon_stride=state["long_horizon_stride"])
        m.features_, m.model_text_ = state["features"], state["model"]
        return m


class WeeklyExponentialSmoothing(Candidate):
    """Additive Holt-Winters with a 168-hour season on the last ``weeks`` weeks, refitted
    at each forecast (the recent weeks are the model).  Holes are bridged with the
    day-type profile before fitting."""

    kind = "ets"

    def __init__(self, name: str | None = None, *, weeks: int = 6, damped_trend: bool = False,
                 trend: str | None = None) -> None:
        super().__init__(name)
        self.weeks = weeks
        self.trend = trend
        self.damped_trend = damped_trend

    def predict(self, frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
        import pandas as pd
        from sktime.forecasting.exp_smoothing import ExponentialSmoothing

        start = max(0, origin - self.weeks * WEEK_H)
        y = frame.y[start:origin].copy()
        if len(y) < 2 * WEEK_H + 24 or np.isnan(y).mean() > 0.25:
            return complete(np.full(horizon, np.nan), frame, origin)
        hole = np.isnan(y)
        if hole.any():
            P = frame.profiles
            pos = np.arange(start, origin)[hole]
            cal = frame.calendar
            fill = P[cal["daytype"].to_numpy()[pos], frame.day_pos[pos], cal["hour"].to_numpy()[pos]]
            y[hole] = fill
            y = pd.Series(y).interpolate(limit_direction="both").to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels convergence chatter, sktime notices
            forecaster = ExponentialSmoothing(trend=self.trend, damped_trend=self.damped_trend,
                                              seasonal="add", sp=WEEK_H,
                                              initialization_method="heuristic")
            if "remember_data" in forecaster.get_config():  # sktime >= 1.2
                forecaster.set_config(remember_data=False)
            forecaster.fit(pd.Series(y))
            pred = forecaster.predict(fh=np.arange(1, horizon + 1)).to_numpy(dtype=float)
        return complete(pred, frame, origin)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "weeks": self.weeks, "trend": self.trend,
                "damped_trend": self.damped_trend}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WeeklyExponentialSmoothing:
        return cls(state["name"], weeks=state["weeks"], trend=state["trend"],
                   damped_trend=state["damped_trend"])


class Ensemble(Candidate):
    """Weighted mean of fitted members (weights sum to 1)."""

    kind = "ensemble"

    def __init__(self, name: str | None = None, *, members: list[Candidate] | None = None,
                 weights: list[float] | None = None) -> None:
        super().__init__(name)
        self.members = members or []
        self.weights = weights or ([1.0 / len(self.members)] * len(self.members) if self.members else [])

    @property
    def fitted(self) -> bool:
        return all(m.fitted for m in self.members)

    def fit(self, frame: SeriesFrame, origin: int) -> Ensemble:
        for m in self.members:
            m.fit(frame, origin)
        return self

    def predict(self, frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
        preds = [m.predict(frame, origin, horizon) for m in self.members]
        return combine(preds, self.weights)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "weights": self.weights,
                "members": [m.state() for m in self.members]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ensemble:
        return cls(state["name"], members=[from_state(s) for s in state["members"]],
                   weights=state["weights"])


class InsufficientHistory(ValueError):
    """Too little clean history before the origin for this candidate."""


KINDS: dict[str, type[Candidate]] = {c.kind: c for c in (
    SeasonalNaive, DayTypeProfile, GradientBoosting, WeeklyExponentialSmoothing, Ensemble)}


def from_state(state: dict[str, Any]) -> Candidate:
    kind = state.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind].from_state(state)


def combine(preds: list[np.ndarray], weights: list[float]) -> np.ndarray:
    out = np.zeros_like(preds[0])
    for p, w in zip(preds, weights):
        out = out + w * p
    return out


def naive_raw(frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
    """Same hour one week earlier, else two weeks earlier; NaN when both are missing."""
    t = np.arange(origin, origin + horizon)
    y = frame.y
    one = np.where(t - WEEK_H >= 0, y[np.clip(t - WEEK_H, 0, None)], np.nan)
    two = np.where(t - 2 * WEEK_H >= 0, y[np.clip(t - 2 * WEEK_H, 0, None)], np.nan)
    return np.where(np.isnan(one), two, one)


def profile_raw(frame: SeriesFrame, origin: int, horizon: int) -> np.ndarray:
    t = np.arange(origin, min(origin + horizon, len(frame.y)))
    cal = frame.calendar
    d0 = frame.day_pos[origin] if origin < len(frame.day_pos) else frame.day_pos[-1]
    out = np.full(horizon, np.nan)
    out[: len(t)] = frame.profiles[cal["daytype"].to_numpy()[t], d0, cal["hour"].to_numpy()[t]]
    return out


def complete(pred: np.ndarray, frame: SeriesFrame, origin: int) -> np.ndarray:
    """Fill holes: weekly naive, then the day-type profile, then the last known value."""
    out = np.asarray(pred, dtype=float).copy()
    if not np.isnan(out).any():
        return out
    horizon = len(out)
    for fallback in (naive_raw(frame, origin, horizon), profile_raw(frame, origin, horizon)):
        gap = np.isnan(out)
        out[gap] = fallback[gap]
    if np.isnan(out).any():
        known = frame.y[:origin][~np.isnan(frame.y[:origin])]
        out[np.isnan(out)] = known[-1] if len(known) else 0.0
    return out
