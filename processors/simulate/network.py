"""An EPANET network as data: what the twin and the optimiser need to know about it.

``load_network`` takes the .inp as text or bytes (reading files is the caller's job) and
returns a frozen ``Network``: the text itself (EPANET runs it), and a summary parsed with
wntr in SI units -- lengths and levels in m, flows in m3/s, volumes in m3, times in s,
energy prices per kWh in the .inp's currency.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np

from processors.simulate.errors import NetworkInputError

_J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class TankInfo:
    """A storage tank.  ``volume_curve`` holds (level m, volume m3) points when the tank
    is not a cylinder."""

    id: str
    elevation_m: float
    init_level_m: float
    min_level_m: float
    max_level_m: float
    diameter_m: float
    min_volume_m3: float
    volume_curve: tuple[tuple[float, float], ...] | None = None

    def volume_m3(self, level_m: float | np.ndarray) -> float | np.ndarray:
        """Stored volume at ``level_m`` (as EPANET computes it)."""
        if self.volume_curve:
            x, y = np.array(self.volume_curve).T
            return np.interp(level_m, x, y)
        area = math.pi * self.diameter_m ** 2 / 4
        return self.min_volume_m3 + area * (np.asarray(level_m) - self.min_level_m)

    def level_m(self, volume_m3: float | np.ndarray) -> float | np.ndarray:
        """Level at stored ``volume_m3`` (inverse of ``volume_m3``)."""
        if self.volume_curve:
            x, y = np.array(self.volume_curve).T
            return np.interp(volume_m3, y, x)
        area = math.pi * self.diameter_m ** 2 / 4
        return self.min_level_m + (np.asarray(volume_m3) - self.min_volume_m3) / area

    def area_m2(self, level_m: float) -> float:
        """Surface area at ``level_m`` (m2): dV/dh."""
        if self.volume_curve:
            d = 1e-3
            return float((self.volume_m3(level_m + d) - self.volume_m3(level_m - d)) / (2 * d))
        return math.pi * self.diameter_m ** 2 / 4


@dataclass(frozen=True)
class PumpInfo:
    """A pump.  ``head_curve`` holds (flow m3/s, head m) points; ``efficiency_curve``
    (flow m3/s, %) or None for the global efficiency; prices per kWh."""

    id: str
    start_node: str
    end_node: str
    kind: str  # "HEAD" or "POWER"
    head_curve: tuple[tuple[float, float], ...]
    power_kw: float | None
    efficiency_curve: tuple[tuple[float, float], ...] | None
    energy_price_per_kwh: float | None
    price_pattern: str | None
    speed_pattern: str | None
    initial_status: str
    initial_speed: float


@dataclass(frozen=True)
class ControlInfo:
    """A simple control or a rule, as text, with the links its actions act on."""

    name: str
    text: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Times:
    duration_s: int
    hydraulic_step_s: int
    pattern_step_s: int
    pattern_start_s: int
    report_step_s: int
    start_clocktime_s: int


@dataclass(frozen=True)
class Network:
    """A loaded network.  ``inp_text`` is what EPANET runs; the rest is its summary."""

    inp_text: str = field(repr=False)
    title: str
    flow_units: str
    junctions: tuple[str, ...]
    reservoirs: tuple[str, ...]
    tanks: tuple[TankInfo, ...]
    pumps: tuple[PumpInfo, ...]
    valves: tuple[str, ...]
    pipes: int
    patterns: dict[str, tuple[float, ...]] = field(repr=False)
    times: Times
    global_price_per_kwh: float
    global_price_pattern: str | None
    global_efficiency_pct: float
    demand_charge: float
    controls: tuple[ControlInfo, ...]

    def tank(self, tank_id: str) -> TankInfo:
        for t in self.tanks:
            if t.id == tank_id:
                return t
        raise NetworkInputError(f"no tank {tank_id!r}; tanks are {[t.id for t in self.tanks]}")

    def pump(self, pump_id: str) -> PumpInfo:
        for p in self.pumps:
            if p.id == pump_id:
                return p
        raise NetworkInputError(f"no pump {pump_id!r}; pumps are {[p.id for p in self.pumps]}")

    @property
    def pump_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.pumps)

    @property
    def tank_ids(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.tanks)

    def controls_on(self, link_ids) -> tuple[ControlInfo, ...]:
        ids = set(link_ids)
        return tuple(c for c in self.controls if ids.intersection(c.targets))

    def pattern_value(self, pattern_id: str, time_s: float) -> float:
        """Multiplier of ``pattern_id`` at simulation time ``time_s`` (EPANET: index
        (t + Pattern Start) // Pattern Timestep, wrapping)."""
        values = self.patterns[pattern_id]
        n = int((time_s + self.times.pattern_start_s) // self.times.pattern_step_s)
        return values[n % len(values)]

    def summary(self) -> dict:
        """Counts and settings an operator recognises, in SI units."""
        t = self.times
        return {
            "title": self.title,
            "flow_units": self.flow_units,
            "junctions": len(self.junctions),
            "reservoirs": len(self.reservoirs),
            "tanks": len(self.tanks),
            "pipes": self.pipes,
            "pumps": len(self.pumps),
            "valves": len(self.valves),
            "patterns": len(self.patterns),
            "controls": len(self.controls),
            "duration_s": t.duration_s,
            "hydraulic_step_s": t.hydraulic_step_s,
            "pattern_step_s": t.pattern_step_s,
            "pattern_start_s": t.pattern_start_s,
            "start_clocktime_s": t.start_clocktime_s,
            "steps": t.duration_s // max(t.hydraulic_step_s, 1),
        }


def load_network(inp: str | bytes) -> Network:
    """Parse an .inp given as text or bytes.  Raises ``NetworkInputError`` when wntr or
    EPANET cannot read it."""
    if isinstance(inp, bytes):
        inp = inp.decode("utf-8", errors="replace") if _is_utf8(inp) else inp.decode("latin-1")
    if "[" not in inp:
        raise NetworkInputError("expected EPANET .inp text with [SECTIONS], found none")
    wn = _parse_wntr(inp)
    return _from_wntr(inp, wn)


def natural_period_s(network: Network, horizon_s: int) -> int:
    """The scheduling period for a horizon: the pattern timestep when it is at least
    30 minutes (Poormond-48: 30 min; hourly networks: 1 h), else one hour; always a
    divisor of the horizon."""
    step = network.times.pattern_step_s
    period = step if step >= 1800 else 3600
    if horizon_s % period:
        period = math.gcd(int(horizon_s), int(period))
    return int(period)


# -- parsing ------------------------------------------------------------------------------
def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _price(per_joule: float) -> float:
    """wntr keeps prices per J; back to per kWh, rounded to the .inp's precision."""
    return float(f"{float(per_joule) * _J_PER_KWH:.12g}")


def _parse_wntr(text: str):
    import wntr

    fd, path = tempfile.mkstemp(suffix=".inp", prefix="tagus-")
    try:
        with os.fdopen(fd, "w", encoding="latin-1", errors="replace") as f:
            f.write(text)
        try:
            with warnings.catch_warnings():  # e.g. "not all curves were used": harmless
                warnings.simplefilter("ignore")
                return wntr.network.WaterNetworkModel(path)
        except Exception as e:  # wntr raises many kinds; all mean "cannot read this file"
            raise NetworkInputError(f"cannot read the .inp: {type(e).__name__}: {e}") from e
    finally:
        os.unlink(path)


def _from_wntr(text: str, wn) -> Network:
    tanks = []
    for name, t in wn.tanks():
        curve = None
        if t.vol_curve_name:
            curve = tuple((float(x), float(y)) for x, y in wn.get_curve(t.vol_curve_name).points)
        tanks.append(TankInfo(name, float(t.elevation), float(t.init_level), float(t.min_level),
                              float(t.max_level), float(t.diameter), float(t.min_vol), curve))
    pumps = []
    for name, p in wn.pumps():
        head, power = (), None
        if p.pump_type == "HEAD":
            head = tuple((float(q), float(h)) for q, h in p.get_pump_curve().points)
        else:
            power = float(p.power) / 1000.0
        eff = None
        if p.efficiency_curve is not None:
            eff = tuple((float(q), float(e)) for q, e in p.efficiency_curve.points)
        price = None if p.energy_price is None else _price(p.energy_price)
        pumps.append(PumpInfo(
            name, p.start_node_name, p.end_node_name, p.pump_type, head, power, eff, price,
            p.energy_pattern, p.speed_timeseries.pattern_name, str(p.initial_status),
            float(p.initial_setting or p.speed_timeseries.base_value or 1.0)))
    controls = []
    for cname in wn.control_name_list:
        c = wn.get_control(cname)
        acts = list(c._then_actions) + list(getattr(c, "_else_actions", []) or [])
        targets = tuple(sorted({a.target()[0].name for a in acts}))
        controls.append(ControlInfo(cname, str(c), targets))
    o = wn.options
    ts = o.time
    times = Times(int(ts.duration), int(ts.hydraulic_timestep), int(ts.pattern_timestep),
                  int(ts.pattern_start), int(ts.report_timestep), int(ts.start_clocktime))
    if times.hydraulic_step_s <= 0 or times.pattern_step_s <= 0:
        raise NetworkInputError("the .inp needs positive hydraulic and pattern timesteps")
    return Network(
        inp_text=text,
        title=" ".join(wn.title).strip() if isinstance(wn.title, list) else str(wn.title or ""),
        flow_units=str(o.hydraulic.inpfile_units),
        junctions=tuple(wn.junction_name_list),
        reservoirs=tuple(wn.reservoir_name_list),
        tanks=tuple(tanks),
        pumps=tuple(pumps),
        valves=tuple(wn.valve_name_list),
        pipes=len(wn.pipe_name_list),
        patterns={n: tuple(float(v) for v in wn.get_pattern(n).multipliers)
                  for n in wn.pattern_name_list},
        times=times,
        global_price_per_kwh=_price(o.energy.global_price or 0.0),
        global_price_pattern=o.energy.global_pattern,
        global_efficiency_pct=float(o.energy.global_efficiency or 75.0),
        demand_charge=float(o.energy.demand_charge or 0.0),
        controls=tuple(controls),
    )
