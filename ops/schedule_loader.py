"""Resource ``schedules``: a tenant's released schedules, for handlers that judge what ran.

Registered in ``ops/loaders.py``; used by ``processors/deviation``.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus.subjects import event_subjects, stream_name
from contracts.base import Event
from contracts.registry import decode
from contracts.schedules import ScheduleReleased

KEEP = 1000  # releases kept per tenant and process: months of hourly re-planning


class ReleasedSchedules:
    """The tenant's ``schedule.released`` events recorded at or before the input event
    (a replayed batch is judged against the schedules known then, not later ones), oldest
    first.  Read from the SCHEDULE stream by subject, each message once per process."""

    def __init__(self) -> None:
        self._known: dict[str, list[tuple[int, ScheduleReleased]]] = {}

    async def __call__(self, js: JetStreamContext, event: Event) -> list[ScheduleReleased]:
        subject = event_subjects(ScheduleReleased, event.tenant)
        known = self._known.setdefault(event.tenant, [])
        seq = known[-1][0] + 1 if known else 1
        while True:
            try:
                raw = await js.get_msg(stream_name("schedule"), seq=seq, subject=subject,
                                       next=True)
            except NotFoundError:
                break
            released = decode("schedule", raw.data)
            if isinstance(released, ScheduleReleased) and released.tenant == event.tenant:
                known.append((raw.seq, released))
            seq = raw.seq + 1
        del known[:-KEEP]
        return [s for _, s in known if s.recorded_at <= event.recorded_at]
