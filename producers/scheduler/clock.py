"""The scheduler's clock: what time it is, and how long (in real seconds) until a time.

Production runs on ``SystemClock``.  Tests and the benchmark run days in seconds:

- ``FastClock(start, speed)``: starts at ``start`` and runs ``speed`` times faster.
- ``WindowClock(t0, start, period_s, window_s)``: runs at real speed for ``window_s``
  seconds, then jumps ``period_s - window_s`` ahead, again and again (from real epoch
  ``t0``, the clock reads ``start``).  A slot ``lead`` seconds into each window is
  reached in real time, so a latency measured on this clock is a real latency; the
  benchmark runs an hour of hourly slots in a few seconds this way.
- ``ManualClock``: set by the test.

``clock_from_spec`` reads ``TAGUS_SCHEDULER_CLOCK`` (off by default: the system clock):
``fast,start=2025-03-30T00:00:00Z,speed=3600`` or
``window,t0=1767225600.0,start=2025-03-30T00:59:58Z,period=720,window=6``.
Leases and claim ages are always measured on the real wall clock, whatever the clock.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from contracts.errors import SetupError


class Clock(Protocol):
    speed: float  # clock seconds per real second (for windows: inside a window)

    def now(self) -> datetime: ...

    def seconds_until(self, t: datetime) -> float:
        """Real seconds until the clock shows ``t`` (0 when it already has)."""
        ...


class SystemClock:
    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def seconds_until(self, t: datetime) -> float:
        return max(0.0, (t - self.now()).total_seconds())


class CallableClock:
    """A bare ``now()`` callable as a clock (assumed to run at real speed; the scheduler
    also wakes every ``max_sleep_s``, so a clock that jumps is noticed)."""

    speed = 1.0

    def __init__(self, now) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now()

    def seconds_until(self, t: datetime) -> float:
        return max(0.0, (t - self._now()).total_seconds())


class ManualClock(CallableClock):
    """Shows what the test set (``set``/``advance``)."""

    def __init__(self, start: datetime) -> None:
        self.t = start
        super().__init__(lambda: self.t)

    def set(self, t: datetime) -> None:
        self.t = t

    def advance(self, **delta: float) -> datetime:
        self.t += timedelta(**delta)
        return self.t


class FastClock:
    def __init__(self, start: datetime, speed: float, *, t0: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start, self.speed = start, float(speed)
        self.t0 = time.time() if t0 is None else t0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.t0) * self.speed)

    def seconds_until(self, t: datetime) -> float:
        return max(0.0, self.t0 + (t - self.start).total_seconds() / self.speed - time.time())


class WindowClock:
    speed = 1.0

    def __init__(self, t0: float, start: datetime, period_s: float, window_s: float) -> None:
        if not 0 < window_s <= period_s:
            raise ValueError(f"need 0 < window ({window_s}) <= period ({period_s})")
        self.t0, self.start, self.period_s, self.window_s = t0, start, period_s, window_s

    def at_real(self, real: float) -> datetime:
        """What the clock shows at real epoch second ``real``."""
        e = real - self.t0
        if e < 0:
            return self.start + timedelta(seconds=e)
        k = math.floor(e / self.window_s)
        return self.start + timedelta(seconds=k * self.period_s + e - k * self.window_s)

    def real_at(self, t: datetime) -> float:
        """The real epoch second at which the clock first shows ``t`` or later."""
        d = (t - self.start).total_seconds()
        if d < 0:
            return self.t0 + d
        k = math.floor(d / self.period_s)
        r = d - k * self.period_s
        if r < self.window_s:
            return self.t0 + k * self.window_s + r
        return self.t0 + (k + 1) * self.window_s  # skipped over: the next window's start

    def now(self) -> datetime:
        return self.at_real(time.time())

    def seconds_until(self, t: datetime) -> float:
        return max(0.0, self.real_at(t) - time.time())


def _instant(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"expected an instant with a zone (…Z), got {text!r}")
    return t.astimezone(UTC)


def clock_from_spec(spec: str | None) -> Clock:
    """The clock a ``TAGUS_SCHEDULER_CLOCK`` value names (empty: the system clock)."""
    if not spec or not spec.strip():
        return SystemClock()
    kind, *pairs = [p.strip() for p in spec.split(",")]
    try:
        opts = dict(p.split("=", 1) for p in pairs)
        if kind == "fast":
            return FastClock(_instant(opts["start"]), float(opts.get("speed", 60)),
                             t0=float(opts["t0"]) if "t0" in opts else None)
        if kind == "window":
            return WindowClock(float(opts["t0"]), _instant(opts["start"]),
                               float(opts["period"]), float(opts["window"]))
    except (KeyError, ValueError) as e:
        raise SetupError(f"TAGUS_SCHEDULER_CLOCK={spec!r}: {e!r}") from None
    raise SetupError(f"TAGUS_SCHEDULER_CLOCK={spec!r}: expected 'fast,start=…,speed=…' "
                     f"or 'window,t0=…,start=…,period=…,window=…' (unset: the real clock)")
