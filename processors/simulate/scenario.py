"""What to simulate on a network: schedule, demand, initial levels, pumps out of service.

A schedule gives, per scheduled pump and period, the relative speed (0 = off, 1 = the
curve's own speed).  Every control and rule acting on a scheduled pump is removed and its
speed pattern cleared, so the schedule alone drives it; pumps not in the schedule keep
the network's own controls.  Demand multipliers scale the junctions of a zone per period
on top of their patterns ("*" = every junction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from processors.simulate.errors import NetworkInputError
from processors.simulate.network import Network, natural_period_s

ALL_JUNCTIONS = "*"


@dataclass(frozen=True)
class Scenario:
    """A simulation request.  Times in s, levels in m, speeds relative (0..1.x).

    ``horizon_s`` defaults to the .inp duration, ``period_s`` to the natural period.
    ``schedule`` maps pump id to one speed per period; ``None`` runs the network's own
    controls for every pump.
    """

    horizon_s: int | None = None
    period_s: int | None = None
    schedule: Mapping[str, Sequence[float]] | None = None
    initial_levels_m: Mapping[str, float] = field(default_factory=dict)
    demand_multipliers: Mapping[str, Sequence[float]] = field(default_factory=dict)
    zones: Mapping[str, Sequence[str]] = field(default_factory=dict)
    out_of_service: frozenset[str] = frozenset()

    def resolved(self, network: Network) -> "ResolvedScenario":
        """Check the scenario against the network and fill in the defaults."""
        horizon = int(self.horizon_s or network.times.duration_s)
        if horizon <= 0:
            raise NetworkInputError(f"horizon must be positive, found {horizon} s")
        period = int(self.period_s or natural_period_s(network, horizon))
        if period <= 0 or horizon % period:
            raise NetworkInputError(f"period {period} s must divide the horizon {horizon} s")
        n = horizon // period
        pump_ids = network.pump_ids
        for pid in self.out_of_service:
            network.pump(pid)
        scheduled: tuple[str, ...] = ()
        speeds = np.zeros((n, 0))
        if self.schedule is not None:
            scheduled = tuple(p for p in pump_ids if p in self.schedule and
                              p not in self.out_of_service)
            unknown = set(self.schedule) - set(pump_ids)
            if unknown:
                raise NetworkInputError(f"schedule names unknown pumps {sorted(unknown)}; "
                                        f"pumps are {list(pump_ids)}")
            speeds = np.zeros((n, len(scheduled)))
            for j, pid in enumerate(scheduled):
                row = np.asarray(self.schedule[pid], dtype=float)
                if row.shape != (n,):
                    raise NetworkInputError(f"schedule of pump {pid} has {row.size} values, "
                                            f"expected {n} (one per {period} s period)")
                if np.any(row < 0) or not np.all(np.isfinite(row)):
                    raise NetworkInputError(f"schedule of pump {pid} has negative or "
                                            f"non-finite speeds")
                speeds[:, j] = row
        levels = {t.id: t.init_level_m for t in network.tanks}
        for tid, lv in self.initial_levels_m.items():
            tank = network.tank(tid)
            if not tank.min_level_m - 1e-9 <= lv <= tank.max_level_m + 1e-9:
                raise NetworkInputError(f"initial level {lv} m of tank {tid} is outside "
                                        f"[{tank.min_level_m}, {tank.max_level_m}] m")
            levels[tid] = float(min(max(lv, tank.min_level_m), tank.max_level_m))
        zones = dict(self.zones)
        mult = {}
        for zone, values in self.demand_multipliers.items():
            if zone != ALL_JUNCTIONS and zone not in zones:
                raise NetworkInputError(f"demand multipliers for unknown zone {zone!r}")
            arr = np.asarray(values, dtype=float)
            if arr.shape != (n,):
                raise NetworkInputError(f"zone {zone!r} has {arr.size} multipliers, expected {n}")
            mult[zone] = arr
        junctions = set(network.junctions)
        for zone, members in zones.items():
            missing = set(members) - junctions
            if missing:
                raise NetworkInputError(f"zone {zone!r} names unknown junctions "
                                        f"{sorted(missing)[:5]}")
        return ResolvedScenario(horizon, period, n, scheduled, speeds,
                                MappingProxyType(levels), MappingProxyType(mult),
                                MappingProxyType({k: tuple(v) for k, v in zones.items()}),
                                frozenset(self.out_of_service), self.schedule is not None)


@dataclass(frozen=True)
class ResolvedScenario:
    """A scenario checked against its network (see ``Scenario.resolved``)."""

    horizon_s: int
    period_s: int
    periods: int
    scheduled: tuple[str, ...]
    speeds: np.ndarray  # (periods, len(scheduled)) relative speeds, 0 = off
    initial_levels_m: Mapping[str, float]
    demand_multipliers: Mapping[str, np.ndarray]
    zones: Mapping[str, tuple[str, ...]]
    out_of_service: frozenset[str]
    has_schedule: bool
