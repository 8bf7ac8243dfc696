"""A tenant's events of one family, read from the family's stream by subject and kept.

For state that must be current to the last event (not a projection that lags): the
alerts a processor raised a moment ago, the schedule an operator approves.  The events
are few (alerts, schedules), so each process keeps them; every call reads only what was
appended since the previous one (one round trip when nothing was).
"""

from __future__ import annotations

import asyncio

from nats.js.errors import NotFoundError

from bus.subjects import stream_name, tenant_subjects
from contracts.base import Event
from contracts.registry import decode


class TenantTail:
    def __init__(self, family: str) -> None:
        self.family, self.stream = family, stream_name(family)
        self._events: dict[str, list[Event]] = {}
        self._next: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def events(self, js, tenant: str) -> list[Event]:
        """Every event of the tenant in this family, in stream order."""
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            known = self._events.setdefault(tenant, [])
            seq = self._next.get(tenant, 1)
            subject = tenant_subjects(self.family, tenant)
            while True:
                try:
                    raw = await js.get_msg(self.stream, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                known.append(decode(self.family, raw.data))
                seq = raw.seq + 1
            self._next[tenant] = seq
            return list(known)
