"""Released schedules for the delivery and deviation tests (the optimiser is not needed)."""

from __future__ import annotations

from datetime import datetime, timedelta

from contracts.base import derive_id
from contracts.schedules import PumpPlan, ScheduleReleased


def released(tenant: str, version: int, start: datetime, speeds: dict[str, list[float]], *,
             period_s: int = 3600, released_at: datetime | None = None) -> ScheduleReleased:
    """Schedule ``version`` of ``tenant``: ``speeds[pump][k]`` from ``start + k*period_s``,
    released at ``released_at`` (default: an hour before ``start``)."""
    at = released_at or start - timedelta(hours=1)
    schedule_id = derive_id("test-schedule", tenant, version)
    return ScheduleReleased(
        event_id=derive_id("test-released", tenant, version), tenant=tenant,
        occurred_at=at, recorded_at=at, schedule_id=schedule_id, version=version,
        start=start, period_s=period_s,
        pumps=[PumpPlan(pump=p, speeds=[float(v) for v in s], reasons=["test"] * len(s)) for p, s in speeds.items()],
        released_by="automatic", proposed_event_id=derive_id("test-proposed", tenant, version))
