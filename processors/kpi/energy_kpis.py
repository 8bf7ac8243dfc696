"""The ``kpi.compute`` figures of energy and money: energy and cost as run, pumped volume,
specific energy and cost per m3, and the saving against the network's own controls.

As run: measured energy where a ``pump_power`` sensor speaks for the pump, else the day
simulated in the EPANET twin with the pumps driven by their readings (``energy``).  The
saving compares two simulations of the same model (the as-run day and the counterfactual
under the .inp's controls), so the model's own error cancels.  Every figure that cannot
be computed is NaN with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from contracts.errors import TenantConfigError
from contracts.kpis import Kpi
from processors.deviation.compare import speaking_sensors
from processors.kpi.context import KpiDay, tank_bounds
from processors.kpi.energy import (PERIOD_S, DayRun, by_price, period_prices, run_day,
                                   zone_multipliers)
from processors.kpi.from_readings import pumped_volumes, pumped_words
from processors.kpi.measured import energy_by_period_kwh, energy_kwh, on_fractions, running
from processors.kpi.series import Held
from processors.simulate.errors import NetworkInputError, SimulationError
from processors.simulate.network import Network, load_network
from processors.simulate.scenario import ALL_JUNCTIONS

NAN = math.nan
START_WITHIN_S = 900.0  # no level at the day's start: the first reading this soon after


@dataclass
class PumpFigure:
    energy_kwh: float = NAN
    cost: float = NAN
    energy_detail: str = ""
    cost_detail: str = ""


@dataclass
class Drive:
    """How the readings drove a pump through the day in the twin."""

    sensor: str
    role: str
    speeds: np.ndarray  # relative speed per period, 0 = off
    on_hours: float
    coverage: float
    filled_periods: int = 0

    def words(self, pump: str) -> str:
        rule = {"pump_status": "status >= 0.5", "pump_flow": "flow > 1 l/s",
                "pump_speed": "speed > 0.05"}[self.role]
        text = (f"{pump} on {self.on_hours:.2f} h as {self.sensor} ({self.role}, "
                f"{rule}) shows, per {PERIOD_S // 60}-min period (on when on for half of it)")
        if self.coverage < 0.999:
            text += (f"; {100 * (1 - self.coverage):.0f}% of the day without readings, "
                     f"last state held")
        return text


@dataclass
class DaySimulations:
    """The day's two simulations and what went into them."""

    as_run: DayRun | None = None
    counterfactual: DayRun | None = None
    why_not: str = ""
    inputs: list[str] = field(default_factory=list)


def drives(d: KpiDay, pumps: list[str]) -> dict[str, Drive]:
    """pump -> its drive per period from the sensor that speaks for it (status, then
    speed, then flow: the deviation judgement's order)."""
    available = {s for s in d.held if d.has_readings(s)}
    edges = d.edges(PERIOD_S)
    out = {}
    for pump, (sensor, role) in speaking_sensors(d.bindings, available).items():
        if pump not in pumps:
            continue
        held = d.held[sensor]
        on = held.where(running(role, held.value))
        share, covered = on_fractions(on, edges)
        known = np.isfinite(share)
        if not known.any():
            continue
        idx = np.where(known, np.arange(share.size), -1)
        idx = np.maximum.accumulate(idx)
        idx = np.where(idx < 0, int(np.flatnonzero(known)[0]), idx)  # leading gap: first
        filled = share[idx]
        speed = (filled >= 0.5).astype(float)
        if role == "pump_speed":
            on_speed = Held(held.start_ns, held.end_ns, held.value * on.value)
            mean_on, _ = on_speed.per_period(edges)
            with np.errstate(invalid="ignore", divide="ignore"):
                level = np.where(share > 0, mean_on / share, np.nan)
            speed = speed * np.nan_to_num(level[idx], nan=1.0)
        on_hours = float(np.nansum(filled) * PERIOD_S / 3600.0)
        out[pump] = Drive(sensor, role, speed, on_hours, float(covered.mean()),
                          int((~known).sum()))
    return out


def _levels(d: KpiDay, network: Network) -> tuple[dict[str, float], list[str]]:
    levels, words = {}, []
    for b in sorted(d.bound("tank_level"), key=lambda b: b.sensor):
        if b.element not in network.tank_ids or b.element in levels:
            continue
        held = d.held.get(b.sensor)
        value = None if held is None else held.value_at(d.lo)
        when = d.clock(0)
        if value is None and held is not None:
            value = held.first_after(d.lo, START_WITHIN_S)
            when = f"just after {when}"
        if value is not None:
            levels[b.element] = value + b.offset_m
            words.append(f"{b.element} {value + b.offset_m:.2f} m measured at {when}")
    for t in network.tanks:
        if t.id not in levels:
            words.append(f"{t.id} {t.init_level_m:.2f} m from the model (no reading at the "
                         f"day's start)")
    return levels, words


def _zones(d: KpiDay) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for b in d.bound("zone_inflow"):
        out.setdefault(b.element, list(b.junctions) if b.junctions else [ALL_JUNCTIONS])
    return out


def _zone_flows(d: KpiDay) -> dict[str, np.ndarray]:
    sensors: dict[str, list[str]] = {}
    for b in d.bound("zone_inflow"):
        sensors.setdefault(b.element, []).append(b.sensor)
    edges = d.edges(3600)
    out = {}
    for zone, names in sensors.items():
        total = np.zeros(d.hours)
        for s in names:
            held = d.held.get(s)
            total = total + (held.per_period(edges)[0] if held is not None
                             else np.full(d.hours, np.nan))
        out[zone] = total
    return out


def simulate(d: KpiDay, network: Network, prices: np.ndarray, drive: dict[str, Drive],
             rules) -> DaySimulations:
    """The as-run day and the counterfactual (own controls), same demand and levels."""
    twin = DaySimulations()
    if not drive:
        twin.why_not = ("no pump of the network has status, speed or flow readings on the "
                        "day: what ran is unknown")
        return twin
    periods = d.seconds // PERIOD_S
    zones = _zones(d)
    mult, demand_words = zone_multipliers(network, zones, _zone_flows(d), periods)
    levels, level_words = _levels(d, network)
    named = {z: j for z, j in zones.items() if j != [ALL_JUNCTIONS]}
    oos = sorted(p for p, r in (rules.pumps.items() if rules else ())
                 if r.out_of_service and p in network.pump_ids)
    twin.inputs = ([f"zone {z}: {w}" for z, w in sorted(demand_words.items())]
                   or ["no zone inflow bound: the model's own demand patterns"])
    twin.inputs += [f"initial {w}" for w in level_words]
    try:
        twin.as_run = run_day(network, periods=periods, prices_per_kwh=prices,
                              initial_levels_m=levels, demand_multipliers=mult, zones=named,
                              speeds={p: dr.speeds for p, dr in drive.items()})
        twin.counterfactual = run_day(network, periods=periods, prices_per_kwh=prices,
                                      initial_levels_m=levels, demand_multipliers=mult,
                                      zones=named, speeds=None, out_of_service=oos)
    except (NetworkInputError, SimulationError) as e:
        twin.as_run = twin.counterfactual = None
        twin.why_not = f"EPANET could not simulate the day: {e}"
    return twin


def _money(x: float, currency: str) -> str:
    return f"{x:.2f} {currency}"


def _by_price_words(energy: np.ndarray, prices: np.ndarray, currency: str) -> str:
    parts = [f"{e:.2f} kWh at {p:.4f}" for p, e in by_price(energy, prices)]
    return f"Σ price x energy per {PERIOD_S // 60}-min period: " + " + ".join(parts) + \
        f" {currency}/kWh"


def network_of(config: dict) -> tuple[Network | None, str]:
    """The tenant's network, or None and why not."""
    if not config.get("network"):
        return None, "no network configured"
    try:
        return load_network(config["network"]), ""
    except NetworkInputError as e:
        return None, f"the network cannot be read ({e})"


def energy_kpis(d: KpiDay, config: dict, network: Network | None, no_network: str
                ) -> list[Kpi]:
    """energy_kwh, cost, pumped_m3, specific_energy_kwh_per_m3, cost_per_m3 per pump and
    for the network; counterfactual_energy_kwh, counterfactual_cost, saving and
    saving_energy_kwh for the network."""
    tenant, tariff, rules = config.get("tenant"), config.get("tariff"), config.get("rules")
    currency = tariff.currency if tariff else (tenant.currency if tenant else "EUR")
    periods = d.seconds // PERIOD_S
    prices, no_price = None, "no tariff configured"
    if tariff is not None:
        dynamic = None
        if tariff.kind == "dynamic" and tariff.price_sensor in d.held:
            dynamic = d.held[tariff.price_sensor].per_period(d.edges(PERIOD_S))[0]
        try:
            prices = period_prices(tariff, tenant, d.start, periods, dynamic)
        except TenantConfigError as e:
            no_price = f"the tariff has no price for part of the day ({e})"
    pumps = list(network.pump_ids) if network else []
    for b in d.bound("pump_status", "pump_flow", "pump_speed", "pump_power"):
        if b.element not in pumps:
            pumps.append(b.element)
    drive = drives(d, pumps if network is None else list(network.pump_ids))
    twin = (simulate(d, network, prices if prices is not None else np.zeros(periods), drive,
                     rules) if network is not None else DaySimulations(why_not=no_network))
    power = {b.element: b.sensor for b in sorted(d.bound("pump_power"), key=lambda b: b.sensor)
             if d.has_readings(b.sensor)}
    volumes = dict(_volumes(d, twin, network, pumps))
    figures = {p: _pump_figure(d, p, network, twin, drive, power, prices, no_price,
                               currency) for p in pumps}
    out: list[Kpi] = []
    for p in pumps:
        f = figures[p]
        out.append(Kpi(name="energy_kwh", subject=p, value=f.energy_kwh, unit="kWh",
                       detail=f.energy_detail))
        out.append(Kpi(name="cost", subject=p, value=f.cost, unit=currency,
                       detail=f.cost_detail))
        vol, vol_words = volumes.get(p, (NAN, "no flow readings and no simulation"))
        out.append(Kpi(name="pumped_m3", subject=p, value=vol, unit="m3", detail=vol_words))
        out += _per_m3(p, f.energy_kwh, f.cost, vol, currency)
    if pumps:
        out += _network_totals(pumps, figures, volumes, currency, _twin_check(d, twin))
    out += _saving(d, twin, network, rules, prices, no_price, currency)
    return out


def _volumes(d: KpiDay, twin: DaySimulations, network, pumps):
    measured = pumped_volumes(d)
    for p in pumps:
        if p in measured:
            sensor, got = measured[p]
            yield p, (got.total, pumped_words(sensor, got))
        elif twin.as_run is not None and p in twin.as_run.pump_ids:
            k = twin.as_run.pump_ids.index(p)
            yield p, (float(twin.as_run.pumped_m3[k]),
                      f"no flow readings: simulated in EPANET as run "
                      f"({float(twin.as_run.pumped_m3[k]):.1f} m3)")
        else:
            why = twin.why_not or "not in the simulation"
            yield p, (NAN, f"no flow readings of {p} on {d.day}, and no simulation: {why}")


def _pump_figure(d: KpiDay, pump: str, network, twin: DaySimulations, drive: dict[str, Drive],
                 power: dict[str, str], prices, no_price: str, currency: str) -> PumpFigure:
    f = PumpFigure()
    if pump in power:
        held = d.held[power[pump]]
        got = energy_kwh(held, d.lo, d.hi)
        per_period = energy_by_period_kwh(held, d.edges(PERIOD_S))
        f.energy_kwh = got.total
        f.energy_detail = (f"measured: ∫ {power[pump]} (pump_power) dt, each reading held "
                           f"until the next; {got.gap_words()}")
    elif twin.as_run is not None and pump in twin.as_run.pump_ids:
        k = twin.as_run.pump_ids.index(pump)
        per_period = twin.as_run.period_energy_kwh[:, k]
        f.energy_kwh = float(twin.as_run.energy_kwh[k])
        how = drive[pump].words(pump) if pump in drive else \
            f"{pump} has no status, speed or flow readings: left to the network's controls"
        f.energy_detail = f"simulated in EPANET: {how}; " + "; ".join(twin.inputs)
    else:
        why = twin.why_not or f"{pump} is not a pump of the network"
        f.energy_detail = f"no pump_power readings of {pump} and no simulation: {why}"
        f.cost_detail = f"no energy: {why}"
        return f
    if prices is None:
        f.cost_detail = f"no prices: {no_price}"
    else:
        f.cost = float(np.dot(per_period, prices))
        f.cost_detail = _by_price_words(per_period, prices, currency)
    return f


def _per_m3(subject: str, energy: float, cost: float, volume: float, currency: str
            ) -> list[Kpi]:
    if not volume > 0:
        why = "nothing pumped" if volume == 0 else "pumped volume unknown"
        return [Kpi(name="specific_energy_kwh_per_m3", subject=subject, value=NAN,
                    unit="kWh/m3", detail=why),
                Kpi(name="cost_per_m3", subject=subject, value=NAN, unit=f"{currency}/m3",
                    detail=why)]
    return [Kpi(name="specific_energy_kwh_per_m3", subject=subject, value=energy / volume,
                unit="kWh/m3", detail=f"energy_kwh / pumped_m3 = {energy:.2f} / "
                                      f"{volume:.1f}"),
            Kpi(name="cost_per_m3", subject=subject, value=cost / volume,
                unit=f"{currency}/m3", detail=f"cost / pumped_m3 = {cost:.2f} / {volume:.1f}")]


def _twin_check(d: KpiDay, twin: DaySimulations) -> str:
    """How the as-run simulation's final tank levels compare with the measured ones: the
    twin's fidelity on the day, in words (empty without a simulation or readings)."""
    if twin.as_run is None:
        return ""
    said = []
    for b in sorted(d.bound("tank_level"), key=lambda b: b.sensor):
        held = d.held.get(b.sensor)
        if b.element not in twin.as_run.tank_ids or held is None:
            continue
        before_end = held.value_at(d.hi - 1)
        if before_end is not None:
            said.append(f"{b.element} {twin.as_run.final_m(b.element):.2f} m simulated, "
                        f"{before_end + b.offset_m:.2f} m measured")
    return ("; at the day's end as run: " + ", ".join(said)) if said else ""


def _network_totals(pumps, figures, volumes, currency, check: str = "") -> list[Kpi]:
    def total(values, what):
        missing = [p for p, v in values.items() if not math.isfinite(v)]
        if missing:
            return NAN, f"{what} unknown for {', '.join(missing)}"
        return float(sum(values.values())), f"sum over {', '.join(pumps)}"
    e, e_words = total({p: figures[p].energy_kwh for p in pumps}, "energy")
    c, c_words = total({p: figures[p].cost for p in pumps}, "cost")
    v, v_words = total({p: volumes.get(p, (NAN,))[0] for p in pumps}, "pumped volume")
    return [Kpi(name="energy_kwh", subject="network", value=e, unit="kWh",
                detail=e_words + check),
            Kpi(name="cost", subject="network", value=c, unit=currency, detail=c_words),
            Kpi(name="pumped_m3", subject="network", value=v, unit="m3", detail=v_words),
            *_per_m3("network", e, c, v, currency)]


def _saving(d: KpiDay, twin: DaySimulations, network, rules, prices, no_price: str, currency: str
            ) -> list[Kpi]:
    ar, cf = twin.as_run, twin.counterfactual
    if ar is None or cf is None:
        why = twin.why_not or "no simulation"
        return [Kpi(name="saving", subject="network", value=NAN, unit=currency,
                    detail=f"no counterfactual: {why}"),
                Kpi(name="saving_energy_kwh", subject="network", value=NAN, unit="kWh",
                    detail=f"no counterfactual: {why}")]
    bounds = {}
    for t in network.tank_ids:
        got = tank_bounds(t, rules, network)
        if got is not None:
            bounds[t] = got
    breaches = cf.breaches({t: (lo, hi) for t, (lo, hi, _) in bounds.items()})
    if breaches:
        judged = ("the counterfactual broke the rules (" + "; ".join(
            f"tank {t} {side} its {'minimum' if side == 'below' else 'maximum'} {bound:.2f} m "
            f"({bounds[t][2]}): {level:.2f} m at {d.clock(at)}"
            for t, side, level, bound, at in breaches)
            + "): the saving is against a baseline that broke the rules")
    else:
        judged = "the counterfactual kept " + ", ".join(
            f"{t} within [{lo:.2f}, {hi:.2f}] m" for t, (lo, hi, _) in bounds.items())
    finals = ", ".join(f"{t} ends at {cf.final_m(t):.2f} m (as run {ar.final_m(t):.2f} m)"
                       for t in network.tank_ids)
    stored = sum(float(t.volume_m3(cf.final_m(t.id)) - t.volume_m3(ar.final_m(t.id)))
                 for t in network.tanks)
    if abs(stored) >= 1.0:
        finals += (f": the counterfactual ends with {abs(stored):.0f} m3 "
                   f"{'more' if stored > 0 else 'less'} in storage")
    basis = (f"the network's own controls (.inp controls and rules) on the same measured "
             f"demand, initial levels and tariff: {cf.energy_kwh.sum():.2f} kWh")
    ar_e, cf_e = float(ar.energy_kwh.sum()), float(cf.energy_kwh.sum())
    out = [Kpi(name="counterfactual_energy_kwh", subject="network", value=cf_e, unit="kWh",
               detail=f"{basis}; {judged}; {finals}"),
           Kpi(name="saving_energy_kwh", subject="network", value=cf_e - ar_e, unit="kWh",
               detail=f"counterfactual - as run, both simulated: {cf_e:.2f} - {ar_e:.2f} kWh; "
                      f"{judged}")]
    if prices is None:
        out += [Kpi(name="counterfactual_cost", subject="network", value=NAN, unit=currency,
                    detail=f"no prices: {no_price}"),
                Kpi(name="saving", subject="network", value=NAN, unit=currency,
                    detail=f"no prices: {no_price}")]
        return out
    ar_c, cf_c = float(ar.cost.sum()), float(cf.cost.sum())
    out += [Kpi(name="counterfactual_cost", subject="network", value=cf_c, unit=currency,
                detail=f"{_by_price_words(cf.period_energy_kwh, prices, currency)}; {basis}"),
            Kpi(name="saving", subject="network", value=cf_c - ar_c, unit=currency,
                detail=f"counterfactual - as run, both simulated (like for like): "
                       f"{_money(cf_c, currency)} - {_money(ar_c, currency)}; {judged}; "
                       f"{finals}")]
    return out
