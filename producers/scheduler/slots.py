"""When a schedule fires: the slots of a cron expression in a time zone, as UTC instants.

Pure (no I/O, no clock): every function takes the instants it needs.  The cron fields are
read by ``croniter`` on local wall-clock times; turning a wall-clock time into an instant
is done here, with the DST rule of ``contracts.config.ScheduleEntry``:

- a **fixed-time** job (neither its minute nor its hour field starts with ``*`` and the
  hours it names are not all 24, e.g. ``30 2 * * *``) whose wall-clock time does not
  exist on the spring-forward day runs once, at the instant the clocks jump (02:30 in
  Europe/Rome on 30 March 2025 -> 01:00 UTC, which the clocks show as 03:00); a time that
  occurs twice on the autumn day runs once, at its first occurrence;
- a **clock-following** job (``0 * * * *``, ``*/15 * * * *``, ``0 */2 * * *``) fires at
  every wall-clock time that exists: 23 hourly slots on the spring day (02:00 does not
  exist), 25 on the autumn day (02:00 happens twice).

Two wall-clock times that land on the same instant (a fixed-time job at 02:30 and 03:00
on the spring day) are one slot.  Slots are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import croniter

CatchUp = Literal["latest", "all", "none"]
# wall-clock distance the candidates are searched beyond the window: the largest DST
# shift in use is 2 h; a permanent change of offset inside the window is added to it
_MARGIN = timedelta(hours=3)
_MAX_HORIZON = timedelta(days=5 * 366)  # '0 0 29 2 1' fires rarely, but does fire


@functools.lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@functools.lru_cache(maxsize=4096)
def is_fixed_time(cron: str) -> bool:
    """True for a job at fixed wall-clock times (``30 2 * * *``), False for one that
    follows the clock (a ``*`` minute or hour field, or every hour named)."""
    minute, hour = cron.split()[:2]
    if minute.startswith("*") or hour.startswith("*"):
        return False
    expanded = croniter(cron).expanded
    return expanded[1] != ["*"] and len(expanded[1]) < 24 and expanded[0] != ["*"]


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"expected a timezone-aware instant, got naive {t.isoformat()}")
    return t.astimezone(UTC)


def _local_naive(t: datetime, zone: ZoneInfo) -> datetime:
    return t.astimezone(zone).replace(tzinfo=None)


def _jump(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant between ``before`` and ``after`` (UTC) where the zone's offset changes,
    to the second."""
    offset = before.astimezone(zone).utcoffset()
    lo, hi = before, after
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def instants(wall: datetime, zone: ZoneInfo, *, fixed: bool) -> list[datetime]:
    """The UTC instant(s) at which a job set for wall-clock time ``wall`` (naive) runs."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if _local_naive(first, zone) == wall:  # occurs twice (clocks went back)
        return [first] if fixed else [first, second]
    # does not exist (clocks jumped over it): fold=1 reads it with the offset after the
    # jump, fold=0 with the one before; the jump lies between the two readings
    return [_jump(second, first, zone)] if fixed else []


def slots_between(cron: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """Every slot of ``cron`` in time zone ``zone`` in ``(after, until]``, sorted UTC."""
    after, until = _utc(after), _utc(until)
    if until <= after:
        return []
    tz = _zone(zone)
    fixed = is_fixed_time(cron)
    margin = _MARGIN + abs(after.astimezone(tz).utcoffset() - until.astimezone(tz).utcoffset())
    lo, hi = _local_naive(after, tz) - margin, _local_naive(until, tz) + margin
    it = croniter(cron, lo - timedelta(microseconds=1))
    found: set[datetime] = set()
    while True:
        wall = it.get_next(datetime)
        if wall > hi:
            break
        found.update(t for t in instants(wall, tz, fixed=fixed) if after < t <= until)
    return sorted(found)


@functools.lru_cache(maxsize=65536)
def next_slot(cron: str, zone: str, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (cached: schedules sharing a cron and a
    zone share the answer)."""
    span = timedelta(hours=2)
    while span <= _MAX_HORIZON:
        found = slots_between(cron, zone, after, after + span)
        if found:
            return found[0]
        span *= 4
    raise ValueError(f"cron {cron!r} names no instant within five years of {after.isoformat()}")


def due_slots(cron: str, zone: str, policy: CatchUp, through: datetime | None,
              now: datetime, *, late_after_s: float = 60.0,
              horizon: timedelta | None = None) -> list[datetime]:
    """The slots to request now, for a schedule handled through ``through`` (every slot
    at or before it was requested or deliberately skipped); None: a brand-new schedule,
    which does not catch up on the past (nothing).  See ``choose``."""
    if through is None:
        return []
    return choose(policy, slots_between(cron, zone, through, now), now,
                  late_after_s=late_after_s, horizon=horizon)


def choose(policy: CatchUp, due: list[datetime], now: datetime, *,
           late_after_s: float = 60.0, horizon: timedelta | None = None) -> list[datetime]:
    """Which of the ``due`` slots (sorted, all at or before ``now``) to request: ``all``
    every one (those older than ``horizon`` excepted, when given); ``latest`` the most
    recent only; ``none`` only those that are not late (at most ``late_after_s`` old: the
    slot of the moment, not one missed during downtime)."""
    if not due:
        return []
    if policy == "all":
        return [s for s in due if horizon is None or now - s <= horizon]
    if policy == "latest":
        return due[-1:]
    if policy == "none":
        return [s for s in due if (now - s).total_seconds() <= late_after_s]
    raise ValueError(f"catch_up must be latest, all or none, got {policy!r}")


def slot_stamp(slot: datetime) -> str:
    """A slot as a key token: ``20250330T010000Z``."""
    return _utc(slot).strftime("%Y%m%dT%H%M%SZ")
