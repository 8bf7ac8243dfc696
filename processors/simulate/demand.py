"""What the network model itself expects a zone to draw, period by period.

A zone's measured or forecast inflow drives the twin through demand multipliers:
multiplier(t) = zone flow(t) / model demand(t), the model demand being the sum over the
zone's junctions of base demand x pattern multiplier at t (EPANET's rule: index
(t + Pattern Start) // Pattern Timestep, wrapping; a junction without a pattern uses the
.inp's default pattern, else 1).  Flows in m3/s.  Pure apart from a temporary .inp copy
for wntr.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from processors.simulate.network import Network
from processors.simulate.scenario import ALL_JUNCTIONS


@lru_cache(maxsize=8)
def _demands(inp_text: str) -> tuple[dict[str, list[tuple[float, str | None]]], str | None]:
    """junction -> [(base demand m3/s, pattern name or None)], the default pattern."""
    import wntr

    fd, path = tempfile.mkstemp(suffix=".inp", prefix="tagus-demand-")
    try:
        with os.fdopen(fd, "w", encoding="latin-1", errors="replace") as f:
            f.write(inp_text)
        wn = wntr.network.WaterNetworkModel(path)
    finally:
        os.unlink(path)
    out = {}
    for name, j in wn.junctions():
        out[name] = [(float(d.base_value), d.pattern_name) for d in j.demand_timeseries_list]
    return out, wn.options.hydraulic.pattern


def zone_demand_m3s(network: Network, junctions: Sequence[str] | str, *, start_s: int,
                    period_s: int, periods: int) -> np.ndarray:
    """Model demand of ``junctions`` (or ``"*"``: every junction) per period (m3/s), the
    pattern taken at each period's start (periods are whole pattern steps or divisors)."""
    demands, default = _demands(network.inp_text)
    names = network.junctions if junctions == ALL_JUNCTIONS else junctions
    out = np.zeros(periods)
    for k in range(periods):
        t = start_s + k * period_s
        total = 0.0
        for name in names:
            for base, pattern in demands.get(name, ()):
                pat = pattern or default
                total += base * (network.pattern_value(pat, t) if pat in network.patterns
                                 else 1.0)
        out[k] = total
    return out


def multipliers(flow_m3s: Sequence[float], model_m3s: Sequence[float]) -> list[float]:
    """Zone flow / model demand per period; 1 where the model draws nothing."""
    flow, model = np.asarray(flow_m3s, float), np.asarray(model_m3s, float)
    safe = np.where(model > 1e-9, model, 1.0)
    return [float(x) for x in np.where(model > 1e-9, flow / safe, 1.0)]
