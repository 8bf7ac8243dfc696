"""What every ``kpi.compute`` figure shares: the tenant's local day, its bindings and
readings (held), its tank bounds, and how to say a time of the day in words."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from processors.kpi.series import NS, Held


@dataclass
class KpiDay:
    """The local ``day`` [start, end) in UTC (``lo``/``hi`` in ns), the tenant's asset
    bindings, and each bound sensor's readings around the day as a step function."""

    day: date
    tz: str
    start: datetime
    end: datetime
    bindings: list
    held: dict[str, Held] = field(default_factory=dict)
    week_before: dict[str, Held] = field(default_factory=dict)

    @property
    def lo(self) -> int:
        return int(self.start.timestamp()) * NS

    @property
    def hi(self) -> int:
        return int(self.end.timestamp()) * NS

    @property
    def seconds(self) -> int:
        return (self.hi - self.lo) // NS

    @property
    def hours(self) -> int:
        return self.seconds // 3600

    def edges(self, step_s: int) -> np.ndarray:
        return np.arange(self.lo, self.hi + 1, step_s * NS, dtype=np.int64)

    def clock(self, offset_s: float) -> str:
        """``HH:MM`` local time ``offset_s`` into the day."""
        t = (self.start + timedelta(seconds=float(offset_s))).astimezone(ZoneInfo(self.tz))
        return f"{t:%H:%M}"

    def has_readings(self, sensor: str) -> bool:
        h = self.held.get(sensor)
        return h is not None and h.covered_s(self.lo, self.hi) > 0

    def bound(self, *roles: str) -> list:
        return [b for b in self.bindings if b.role in roles]


def tank_bounds(tank: str, rules, network) -> tuple[float, float, str] | None:
    """(lower m, upper m, where they come from): the operating rules' levels, else the
    network model's min/max; None when neither names the tank."""
    rule = rules.tanks.get(tank) if rules is not None else None
    model = None
    if network is not None and tank in network.tank_ids:
        t = network.tank(tank)
        model = (t.min_level_m, t.max_level_m)
    lo = rule.min_level_m if rule is not None and rule.min_level_m is not None else None
    hi = rule.max_level_m if rule is not None and rule.max_level_m is not None else None
    if model is None and (lo is None or hi is None):
        if lo is None and hi is None:
            return None
        return (lo if lo is not None else -np.inf, hi if hi is not None else np.inf,
                "the operating rules")
    if lo is None and hi is None:
        return model[0], model[1], "the network model's min/max"
    source = "the operating rules" if lo is not None and hi is not None else \
        "the operating rules and the network model"
    return (lo if lo is not None else model[0], hi if hi is not None else model[1], source)
