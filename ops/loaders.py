"""The resources handlers may ask for (``NEEDS``), loaded by the runner: the I/O edge.

Registered by the bootstrap (``ops/wiring.py``) and handed to every runner.
"""

from __future__ import annotations

import tempfile
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from bus.resources import Loaders
from bus.storage import get_mapping
from contracts.base import Event
from contracts.errors import ContractError
from ops.schedule_loader import ReleasedSchedules

SPOOL_MAX_BYTES = 16 * 1024 * 1024  # larger payloads spill to a temporary file


async def load_payload(js: JetStreamContext, event: Event):
    """The uploaded bytes as a binary file object (memory up to 16 MiB, then disk)."""
    bucket, name = getattr(event, "bucket", None), getattr(event, "object_name", None)
    if not bucket or not name:
        raise ContractError(f"{type(event).__name__} carries no object reference")
    store = await js.object_store(bucket)
    f = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES)
    try:
        await store.get(name, writeinto=f)
    except (ObjectNotFoundError, NotFoundError):
        f.close()
        return None
    f.seek(0)
    return f


async def load_mapping(js: JetStreamContext, event: Event) -> bytes | None:
    """The tenant's current text of the mapping the upload names (None if none)."""
    mapping_id = getattr(event, "mapping_id", None)
    if not mapping_id:
        return None
    return await get_mapping(js, event.tenant, mapping_id)


def loaders(settings=None) -> Loaders:
    """Every loader of this deployment (those that read QuestDB need ``settings``)."""
    config = ConfigLoader()
    out = {"payload": load_payload, "mapping": load_mapping, "config": config}
    out["models"] = TrainedModels()
    out["schedules"] = ReleasedSchedules()
    if settings is not None:
        out["readings"] = ReadingsForKpis(settings, config)
        out["kpi_inputs"] = KpiInputs(settings, config)
        out["forecast_inputs"] = ForecastInputs(settings, config)
        out["optimise_inputs"] = OptimiseInputs(settings, config)
        out["calibration_inputs"] = CalibrationInputs(settings, config)
    return out


# ---------------------------------------------------------------- configuration


class ConfigLoader:
    """The tenant's configuration as it was when the input event was recorded.

    A handler that ``NEEDS = ("config",)`` gets ``{kind: document}`` (pydantic documents;
    the network as its .inp text) plus ``"versions": {kind: version}``.  Which version:
    the one the input names in ``config_versions`` (a task request pins them), else the
    latest recorded at or before the input's ``recorded_at``: a forecast replayed after a
    tariff change still sees the tariff that was in force.  Versions are read from the
    CONFIG stream (a kind's history is short) and cached per process.
    """

    KINDS = ("tenant", "network", "assets", "tariff", "rules", "chains", "pv", "alerts")

    def __init__(self) -> None:
        self._history: dict[tuple[str, str], list] = {}
        self._texts: dict[str, str] = {}

    async def __call__(self, js: JetStreamContext, event: Event) -> dict:
        from bus import config_log
        from contracts.config import parse_document

        pinned = getattr(event, "config_versions", None) or {}
        out: dict = {"versions": {}}
        for kind in self.KINDS:
            chosen = await self._choose(js, event, kind, pinned.get(kind))
            if chosen is None:
                out[kind] = None
                continue
            out["versions"][kind] = chosen.version
            if chosen.document is not None:
                out[kind] = parse_document(kind, chosen.document)
            else:
                if chosen.sha256 not in self._texts:
                    self._texts[chosen.sha256] = await config_log.text_of(js, chosen)
                out[kind] = self._texts[chosen.sha256]
        return out

    async def _choose(self, js, event: Event, kind: str, pinned: int | None):
        from bus import config_log

        key = (event.tenant, kind)
        history = self._history.get(key)
        latest = await config_log.last(js, event.tenant, kind)
        if latest is None:
            return None
        if not history or history[-1].version < latest.event.version:
            history = [s.event for s in await config_log.history(js, event.tenant, kind)]
            self._history[key] = history
        if pinned is not None:
            for e in history:
                if e.version == pinned:
                    return e
            raise ContractError(f"{event.tenant}/{kind} has no version {pinned} (pinned by "
                                f"{type(event).__name__} {event.event_id})")
        in_force = [e for e in history if e.recorded_at <= event.recorded_at]
        return in_force[-1] if in_force else None


class ReadingsForKpis:
    """``{sensor: timestamps_ns}`` of the tenant's bound sensors over the task's day and the
    week before it (the nominal interval), from QuestDB with bound parameters."""

    def __init__(self, settings, config: ConfigLoader) -> None:
        self.settings, self.config = settings, config

    async def __call__(self, js: JetStreamContext, event: Event) -> dict:
        from datetime import timedelta

        from ops.wiring import pg_connection
        from processors.kpi.completeness import day_bounds_utc
        from processors.kpi.handler import LOOKBACK_DAYS, target_day

        cfg = await self.config(js, event)
        if cfg.get("assets") is None:
            return {}
        tz = cfg["tenant"].timezone if cfg.get("tenant") else "UTC"
        start, end = day_bounds_utc(target_day(event, tz), tz)
        start -= timedelta(days=LOOKBACK_DAYS)
        sensors = sorted({b.sensor for b in cfg["assets"].bindings})
        await _visible(self.settings)
        conn = await pg_connection(self.settings)
        try:
            rows = await conn.fetch(
                "SELECT sensor, ts FROM readings WHERE tenant = $1 AND ts >= $2 AND ts < $3",
                event.tenant, start.replace(tzinfo=None), end.replace(tzinfo=None))
        finally:
            await conn.close()
        out: dict[str, list[int]] = {s: [] for s in sensors}
        epoch = datetime(1970, 1, 1)
        for r in rows:
            if r["sensor"] in out:
                out[r["sensor"]].append((r["ts"] - epoch) // timedelta(microseconds=1) * 1000)
        return out


class KpiInputs:
    """What ``kpi.compute`` needs beyond timestamps (``processors/kpi/compute.py``): the
    values of the tenant's bound sensors from an hour before the day's start to its end,
    the zone inflow sensors' values a week earlier (the seasonal naive), and per zone the
    latest forecast issued at or before the day's start.  Other kinds of the KPI worker
    get None (nothing is read for them).  QuestDB through bound queries, one per sensor."""

    ROLES = ("tank_level", "pump_status", "pump_flow", "pump_power", "pump_speed",
             "zone_inflow", "price")

    def __init__(self, settings, config: ConfigLoader) -> None:
        self.settings, self.config = settings, config

    async def __call__(self, js: JetStreamContext, event: Event) -> dict | None:
        from datetime import timedelta

        from ops.wiring import pg_connection
        from processors.kpi.completeness import day_bounds_utc
        from processors.kpi.handler import target_day
        from projections.api import queries

        if getattr(event, "kind", None) != "kpi.compute":
            return None
        cfg = await self.config(js, event)
        tz = cfg["tenant"].timezone if cfg.get("tenant") else "UTC"
        start, end = day_bounds_utc(target_day(event, tz), tz)
        bindings = cfg["assets"].bindings if cfg.get("assets") else ()
        sensors = sorted({b.sensor for b in bindings if b.role in self.ROLES})
        zone_sensors = sorted({b.sensor for b in bindings if b.role == "zone_inflow"})
        zones = sorted({b.element for b in bindings if b.role == "zone_inflow"})
        hour, week = timedelta(hours=1), timedelta(days=7)
        await _visible(self.settings)
        conn = await pg_connection(self.settings)
        try:
            series = {s: await _values(conn, event.tenant, s, start - hour, end)
                      for s in sensors}
            # a DST change within the week moves the same local hour by one UTC hour
            before = {s: await _values(conn, event.tenant, s, start - week - 2 * hour,
                                       end - week + 2 * hour) for s in zone_sensors}
            forecasts = {}
            for zone in zones:
                series_id = f"zone:{zone}"
                try:
                    issued, rows = await queries.forecast(conn, event.tenant, series_id,
                                                          start)
                except queries.InvalidParameter:
                    continue  # a zone name no forecast series can have
                if issued is None:
                    continue
                forecasts[series_id] = {
                    "issued_at": issued,
                    "valid_ns": [_ns(datetime.fromisoformat(r["valid_at"].replace("Z",
                                                                                 "+00:00")))
                                 for r in rows],
                    "p50": [r["p50"] for r in rows],
                    "method": rows[0]["method"] if rows else ""}
        finally:
            await conn.close()
        return {"series": series, "week_before": before, "forecasts": forecasts}


_VALUES_SQL = ("SELECT ts, value FROM readings WHERE tenant = $1 AND sensor = $2 "
               "AND ts >= $3 AND ts < $4 ORDER BY ts")


async def _values(conn, tenant: str, sensor: str, start, end):
    """(UTC ns, SI values) of one sensor over [start, end), as numpy arrays."""
    import numpy as np

    rows = await conn.fetch(_VALUES_SQL, tenant, sensor, start.replace(tzinfo=None),
                            end.replace(tzinfo=None))
    return (np.array([_ns(r["ts"]) for r in rows], dtype=np.int64),
            np.array([r["value"] for r in rows], dtype=float))


def _ns(t: datetime) -> int:
    """Epoch ns of a naive-UTC or aware datetime (microsecond precision)."""
    from datetime import UTC, timedelta

    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


class ForecastInputs:
    """The forecast tasks' data, from QuestDB (hourly means, bound parameters): each zone's
    summed inflow and the observed weather, over the history the task needs before its
    reference instant; plus the latest weather forecast issued before it, if any."""

    def __init__(self, settings, config: ConfigLoader) -> None:
        self.settings, self.config = settings, config

    async def __call__(self, js: JetStreamContext, event: Event) -> dict:
        import hashlib

        import numpy as np
        import pandas as pd

        from ops.wiring import pg_connection
        from processors.forecast.tasks import HISTORY_DAYS, RUN_HISTORY_DAYS, instant, zones
        from projections.api.queries import hourly_means

        cfg = await self.config(js, event)
        train = event.kind == "forecast.train"
        end = instant(event, "origin" if train else "issued_at")
        days = HISTORY_DAYS if train else RUN_HISTORY_DAYS
        start = end - pd.Timedelta(days=days)
        series = zones(cfg.get("assets"))
        weather_roles = {"weather_temperature": ("temperature_c", 1.0),
                         "weather_precipitation": ("precipitation_mm", 1000.0),
                         "weather_humidity": ("humidity_pct", 100.0),
                         "weather_wind": ("wind_speed_ms", 1.0)}
        weather_sensors = [(b.sensor, weather_roles[b.role]) for b in
                           (cfg["assets"].bindings if cfg.get("assets") else ())
                           if b.role in weather_roles]
        grid = pd.date_range(start, end, freq="h", inclusive="left", tz="UTC")
        await _visible(self.settings)
        conn = await pg_connection(self.settings)
        try:
            async def hourly(sensor: str) -> pd.Series:
                rows = await hourly_means(conn, event.tenant, sensor, start.to_pydatetime(),
                                          end.to_pydatetime())
                s = pd.Series([v for _, v in rows], dtype="float64",
                              index=pd.to_datetime([t for t, _ in rows], utc=True))
                return s.reindex(grid)

            demand, digests = {}, {}
            for name, sensors in series.items():
                parts = [await hourly(s) for s in sensors]
                total = pd.concat(parts, axis=1).sum(axis=1, min_count=len(parts))
                demand[name] = total
                digests[name] = hashlib.sha256(
                    total.index.asi8.tobytes() + np.nan_to_num(total.to_numpy(), nan=-1e300)
                    .tobytes()).hexdigest()
            weather = None
            if weather_sensors:
                cols: dict[str, list[pd.Series]] = {}
                for sensor, (column, factor) in weather_sensors:
                    cols.setdefault(column, []).append(await hourly(sensor) * factor)
                weather = pd.DataFrame({c: pd.concat(v, axis=1).mean(axis=1)
                                        for c, v in cols.items()})
            forecast = None
            tenant = cfg.get("tenant")
            if not train and tenant is not None and tenant.weather_location:
                from projections.weather import forecast_as_of

                got = await forecast_as_of(conn, event.tenant, tenant.weather_location,
                                           end.to_pydatetime())
                if got is not None:
                    forecast = {"event_id": ",".join(got.event_ids),
                                "issued_at": got.issued_at, "frame": _model_weather(got.frame)}
        finally:
            await conn.close()
        return {"demand": demand, "weather": weather, "weather_forecast": forecast,
                "window": (start, end), "data_sha256": digests}


class TrainedModels:
    """{series: (forecast.model_trained, artefact bytes)}: for each series the latest model
    trained before the request was recorded (a replay gets the model of its time).
    Artefacts come only from Tagus's own bucket, by the hash the event names."""

    def __init__(self) -> None:
        self._events: dict[str, list] = {}
        self._blobs: dict[str, bytes] = {}

    async def __call__(self, js: JetStreamContext, event: Event) -> dict:
        from bus.subjects import event_subjects
        from contracts.forecasts import MODELS_BUCKET, ForecastModelTrained
        from contracts.registry import decode

        subject = event_subjects(ForecastModelTrained, event.tenant)
        known = self._events.setdefault(event.tenant, [])
        seq = known[-1][0] + 1 if known else 1
        while True:
            try:
                raw = await js.get_msg("FORECAST", seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            known.append((raw.seq, decode("forecast", raw.data)))
            seq = raw.seq + 1
        latest = {}
        for _, trained in known:
            if trained.recorded_at <= event.recorded_at:
                latest[trained.series] = trained
        out = {}
        store = await js.object_store(MODELS_BUCKET)
        for series, trained in latest.items():
            blob = self._blobs.get(trained.model_sha256)
            if blob is None:
                blob = (await store.get(trained.object_name)).data
                self._blobs[trained.model_sha256] = blob
            out[series] = (trained, blob)
        return out


async def _visible(settings) -> None:
    """Wait (bounded) until readings already written to QuestDB are visible to queries:
    its WAL is applied asynchronously, and a task right after an upload must see it."""
    import asyncio

    from contracts.errors import TransientError
    from ops.wiring import questdb

    try:
        await asyncio.to_thread(questdb(settings).wait_for_wal, "readings", 30.0)
    except TransientError:
        pass  # a lagging WAL: the task reads what is visible; retries see more


# weather forecast variable (SI) -> the demand models' column and factor
_MODEL_WEATHER = {"air_temp": ("temperature_c", 1.0), "precipitation": ("precipitation_mm", 1000.0),
                  "relative_humidity": ("humidity_pct", 100.0),
                  "wind_speed": ("wind_speed_ms", 1.0)}


def _model_weather(frame):
    import pandas as pd

    cols = {model: frame[var] * factor for var, (model, factor) in _MODEL_WEATHER.items()
            if var in frame}
    out = pd.DataFrame(cols, index=frame.index)
    out.index = pd.DatetimeIndex(out.index).tz_convert("UTC")
    out.index.name = None
    return out


class OptimiseInputs:
    """What the ``optimise`` and ``schedule.release`` tasks need beyond the configuration:
    initial tank levels (the last reading at or before the start, plus the sensor's
    offset), each zone's hourly demand over the horizon (the latest forecast issued at or
    before the start, or what was measured: ``params.demand = actual``), the schedule in
    force (stability), dynamic prices; for a release, the proposal and the last version
    released before the request.  QuestDB through bound queries; the SCHEDULE stream by subject."""

    def __init__(self, settings, config: ConfigLoader) -> None:
        from ops.schedule_loader import ReleasedSchedules
        from projections.schedules import ScheduleStream

        self.settings, self.config = settings, config
        self.released, self.stream = ReleasedSchedules(), ScheduleStream()

    async def __call__(self, js: JetStreamContext, event: Event) -> dict:
        from datetime import timedelta

        from contracts.errors import TenantConfigError
        from processors.optimise.task import PERIOD_S, horizon_of, start_of

        released = await self.released(js, event)
        if event.kind == "schedule.release":
            schedule_id = str(event.params.get("schedule_id") or "")
            return {"proposed": await self.stream.proposal(js, event.tenant, schedule_id),
                    "last_version": max((r.version for r in released), default=0)}
        cfg = await self.config(js, event)
        try:
            start, hours = start_of(event), horizon_of(event)
        except TenantConfigError:
            if event.kind != "simulate":
                raise
            # the simulate handler refuses the params with the same message, as a failed task
            return {"levels": {}, "level_at": {}, "demand": {}, "prices": None,
                    "released": None}
        end = start + timedelta(hours=hours)
        assets = cfg.get("assets")
        bindings = assets.bindings if assets else ()
        source = str(event.params.get("demand", "forecast"))
        await _visible(self.settings)
        from ops.wiring import pg_connection
        from projections.api import queries

        conn = await pg_connection(self.settings)
        try:
            levels, level_at = {}, {}
            for b in bindings:
                if b.role == "tank_level":
                    got = await queries.value_at(conn, event.tenant, b.sensor, start)
                    if got is not None:
                        levels[b.element] = got[1] + b.offset_m
                        level_at[b.element] = got[0]
            demand = {}
            zones: dict[str, list[str]] = {}
            for b in bindings:
                if b.role == "zone_inflow":
                    zones.setdefault(b.element, []).append(b.sensor)
            for zone, sensors in zones.items():
                if source == "actual":
                    demand[zone] = await _measured(conn, event.tenant, sensors, start, hours)
                else:
                    demand[zone] = await _forecast(conn, event.tenant, f"zone:{zone}", start,
                                                   hours)
            prices = None
            tariff = cfg.get("tariff")
            if tariff is not None and tariff.kind == "dynamic":
                rows = dict(await queries.hourly_means(conn, event.tenant, tariff.price_sensor,
                                                       start, end))
                prices = [rows.get(start + timedelta(seconds=k * PERIOD_S))
                          for k in range(hours * 3600 // PERIOD_S)]
        finally:
            await conn.close()
        out = {"levels": levels, "level_at": level_at,
               "demand": {z: d for z, d in demand.items() if d},
               "prices": prices, "released": _in_force(released, start, hours)}
        named = event.params.get("schedule")
        if event.kind == "simulate" and isinstance(named, str) and len(named) == 36:
            # a proposal named by id (processors/simulate/task.py checks the rest)
            out["schedule"] = await self.stream.proposal(js, event.tenant, named)
        return out


async def _measured(conn, tenant: str, sensors: list[str], start, hours: int) -> dict | None:
    from datetime import timedelta

    from projections.api import queries

    end = start + timedelta(hours=hours)
    parts = [dict(await queries.hourly_means(conn, tenant, s, start, end)) for s in sensors]
    flows = []
    for k in range(hours):
        t = start + timedelta(hours=k)
        values = [p.get(t) for p in parts]
        if any(v is None for v in values):
            return None
        flows.append(sum(values))
    return {"p50": flows, "p90": None, "source": f"measured {', '.join(sensors)}"}


async def _forecast(conn, tenant: str, series: str, start, hours: int) -> dict | None:
    from datetime import datetime, timedelta

    from projections.api import queries

    issued, rows = await queries.forecast(conn, tenant, series, start)
    by_time = {datetime.fromisoformat(r["valid_at"].replace("Z", "+00:00")): r for r in rows}
    wanted = [by_time.get(start + timedelta(hours=k)) for k in range(hours)]
    if issued is None or any(r is None for r in wanted):
        return None
    return {"p50": [r["p50"] for r in wanted], "p90": [r["p90"] for r in wanted],
            "source": f"forecast {series} issued {issued.isoformat()}"}


def _in_force(released: list, start, hours: int) -> dict | None:
    """The latest release covering ``start``, as speeds aligned to the new periods."""
    from datetime import timedelta

    for r in reversed(released):
        end = r.start + timedelta(seconds=r.period_s * len(r.pumps[0].speeds)) if r.pumps \
            else r.start
        if r.start <= start < end:
            offset = int((start - r.start).total_seconds() // r.period_s)
            return {"schedule_id": r.schedule_id,
                    "speeds": {p.pump: p.speeds[offset:offset + hours] for p in r.pumps}}
    return None


class CalibrationInputs:
    """What the ``simulate`` task's calibration compares the twin with: the values of the
    tenant's tank level, pump and zone inflow sensors over ``params.calibrate_days`` days
    before the start (and the hour before them), ``{"series": {sensor: (UTC ns, SI
    values)}}``; None when no calibration is asked for.  QuestDB, bound queries."""

    ROLES = ("tank_level", "pump_status", "pump_flow", "pump_speed", "zone_inflow")

    def __init__(self, settings, config: ConfigLoader) -> None:
        self.settings, self.config = settings, config

    async def __call__(self, js: JetStreamContext, event: Event) -> dict | None:
        from datetime import timedelta

        from contracts.errors import TenantConfigError
        from ops.wiring import pg_connection
        from processors.simulate.inputs import start_of
        from processors.simulate.task import calibrate_days

        if getattr(event, "kind", None) != "simulate":
            return None
        try:
            days = calibrate_days(event)
            start = start_of(event)
        except TenantConfigError:
            return None  # the handler says what is wrong with the params
        if not days:
            return None
        cfg = await self.config(js, event)
        bindings = cfg["assets"].bindings if cfg.get("assets") else ()
        sensors = sorted({b.sensor for b in bindings if b.role in self.ROLES})
        first = start - timedelta(days=days, hours=1)
        await _visible(self.settings)
        conn = await pg_connection(self.settings)
        try:
            series = {s: await _values(conn, event.tenant, s, first, start) for s in sensors}
        finally:
            await conn.close()
        return {"series": series}
