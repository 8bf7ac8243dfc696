"""A tenant's configuration: versioned documents, each change an immutable event.

``config.changed`` is published on ``tagus.config.<tenant>.<kind>`` (one subject per
tenant and kind, so JetStream's expected-last-subject-sequence makes every write
conditional on the version it was made against).  The event carries the full new
document (or, for large bodies such as a network file, its content hash and object
name), who made the change, when and why.

Kinds and their documents (pydantic, errors name the field path):

- ``tenant``: display name, time zone, country/region for holidays, extra local
  holidays, mode per capability (advisory / automatic), suspended.
- ``network``: the utility's EPANET ``.inp`` (a text body; its summary and warnings are
  on the event).
- ``assets``: bindings of sensors to network elements with a role.
- ``tariff``: time-of-use periods by weekday/holiday, or day-ahead prices from a bound
  sensor; demand charge; contracted power.
- ``rules``: operating rules per tank and pump, pumps that may not run together.
- ``mapping-<id>``: a source mapping (YAML text, ``contracts.mapping``).
- ``tokens``: the tenant's access tokens, hashed, with scopes, expiry and revocation.
- ``schedules``: task schedules (cron in the tenant's zone) and their catch-up policy.
- ``chains``: rules that request a task when an event arrives.
- ``alerts``: alert rules and where notifications go (``contracts/alerts.py``).
- ``mailbox``: an IMAP mailbox the mail poller reads, its sender allow-list and the rules
  from attachment names to source mappings (``producers/mail``).

Cross-document checks (a binding names a tank of the current network) need I/O and
wntr: the config service (``ops/config_service.py``) runs them before publishing.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.alerts import AlertsDoc
from contracts.base import Event
from contracts.errors import TenantConfigError
from contracts.readings import SENSOR_ID_RE
from contracts.units import to_si

FIXED_KINDS = ("tenant", "network", "assets", "tariff", "rules", "tokens", "schedules",
               "chains", "pv", "alerts", "mailbox")
MAPPING_PREFIX = "mapping-"
_KIND_RE = re.compile(r"^(?:%s|mapping-[A-Za-z0-9_-]{1,100})$" % "|".join(FIXED_KINDS))
SCOPES = ("read", "write", "operate", "admin")
CAPABILITIES = ("schedules", "forecasts", "alerts")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday")
ROLES = ("tank_level", "pump_status", "pump_flow", "pump_power", "pump_speed",
         "zone_inflow", "pressure", "pv_production", "price", "weather_temperature",
         "weather_precipitation", "weather_humidity", "weather_wind")
CURRENCIES = ("EUR", "GBP", "USD")
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024  # a network file of a large utility fits


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise TenantConfigError(f"unknown configuration kind {kind!r}; kinds: "
                                f"{', '.join(FIXED_KINDS)}, mapping-<id>")
    return kind


class ConfigChanged(Event, frozen=True, kw_only=True, tag="config.changed"):
    """A new version of one kind of a tenant's configuration.

    ``version`` counts the kind's changes (1 for the first).  ``document``: the validated
    document as JSON-compatible data; text bodies (network, mapping) are in ``text`` when
    small, else in the object store (``object_name``, by content hash).  ``sha256``: of
    the canonical document bytes (JSON with sorted keys) or of the text body.
    ``author``: the token name (or ``cli``); ``reason``: the author's words.
    ``summary``/``warnings``: what validation found (e.g. a network's element counts).
    """

    __subject_key__: ClassVar[str] = "kind"  # subject token: tagus.config.<tenant>.<kind>

    kind: str
    version: int
    sha256: str
    document: dict[str, Any] | None = None
    text: str | None = None
    object_name: str | None = None
    media_type: str = "application/json"
    author: str
    reason: str = ""
    summary: dict[str, Any] = {}
    warnings: list[str] = []


# ---------------------------------------------------------------- documents


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone such as 'Europe/Rome', got {v!r}") from None
    return v


class TenantDoc(_Doc):
    display_name: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"
    country: str | None = None  # ISO 3166-1 alpha-2, for public holidays
    region: str | None = None  # subdivision (province, state) as the holidays package names it
    extra_holidays: list[str] = []  # "YYYY-MM-DD" once, or "MM-DD" every year (patron saint)
    currency: Literal["EUR", "GBP", "USD"] = "EUR"
    weather_location: str | None = None  # the weather forecasts (location) demand uses
    modes: dict[Literal["schedules", "forecasts", "alerts"],
                Literal["advisory", "automatic"]] = {}
    suspended: bool = False

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _zone(v)

    @field_validator("extra_holidays")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        for day in v:
            fmt = "%Y-%m-%d" if len(day) == 10 else "%m-%d"
            try:
                datetime.strptime(day if len(day) == 10 else f"2000-{day}", "%Y-%m-%d")
            except ValueError:
                raise ValueError(f"expected 'YYYY-MM-DD' or 'MM-DD', got {day!r} "
                                 f"({fmt})") from None
        return v

    @model_validator(mode="after")
    def _country_known(self) -> TenantDoc:
        if self.country is None:
            if self.region:
                raise ValueError("region: needs a country")
            return self
        import holidays

        supported = holidays.list_supported_countries()
        if self.country not in supported:
            raise ValueError(f"country: {self.country!r} is not a country the holidays "
                             f"package knows (ISO 3166-1 alpha-2, e.g. IT, ES, GB)")
        if self.region and self.region not in supported[self.country]:
            raise ValueError(f"region: {self.region!r} is not a subdivision of "
                             f"{self.country}; known: {', '.join(supported[self.country][:30])}"
                             + ("..." if len(supported[self.country]) > 30 else ""))
        return self

    def mode(self, capability: str) -> str:
        return self.modes.get(capability, "advisory")

    def holidays(self, years) -> frozenset[date]:
        """Public holidays of the tenant's country/region (the ``holidays`` package) plus
        its own days (``extra_holidays``), over ``years``."""
        years = sorted(set(years))
        days: set[date] = set()
        if self.country:
            import holidays

            days |= set(holidays.country_holidays(self.country, subdiv=self.region,
                                                  years=years))
        for day in self.extra_holidays:
            if len(day) == 10:
                days.add(date.fromisoformat(day))
            else:
                month, dom = (int(x) for x in day.split("-"))
                days.update(date(y, month, dom) for y in years)
        return frozenset(days)


class Binding(_Doc):
    """A sensor bound to a network element with a role.

    ``tank_level``: ``element`` is the tank; ``offset_m`` is the level of the sensor's
    zero above the tank's bottom (level in the model = reading + offset).  ``pump_*``:
    ``element`` is the pump.  ``zone_inflow``: ``element`` names the zone; ``junctions``
    or ``pattern`` say which demands it drives.  ``pressure``: ``element`` a junction.
    ``pv_production``: ``element`` a PV system name; ``price``: ``element`` "grid".
    ``weather_*``: observed weather at a station (``element``), used by the demand models.
    """

    sensor: str
    role: Literal["tank_level", "pump_status", "pump_flow", "pump_power", "pump_speed",
                  "zone_inflow", "pressure", "pv_production", "price", "weather_temperature",
                  "weather_precipitation", "weather_humidity", "weather_wind"]
    element: str = Field(min_length=1, max_length=200)
    offset_m: float = 0.0
    junctions: list[str] = []
    pattern: str | None = None

    @field_validator("sensor")
    @classmethod
    def _sensor_id(cls, v: str) -> str:
        if not SENSOR_ID_RE.match(v):
            raise ValueError(f"sensor id {v!r} must match {SENSOR_ID_RE.pattern}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Binding:
        if self.role != "zone_inflow" and (self.junctions or self.pattern):
            raise ValueError("junctions/pattern: only for role zone_inflow")
        if self.role != "tank_level" and self.offset_m:
            raise ValueError("offset_m: only for role tank_level")
        return self


class AssetsDoc(_Doc):
    bindings: list[Binding] = []

    @model_validator(mode="after")
    def _unique(self) -> AssetsDoc:
        seen: set[tuple[str, str]] = set()
        for i, b in enumerate(self.bindings):
            if (b.sensor, b.role) in seen:
                raise ValueError(f"bindings.{i}: sensor {b.sensor!r} is bound twice as {b.role}")
            seen.add((b.sensor, b.role))
        return self


def _clock(v: str) -> time:
    if v == "24:00":
        return time.max
    try:
        return datetime.strptime(v, "%H:%M").time()
    except ValueError:
        raise ValueError(f"expected HH:MM (00:00 to 24:00), got {v!r}") from None


def _minutes(v: str) -> int:
    return 24 * 60 if v == "24:00" else _clock(v).hour * 60 + _clock(v).minute


def parse_price(text: str | float, currency: str) -> float:
    """A price per energy as written ('0.12 EUR/kWh', '95 EUR/MWh', or a number in
    ``currency`` per kWh) -> ``currency`` per MWh."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text) * 1000.0
    parts = str(text).split()
    if len(parts) != 2:
        raise ValueError(f"expected a price such as '0.12 {currency}/kWh', got {text!r}")
    try:
        value = float(parts[0])
    except ValueError:
        raise ValueError(f"expected a number before the unit, got {parts[0]!r}") from None
    conv = to_si(parts[1])
    if conv is None or not conv[0].endswith("/MWh"):
        raise ValueError(f"unknown price unit {parts[1]!r}: expected a currency per energy "
                         f"such as {currency}/kWh or {currency}/MWh (currencies "
                         f"{', '.join(CURRENCIES)})")
    if conv[0] != f"{currency}/MWh":
        raise ValueError(f"price in {conv[0].split('/')[0]} but the tariff is in {currency}")
    return value * conv[1] + conv[2]


class Period(_Doc):
    """A time-of-use period: ``price`` on ``days`` from ``start`` to ``end`` (local)."""

    name: str = Field(min_length=1, max_length=60)
    price: str | float
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]] = list(DAYS)
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        _clock(v)
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if _minutes(self.start) >= _minutes(self.end):
            raise ValueError(f"start {self.start} must be before end {self.end} (split a "
                             f"period that crosses midnight in two)")
        return self


class TariffDoc(_Doc):
    """``time_of_use``: ``periods`` must cover each day type (mon..sun, holiday) exactly
    once, without gaps or overlaps.  ``dynamic``: day-ahead prices arrive as readings of
    ``price_sensor`` (a binding with role price), ``periods`` are the fallback."""

    currency: Literal["EUR", "GBP", "USD"] = "EUR"
    kind: Literal["time_of_use", "dynamic"] = "time_of_use"
    periods: list[Period] = []
    price_sensor: str | None = None
    demand_charge_per_kw_month: float = Field(default=0.0, ge=0)
    contracted_power_kw: float | None = Field(default=None, gt=0)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in CURRENCIES:
            raise ValueError(f"unknown currency {v!r}; known: {', '.join(CURRENCIES)}")
        return v

    @model_validator(mode="after")
    def _cover_every_day(self) -> TariffDoc:
        for i, p in enumerate(self.periods):
            try:
                parse_price(p.price, self.currency)
            except ValueError as e:
                raise ValueError(f"periods.{i}.price: {e}") from None
        if self.kind == "dynamic" and not self.price_sensor:
            raise ValueError("price_sensor: required for a dynamic tariff")
        if self.kind == "time_of_use" and not self.periods:
            raise ValueError("periods: a time-of-use tariff needs periods")
        for day in DAYS if self.periods else ():
            spans = sorted((_minutes(p.start), _minutes(p.end), p.name)
                           for p in self.periods if day in p.days)
            at = 0
            for start, end, name in spans:
                if start > at:
                    raise ValueError(f"periods: {day} has no price from {_hm(at)} to "
                                     f"{_hm(start)} (a gap before {name!r})")
                if start < at:
                    raise ValueError(f"periods: {day} has two prices from {_hm(start)} to "
                                     f"{_hm(min(at, end))} ({name!r} overlaps the period "
                                     f"before it)")
                at = end
            if at < 24 * 60:
                raise ValueError(f"periods: {day} has no price from {_hm(at)} to 24:00")
        return self

    def price_per_mwh(self, day: str, minute: int) -> tuple[float, str]:
        """(price in ``currency``/MWh, period name) on day type ``day`` at local minute."""
        for p in self.periods:
            if day in p.days and _minutes(p.start) <= minute < _minutes(p.end):
                return parse_price(p.price, self.currency), p.name
        raise TenantConfigError(f"no tariff period on {day} at {_hm(minute)}")


def _hm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class TankRule(_Doc):
    min_level_m: float | None = None
    max_level_m: float | None = None
    reserve_level_m: float | None = None  # below min? never planned below this plus a margin
    final_level: Literal["initial"] | float = "initial"  # end of horizon: >= start, or >= m

    @model_validator(mode="after")
    def _ordered(self) -> TankRule:
        lo, hi = self.min_level_m, self.max_level_m
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"min_level_m {lo} must be below max_level_m {hi}")
        return self


class HoursWindow(_Doc):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]] = list(DAYS)
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        _clock(v)
        return v


class PumpRule(_Doc):
    min_on_s: float = Field(default=0, ge=0)
    min_off_s: float = Field(default=0, ge=0)
    max_starts_per_day: int | None = Field(default=None, ge=0)
    forbidden: list[HoursWindow] = []
    out_of_service: bool = False


class RulesDoc(_Doc):
    tanks: dict[str, TankRule] = {}
    pumps: dict[str, PumpRule] = {}
    exclusive: list[list[str]] = []  # pumps that may not run together
    change_penalty: float = Field(default=0.0, ge=0)  # cost per changed pump-period (churn)
    change_horizon_h: float = Field(default=6.0, ge=0)  # the near periods it applies to

    @field_validator("exclusive")
    @classmethod
    def _groups(cls, v: list[list[str]]) -> list[list[str]]:
        for i, g in enumerate(v):
            if len(set(g)) < 2:
                raise ValueError(f"item {i}: a group needs at least two different pumps")
        return v


class TokenEntry(_Doc):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Literal["read", "write", "operate", "admin"]]
    issued_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class TokensDoc(_Doc):
    tokens: list[TokenEntry] = []

    @model_validator(mode="after")
    def _unique_names(self) -> TokensDoc:
        live = [t.name for t in self.tokens if t.revoked_at is None]
        dupes = {n for n in live if live.count(n) > 1}
        if dupes:
            raise ValueError(f"tokens: more than one live token named {sorted(dupes)}")
        return self


_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class ScheduleEntry(_Doc):
    """Request ``task`` at every instant ``cron`` names, in the tenant's time zone.

    DST: a fixed-time job (a single hour) whose wall-clock time does not exist on the
    spring day runs when the clocks have jumped (once), and runs once on the autumn day;
    a job on every hour follows the clock (23 and 25 slots on those days).  After
    downtime ``catch_up`` decides: the ``latest`` missed slot only, ``all``, or ``none``.
    """

    name: str = Field(pattern=_NAME)
    task: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
    cron: str
    params: dict[str, Any] = {}
    catch_up: Literal["latest", "all", "none"] = "latest"
    time_limit_s: float | None = Field(default=None, gt=0)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"expected a five-field cron expression such as '0 * * * *' "
                             f"(minute hour day month weekday), got {v!r}")
        return v


# a configured tenant's schedules unless it says otherwise: the day's KPIs shortly after
# local midnight (for the day before the slot); each missed night caught up (7 days)
DEFAULT_SCHEDULES = [
    {"name": "daily-kpis", "task": "kpi.compute", "cron": "15 0 * * *", "catch_up": "all"},
]


class SchedulesDoc(_Doc):
    """``schedules`` absent: ``DEFAULT_SCHEDULES``; an empty list: none."""

    schedules: list[ScheduleEntry] = Field(
        default_factory=lambda: [ScheduleEntry(**e) for e in DEFAULT_SCHEDULES])

    @model_validator(mode="after")
    def _unique(self) -> SchedulesDoc:
        names = [e.name for e in self.schedules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schedules: names used twice: {dupes}")
        return self


class ChainRule(_Doc):
    """When an event of type ``on`` arrives (and its fields match ``where``), request
    ``request`` with ``params``.  ``where`` keys are event fields (``kind`` of a task
    event, ``verified`` of a schedule...), or ``bound_role`` for readings (a sensor bound
    with that role is in the batch).  ``debounce_s``: events within one window request
    one task.  ``delay_s``: the task starts this long after the (first) event, e.g. so the
    readings that triggered it are stored first.  ``automatic_only``: only while the
    tenant's mode for this capability is automatic."""

    name: str = Field(pattern=_NAME)
    on: str = Field(pattern=r"^[a-z_]+\.[a-z_.]+$")
    where: dict[str, Any] = {}
    request: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
    params: dict[str, Any] = {}
    debounce_s: float = Field(default=0.0, ge=0)
    delay_s: float = Field(default=0.0, ge=0, le=86400)
    automatic_only: Literal["schedules", "forecasts", "alerts"] | None = None
    enabled: bool = True


DEFAULT_CHAINS = [
    {"name": "readings-to-forecast", "on": "readings.normalised",
     "where": {"bound_role": "zone_inflow"}, "request": "forecast.run", "debounce_s": 3600,
     "delay_s": 120},
    {"name": "forecast-to-optimise", "on": "forecast.issued", "request": "optimise",
     "debounce_s": 900, "delay_s": 30},
    {"name": "release-verified", "on": "schedule.proposed",
     "where": {"verified": True, "mode": "automatic"},
     "request": "schedule.release", "params": {"schedule_id": "{event_id}"},
     "automatic_only": "schedules"},
]


class ChainsDoc(_Doc):
    rules: list[ChainRule] = Field(default_factory=lambda: [ChainRule(**r) for r in DEFAULT_CHAINS])

    @model_validator(mode="after")
    def _no_cycle(self) -> ChainsDoc:
        from contracts.tasks import TASK_PRODUCES

        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rules: names used twice: {dupes}")
        # rule A leads to rule B when the task A requests produces an event B listens to
        rules = [r for r in self.rules if r.enabled]

        def produces(r: ChainRule) -> set[tuple[str, str | None]]:
            out = {(t, None) for t in TASK_PRODUCES.get(r.request, ())}
            return out | {("task.completed", r.request), ("task.failed", r.request)}

        def listens(r: ChainRule, event: tuple[str, str | None]) -> bool:
            tag, task_kind = event
            if tag != r.on:
                return False
            wanted = r.where.get("kind")
            return wanted is None or task_kind is None or wanted == task_kind

        after = {r.name: [o.name for o in rules if any(listens(o, e) for e in produces(r))]
                 for r in rules}

        def visit(name: str, path: list[str]) -> None:
            if name in path:
                cycle = path[path.index(name):] + [name]
                raise ValueError("rules form a cycle: " + " -> ".join(cycle) + " (each "
                                 "requests a task whose outcome triggers the next, forever)")
            for nxt in after[name]:
                visit(nxt, path + [name])

        for r in rules:
            visit(r.name, [])
        return self


class PVSystemDoc(_Doc):
    """A PV plant: where, how big, how it faces; ``azimuth_deg`` 180 = facing south;
    ``losses_pct``: system losses (soiling, wiring, availability)."""

    name: str = Field(pattern=_NAME)
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    peak_power_kw: float = Field(gt=0)
    tilt_deg: float = Field(default=30.0, ge=0, le=90)
    azimuth_deg: float = Field(default=180.0, ge=0, lt=360)
    altitude_m: float = 0.0
    losses_pct: float = Field(default=14.0, ge=0, lt=100)
    inverter_limit_kw: float | None = Field(default=None, gt=0)
    weather_location: str = ""  # the weather forecasts' location name to use


class PVDoc(_Doc):
    systems: list[PVSystemDoc] = []


class MailRule(_Doc):
    """Attachments whose file name matches ``attachment`` (a glob, case-insensitive, e.g.
    ``*levels*.csv``), in messages whose subject matches ``subject`` (a glob, when given),
    are read with the tenant's source mapping ``mapping``.  The first matching rule wins."""

    attachment: str = Field(min_length=1, max_length=200)
    subject: str | None = Field(default=None, min_length=1, max_length=200)
    mapping: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")


_SENDER = re.compile(r"^(?:[^@\s]{1,64})?@[A-Za-z0-9.-]{1,253}$")


class MailboxDoc(_Doc):
    """An IMAP mailbox whose attachments are uploads (``producers/mail``).

    ``tls``: ``ssl`` (implicit TLS, port 993), ``starttls`` or ``none`` (port 143).
    ``password_secret`` names a secret provisioned for the tenant, never the password
    itself: the poller reads ``<TAGUS_SECRETS_DIR>/<tenant>/<name>``, else the
    environment variable ``TAGUS_SECRET_<TENANT>_<NAME>`` (a tenant cannot name a path
    or variable of the deployment and have it sent to a server of its choosing).
    ``senders``: the allow-list, addresses (``scada@utility.example``) or whole domains
    (``@utility.example``); the From header is not authentication, so the mail server
    should check SPF/DKIM.  A handled message gets the keyword ``TagusProcessed``
    (``processed: flag``) or moves to ``processed_folder`` (``move``).  ``reply``: answer
    an allowed sender with the accounting of their attachments (through the deployment's
    SMTP server; never to unknown senders or automatic messages).
    """

    host: str = Field(pattern=r"^[A-Za-z0-9.:-]{1,253}$")
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["ssl", "starttls", "none"] = "ssl"
    user: str = Field(min_length=1, max_length=320)
    password_secret: str = Field(pattern=_NAME)
    folder: str = Field(default="INBOX", pattern=r"^[A-Za-z0-9 _./&+-]{1,200}$")
    processed: Literal["flag", "move"] = "flag"
    processed_folder: str | None = Field(default=None, pattern=r"^[A-Za-z0-9 _./&+-]{1,200}$")
    senders: list[str] = Field(min_length=1)
    rules: list[MailRule] = Field(min_length=1)
    max_attachment_mb: float = Field(default=50.0, gt=0, le=2048)  # MiB, decoded
    interval_s: float = Field(default=60.0, ge=1, le=86400)
    enabled: bool = True
    reply: bool = False

    @field_validator("senders")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for i, sender in enumerate(v):
            if not _SENDER.match(sender):
                raise ValueError(f"item {i}: expected an address (name@example.org) or a "
                                 f"domain (@example.org), got {sender!r}")
        return [s.lower() for s in v]

    @model_validator(mode="after")
    def _move_target(self) -> MailboxDoc:
        if self.processed == "move" and not self.processed_folder:
            raise ValueError("processed_folder: required when processed is move")
        if self.processed == "move" and self.processed_folder == self.folder:
            raise ValueError("processed_folder: must differ from folder")
        return self

    @property
    def port_or_default(self) -> int:
        return self.port or (993 if self.tls == "ssl" else 143)

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.max_attachment_mb * 1024 * 1024)


DOCUMENTS: dict[str, type[_Doc]] = {
    "tenant": TenantDoc, "assets": AssetsDoc, "tariff": TariffDoc, "rules": RulesDoc,
    "tokens": TokensDoc, "schedules": SchedulesDoc, "chains": ChainsDoc, "pv": PVDoc,
    "alerts": AlertsDoc,  # contracts/alerts.py
    "mailbox": MailboxDoc,
}


def parse_document(kind: str, data: Any) -> _Doc:
    """The validated document of ``kind``; TenantConfigError naming the field path."""
    model = DOCUMENTS.get(kind)
    if model is None:
        raise TenantConfigError(f"{kind}: not a structured document kind")
    if not isinstance(data, dict):
        raise TenantConfigError(f"{kind}: expected a mapping of fields, got "
                                f"{type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise TenantConfigError(f"{kind}: {describe(e)}") from None


def describe(exc: ValidationError) -> str:
    """``periods.2.price: ...; timezone: ...`` from a pydantic error."""
    parts = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown field (got {str(err['input'])[:60]!r})"
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)


def day_type(day: date, holidays: set[date]) -> str:
    """``holiday`` for a holiday, else mon..sun."""
    return "holiday" if day in holidays else DAYS[day.weekday()]
