"""What a run of the twin starts from, for a task on a tenant's network: the start and the
horizon asked for, the zones the inflows drive, the price of each period in the tenant's
zone, each zone's demand multipliers and the initial tank levels from what the runner
loaded (``optimise_inputs``, ``ops/loaders.py``).  Shared by the ``simulate`` and
``optimise`` tasks.  Periods of ``PERIOD_S`` (an hour); prices per kWh; levels in m.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from contracts.config import day_type
from contracts.errors import TenantConfigError
from processors.simulate.demand import multipliers, zone_demand_m3s
from processors.simulate.network import Network
from processors.simulate.scenario import ALL_JUNCTIONS

PERIOD_S = 3600
MAX_LEVEL_AGE_S = 2 * 3600  # an older tank reading is not today's level


def start_of(event) -> datetime:
    """The run's start: ``params.start`` or the request time rounded up to the hour."""
    raw = event.params.get("start")
    if raw:
        try:
            t = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            raise TenantConfigError(f"params.start: expected an ISO time, got {raw!r}") from None
        if t.tzinfo is None:
            raise TenantConfigError("params.start: give a zone (e.g. 2019-01-15T00:00Z)")
        return t.astimezone(ZoneInfo("UTC"))
    t = event.recorded_at.astimezone(ZoneInfo("UTC"))
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(hours=1)


def horizon_of(event) -> int:
    raw = event.params.get("horizon_h", 24)
    try:
        hours = int(raw)
    except (TypeError, ValueError):
        raise TenantConfigError(f"params.horizon_h: expected whole hours, got {raw!r}") from None
    if not 1 <= hours <= 168:
        raise TenantConfigError(f"params.horizon_h: 1..168, got {hours}")
    return hours


def zones_of(assets) -> dict[str, list[str]]:
    """Zone name -> the junctions its inflow drives ("*": every junction)."""
    out: dict[str, list[str]] = {}
    for b in assets.bindings if assets else ():
        if b.role == "zone_inflow":
            out.setdefault(b.element, list(b.junctions) if b.junctions else [ALL_JUNCTIONS])
    return out


def prices(tariff, tenant, start: datetime, periods: int,
           dynamic: list[float | None] | None) -> tuple[float, ...]:
    """Price per kWh of each period: the dynamic price where known, else the time-of-use
    period at the period's start in the tenant's zone (holidays priced as such)."""
    zone = ZoneInfo(tenant.timezone)
    years = range(start.year - 1, start.year + 2)
    holidays = tenant.holidays(years)
    out = []
    for k in range(periods):
        if dynamic and k < len(dynamic) and dynamic[k] is not None:
            out.append(dynamic[k] / 1000.0)
            continue
        local = (start + timedelta(seconds=k * PERIOD_S)).astimezone(zone)
        per_mwh, _ = tariff.price_per_mwh(day_type(local.date(), holidays),
                                          local.hour * 60 + local.minute)
        out.append(per_mwh / 1000.0)
    return tuple(out)


@dataclass
class StartingPoint:
    """Demand multipliers per zone key ("*" or the zone) and period (``upper``: from the
    forecast's P90), what drove each zone in words, the initial levels taken from
    readings (m), and warnings about what was missing."""

    demand: dict[str, list[float]] = field(default_factory=dict)
    upper: dict[str, list[float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    levels: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def starting_point(event, network: Network, zones: dict[str, list[str]], inputs: dict,
                   start: datetime, periods: int) -> StartingPoint:
    """Zone demand from the loaded forecast (or measured inflow, ``params.demand =
    actual``) scaled by ``params.demand_multiplier``; initial levels from the latest
    readings (with the sensors' offsets), unless older than ``MAX_LEVEL_AGE_S``."""
    out = StartingPoint()
    raw = event.params.get("demand_multiplier", 1.0)
    try:
        scale = float(raw)
    except (TypeError, ValueError):
        raise TenantConfigError(f"params.demand_multiplier: expected a number, got "
                                f"{raw!r}") from None
    if not 0 <= scale <= 10:
        raise TenantConfigError(f"params.demand_multiplier: 0..10, got {scale}")
    source = str(event.params.get("demand", "forecast"))
    for zone, junctions in zones.items():
        flows = inputs["demand"].get(zone)
        if flows is None:
            continue
        model = zone_demand_m3s(network, junctions[0] if junctions == [ALL_JUNCTIONS]
                                else junctions, start_s=0, period_s=PERIOD_S,
                                periods=periods)
        key = ALL_JUNCTIONS if junctions == [ALL_JUNCTIONS] else zone
        out.demand[key] = [m * scale for m in multipliers(flows["p50"], model)]
        if flows.get("p90") is not None:
            out.upper[key] = [m * scale for m in multipliers(flows["p90"], model)]
        out.sources[zone] = flows["source"]
    for tank_id in network.tank_ids:
        at = inputs.get("level_at", {}).get(tank_id)
        if tank_id not in inputs["levels"]:
            out.warnings.append(f"tank {tank_id}: no level reading at or before the start; "
                                f"the model's initial level "
                                f"{network.tank(tank_id).init_level_m:.2f} m is used")
        elif at is not None and (start - at).total_seconds() > MAX_LEVEL_AGE_S:
            out.warnings.append(f"tank {tank_id}: the last level reading is from "
                                f"{at.isoformat()}, {(start - at).total_seconds() / 3600:.1f} h "
                                f"before the start; the model's initial level "
                                f"{network.tank(tank_id).init_level_m:.2f} m is used")
        else:
            out.levels[tank_id] = inputs["levels"][tank_id]
    for zone in zones:
        if zone not in out.sources:
            out.warnings.append(f"zone {zone}: no "
                                f"{'measured demand' if source == 'actual' else 'forecast'}"
                                f" covering the horizon; the network's own demand pattern "
                                f"is used")
    return out
