"""Alerts: conditions a tenant's rules watch for, raised once and cleared once, and the
rules and notification settings themselves (configuration kind ``alerts``).

Events go to ``tagus.alert.<tenant>.<name>`` (``raised``, ``cleared``, ``acknowledged``,
``pending``, ``digest_due``, ``notification_failed``), the subjects a tenant's own NATS
user may subscribe to.
An **alert** is one episode of one rule on one subject (a sensor, a series, a tank, a
pump, a task kind, an intake source, a consumer): ``alert_id`` is the id of its first
event; at most one is open per (rule, subject).  ``as_of`` is the instant the
evaluation that made the event refers to (the input's ``recorded_at``, or the instant a
periodic evaluation was asked for): a tenant's alert state "as of T" is the fold of its
alert events with ``as_of`` before T (``AlertBook``), so re-handling an old input sees
the state it saw the first time and derives the same events.

Quantities in rules are SI (``m``, ``m3/s``, ``Pa``) or a number with a unit
(``"6 bar"``), converted here.  Secrets (SMTP password, webhook tokens) are never in a
document: a webhook names a secret the notifier looks up in its own environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.base import Event
from contracts.errors import ContractError
from contracts.readings import SENSOR_ID_RE
from contracts.units import to_si

Severity = Literal["info", "warning", "critical"]
SEVERITIES = ("info", "warning", "critical")
TRANSITIONS = ("raised", "cleared", "acknowledged")


# ---------------------------------------------------------------- events


class _AlertEvent(Event, frozen=True, kw_only=True):
    alert_id: str
    rule: str
    kind: str  # the rule's kind: threshold, stale, task_failed...
    subject: str
    as_of: datetime


class AlertPending(_AlertEvent, frozen=True, kw_only=True, tag="alert.pending"):
    """A condition with a minimum duration began at ``since``: it becomes ``alert.raised``
    (same ``alert_id``) if it holds that long, else ``alert.cleared`` with ``raised`` False.
    Never notified."""

    since: datetime
    severity: Severity = "warning"
    message: str = ""
    value: float | None = None


class AlertRaised(_AlertEvent, frozen=True, kw_only=True, tag="alert.raised"):
    """The condition holds (since ``since``).  ``value`` and ``limit`` in ``unit`` (SI)
    where the rule compares numbers; ``detail``: what an operator needs to act."""

    since: datetime
    severity: Severity = "warning"
    message: str
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    detail: dict[str, Any] = {}
    notify: bool = True


class AlertCleared(_AlertEvent, frozen=True, kw_only=True, tag="alert.cleared"):
    """The condition is over.  ``raised`` False: a pending condition ended before its
    minimum duration (nobody was told it began)."""

    message: str
    raised: bool = True
    value: float | None = None
    severity: Severity = "warning"  # the alert's
    notify: bool = True


class AlertAcknowledged(_AlertEvent, frozen=True, kw_only=True, tag="alert.acknowledged"):
    """An operator (token ``by``) has seen the alert; it stays open until cleared."""

    by: str
    comment: str = ""


class AlertDigestDue(Event, frozen=True, kw_only=True, tag="alert.digest_due"):
    """The tenant's digest window ending at ``window_end`` is over: the notifier sends
    what it has collected since the previous digest (one message per channel)."""

    window_start: datetime
    window_end: datetime
    as_of: datetime


class AlertNotificationFailed(Event, frozen=True, kw_only=True,
                              tag="alert.notification_failed"):
    """The notifier could not tell ``channel`` (``email``, ``webhook:<name>``) about
    notice ``notice_id`` (an alert event, or a digest): ``refused`` for good (it will not
    try again), or ``unknown`` (no answer after the point of no return: it may have been
    delivered; at most once, so not sent again).  ``reason`` in the receiver's words."""

    notice_id: str
    channel: str
    outcome: Literal["refused", "unknown"]
    reason: str
    alert_id: str | None = None


ALERT_EVENTS = (AlertPending, AlertRaised, AlertCleared, AlertAcknowledged, AlertDigestDue,
                AlertNotificationFailed)


# ---------------------------------------------------------------- state


@dataclass
class Track:
    """One pending or open alert."""

    alert_id: str
    rule: str
    kind: str
    subject: str
    status: Literal["pending", "open"]
    since: datetime
    severity: str = "warning"
    message: str = ""
    raised_at: datetime | None = None
    acknowledged_by: str | None = None


@dataclass
class AlertBook:
    """A tenant's pending and open alerts: the fold of its alert events (pure)."""

    tracks: dict[tuple[str, str], Track] = field(default_factory=dict)
    digest_until: datetime | None = None  # end of the last digest window announced

    def get(self, rule: str, subject: str) -> Track | None:
        return self.tracks.get((rule, subject))

    def find(self, alert_id: str) -> Track | None:
        return next((t for t in self.tracks.values() if t.alert_id == alert_id), None)

    def of_rule(self, rule: str) -> list[Track]:
        return [t for (r, _), t in self.tracks.items() if r == rule]

    def apply(self, e: Event) -> None:
        if isinstance(e, AlertDigestDue):
            if self.digest_until is None or e.window_end > self.digest_until:
                self.digest_until = e.window_end
            return
        key = (e.rule, e.subject)
        held = self.tracks.get(key)
        if isinstance(e, AlertPending):
            self.tracks[key] = Track(e.alert_id, e.rule, e.kind, e.subject, "pending",
                                     e.since, e.severity, e.message)
        elif isinstance(e, AlertRaised):
            self.tracks[key] = Track(e.alert_id, e.rule, e.kind, e.subject, "open", e.since,
                                     e.severity, e.message, raised_at=e.as_of)
        elif isinstance(e, AlertCleared):
            if held is not None and held.alert_id == e.alert_id:
                del self.tracks[key]
        elif isinstance(e, AlertAcknowledged):
            if held is not None and held.alert_id == e.alert_id:
                held.acknowledged_by = e.by

    @classmethod
    def fold(cls, events, before: datetime | None = None) -> AlertBook:
        """The book after ``events`` (in stream order) whose ``as_of`` is before ``before``."""
        book = cls()
        for e in events:
            if before is None or e.as_of < before:
                book.apply(e)
        return book


# ---------------------------------------------------------------- configuration

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$")
_QUANTITY = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s+(\S.*?)\s*$")


def quantity(value: float | str | None, *, difference: bool = False) -> float | None:
    """A number (already SI) or ``"6 bar"`` -> SI; ``difference``: a span (hysteresis, a
    change), so an offset unit (degC) converts without its offset."""
    if value is None or isinstance(value, int | float) and not isinstance(value, bool):
        return None if value is None else float(value)
    m = _QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"expected a number (SI) or a number and a unit such as '6 bar', "
                         f"got {value!r}")
    conv = to_si(m.group(2))
    if conv is None:
        raise ValueError(f"unknown unit {m.group(2)!r} in {value!r}")
    _, factor, offset = conv
    return float(m.group(1)) * factor + (0.0 if difference else offset)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Doc):
    name: str = Field(pattern=_NAME)
    severity: Severity = "warning"
    enabled: bool = True
    notify: bool = True  # False: raised and cleared, never sent


class _SensorRule(_Rule):
    """``sensors`` named, or every sensor bound (assets) with ``role``."""

    sensors: list[str] = []
    role: str | None = None
    min_duration_s: float = Field(default=0.0, ge=0)
    max_age_s: float = Field(default=3600.0, gt=0)  # older readings (backfills): not judged

    @field_validator("sensors")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        for i, s in enumerate(v):
            if not SENSOR_ID_RE.match(s):
                raise ValueError(f"item {i}: sensor id {s!r} must match {SENSOR_ID_RE.pattern}")
        return v

    @model_validator(mode="after")
    def _some_sensors(self):
        if not self.sensors and not self.role:
            raise ValueError("sensors: name the sensors, or give a role (every sensor "
                             "bound with it)")
        return self


class ThresholdRule(_SensorRule):
    """Raised when a reading is above ``above`` (or below ``below``) for at least
    ``min_duration_s``; cleared when back by more than ``hysteresis``."""

    kind: Literal["threshold"]
    above: float | str | None = None
    below: float | str | None = None
    hysteresis: float | str = 0.0

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.above is None) == (self.below is None):
            raise ValueError("above/below: give exactly one of them")
        for name in ("above", "below", "hysteresis"):
            try:
                v = quantity(getattr(self, name), difference=name == "hysteresis")
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            if name == "hysteresis" and v < 0:
                raise ValueError("hysteresis: must not be negative")
        return self

    def limits(self) -> tuple[str, float, float]:
        """(direction, raise limit, clear limit) in SI."""
        h = quantity(self.hysteresis, difference=True)
        if self.above is not None:
            v = quantity(self.above)
            return "above", v, v - h
        v = quantity(self.below)
        return "below", v, v + h


class RateOfChangeRule(_SensorRule):
    """Raised when a sensor rises by more than ``max_rise`` (or falls by more than
    ``max_fall``) within ``window_s``; cleared when its change over the window is back
    within the limits."""

    kind: Literal["rate_of_change"]
    max_rise: float | str | None = None
    max_fall: float | str | None = None
    window_s: float = Field(default=900.0, gt=0, le=7 * 86400)

    @model_validator(mode="after")
    def _some_limit(self):
        if self.max_rise is None and self.max_fall is None:
            raise ValueError("max_rise/max_fall: give at least one")
        for name in ("max_rise", "max_fall"):
            try:
                v = quantity(getattr(self, name), difference=True)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            if v is not None and v <= 0:
                raise ValueError(f"{name}: must be positive (a size of change)")
        return self


class StaleRule(_Rule):
    """Raised when a sensor has had no reading for ``minutes`` (checked by the periodic
    evaluation, task ``alerts.evaluate``); cleared when readings resume.  No sensors and
    no role: every bound sensor."""

    kind: Literal["stale"]
    minutes: float = Field(gt=0, le=7 * 24 * 60)
    sensors: list[str] = []
    role: str | None = None


class ForecastDeviationRule(_Rule):
    """Raised when the actual hourly value of a forecast series has been outside the
    forecast's ``low``..``high`` band for ``hours`` consecutive hours (periodic)."""

    kind: Literal["forecast_deviation"]
    series: list[str] = []  # zone:<name>; empty: every zone with inflow sensors
    hours: int = Field(default=3, ge=1, le=72)
    low: Literal["p10", "p25"] = "p10"
    high: Literal["p75", "p90"] = "p90"


class ScheduleDeviationRule(_Rule):
    """Raised when a pump deviates from the released schedule (``schedule.deviated``);
    cleared by the next release."""

    kind: Literal["schedule_deviation"]
    pumps: list[str] = []


class IntakeRule(_Rule):
    """Raised when an upload from a source fails, or more than ``max_rejected_share`` of
    its values are rejected; cleared by the source's next good upload."""

    kind: Literal["intake"]
    sources: list[str] = []  # file, line-protocol, json-push, poller:<name>...; empty: any
    max_rejected_share: float = Field(default=0.5, gt=0, le=1)
    on_failed: bool = True


class TaskFailedRule(_Rule):
    """Raised when a task of one of ``kinds`` fails; cleared when one completes."""

    kind: Literal["task_failed"]
    kinds: list[str] = []


class DeadLettersRule(_Rule):
    """Raised when a consumer dead-lettered at least ``min_count`` messages within
    ``window_s`` (periodic); cleared when its window holds none."""

    kind: Literal["dead_letters"]
    min_count: int = Field(default=1, ge=1)
    window_s: float = Field(default=3600.0, gt=0, le=30 * 86400)


class TankBreachRule(_Rule):
    """Raised when a tank is predicted outside its bounds (less ``margin_m``) within
    ``horizon_h``: from a proposed schedule's EPANET trajectories (``source: schedule``;
    bounds from the proposal, else the ``rules`` document) or from a forecast of series
    ``tank:<name>`` (``source: forecast``; bounds from ``rules``).  Cleared by the next
    prediction that stays within."""

    kind: Literal["tank_breach"]
    source: Literal["schedule", "forecast"] = "schedule"
    tanks: list[str] = []  # empty: every tank predicted
    horizon_h: float = Field(default=24.0, gt=0, le=14 * 24)
    margin_m: float = Field(default=0.0, ge=0)


Rule = Annotated[ThresholdRule | RateOfChangeRule | StaleRule | ForecastDeviationRule
                 | ScheduleDeviationRule | IntakeRule | TaskFailedRule | DeadLettersRule
                 | TankBreachRule, Field(discriminator="kind")]
RULE_KINDS = ("threshold", "rate_of_change", "stale", "forecast_deviation",
              "schedule_deviation", "intake", "task_failed", "dead_letters", "tank_breach")


class EmailChannel(_Doc):
    to: list[str] = Field(min_length=1, max_length=50)

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for i, a in enumerate(v):
            if not _EMAIL.match(a):
                raise ValueError(f"item {i}: {a!r} is not an e-mail address")
        return v


class WebhookChannel(_Doc):
    """POST JSON to ``url``.  ``secret``: the name of a secret provisioned for this tenant
    on the notifier (``TAGUS_SECRET_<TENANT>_<NAME>``, or the file
    ``<secrets dir>/<tenant>/<name>``), sent as ``Authorization: Bearer``."""

    name: str = Field(pattern=_NAME)
    url: str = Field(max_length=2000)
    secret: str | None = Field(default=None, pattern=_NAME)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not _URL.match(v):
            raise ValueError(f"expected an http(s) URL such as https://ops.example/hook, "
                             f"got {v[:80]!r}")
        return v


class NotifyDoc(_Doc):
    """Where transitions go.  ``digest_minutes`` > 0: one message per channel every so
    many minutes (windows aligned on UTC, announced by the periodic evaluation) instead of
    one per transition, except severities in ``immediate``.  ``on``: which transitions."""

    email: EmailChannel | None = None
    webhooks: list[WebhookChannel] = []
    digest_minutes: int = Field(default=0, ge=0, le=7 * 24 * 60)
    immediate: list[Severity] = ["critical"]
    on: list[Literal["raised", "cleared", "acknowledged"]] = ["raised", "cleared"]

    @model_validator(mode="after")
    def _unique(self):
        names = [w.name for w in self.webhooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"webhooks: names used twice: {dupes}")
        return self

    def channels(self) -> list[str]:
        """``email`` and ``webhook:<name>``."""
        return (["email"] if self.email else []) + [f"webhook:{w.name}" for w in self.webhooks]


class AlertsDoc(_Doc):
    rules: list[Rule] = []
    notify: NotifyDoc = NotifyDoc()

    @model_validator(mode="after")
    def _unique(self):
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rules: names used twice: {dupes}")
        return self

    def active(self, *kinds: str) -> list:
        return [r for r in self.rules if r.enabled and r.kind in kinds]


def evaluation_instant(request) -> datetime:
    """The instant a periodic evaluation (task ``alerts.evaluate``) judges: its
    ``params.at`` (ISO 8601 with an offset; re-evaluating the past), else its scheduled
    ``slot``, else when it was requested."""
    raw = (getattr(request, "params", None) or {}).get("at")
    if raw:
        try:
            at = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            raise ContractError(f"params.at: expected an ISO 8601 instant, got {raw!r}") \
                from None
        if at.tzinfo is None:
            raise ContractError(f"params.at: expected an offset (Z or +01:00), got {raw!r}")
        return at
    return request.slot or request.recorded_at
