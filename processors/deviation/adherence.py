"""Schedule adherence: the share of judged pump-periods that ran as released.

The KPI task's figure (``schedule_adherence``, unit ``1``, subject = pump or
``network``): feed it the checks of a day (``compare.check_periods`` over the day's
readings of pump-bound sensors and the schedules released by then).  A pump-period
counts once even when several batches judged it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from processors.deviation.compare import PeriodCheck


@dataclass(frozen=True)
class PumpAdherence:
    subject: str  # a pump, or "network" for all pumps together
    periods: int  # pump-periods judged
    deviated: int  # of which deviated

    @property
    def ratio(self) -> float:
        """Share of judged periods that ran as released (NaN when none was judged)."""
        return (self.periods - self.deviated) / self.periods if self.periods else float("nan")


def adherence(checks: Iterable[PeriodCheck]) -> list[PumpAdherence]:
    """One figure per pump (sorted) and one for the whole ``network`` (last)."""
    verdicts: dict[tuple, bool] = {}
    for c in checks:
        key = (c.pump, c.schedule.schedule_id, c.period_start)
        verdicts[key] = verdicts.get(key, False) or c.deviated
    pumps = sorted({k[0] for k in verdicts})
    out = [PumpAdherence(p, sum(k[0] == p for k in verdicts),
                         sum(v for k, v in verdicts.items() if k[0] == p)) for p in pumps]
    out.append(PumpAdherence("network", len(verdicts), sum(verdicts.values())))
    return out
