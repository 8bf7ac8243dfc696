"""Per-tenant shares of the API, so that one tenant cannot starve the others.

Two counts per tenant: database connections held (``query``: a request waits for a
slot up to the acquire timeout, then 429) and CSV exports streaming (``export``: past
the limit the next one is refused at once with 429; an export lasts as long as its
client takes to read it, so queueing for one makes no sense).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from projections.api.errors import TenantBusy


class TenantLimits:
    def __init__(self, *, max_queries: int, max_exports: int, wait_s: float) -> None:
        self.max_queries, self.max_exports, self.wait_s = max_queries, max_exports, wait_s
        self._queries: dict[str, asyncio.Semaphore] = {}
        self._exports: dict[str, int] = {}
        self._running = 0

    @asynccontextmanager
    async def query(self, tenant: str) -> AsyncIterator[None]:
        """Hold one of the tenant's query slots; TenantBusy after ``wait_s`` without one."""
        sem = self._queries.setdefault(tenant, asyncio.Semaphore(self.max_queries))
        try:
            async with asyncio.timeout(self.wait_s):
                await sem.acquire()
        except TimeoutError:
            raise TenantBusy(f"tenant {tenant!r} already runs {self.max_queries} queries at "
                             f"once (the limit) and none finished within {self.wait_s:g} s; "
                             "send fewer requests in parallel") from None
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            sem.release()

    def start_export(self, tenant: str) -> Callable[[], None]:
        """Count one more export of ``tenant``; returns its release (call it exactly once)."""
        n = self._exports.get(tenant, 0)
        if n >= self.max_exports:
            raise TenantBusy(f"tenant {tenant!r} already has {n} CSV exports in progress "
                             f"(the limit is {self.max_exports}); wait for one to finish")
        self._exports[tenant] = n + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._exports[tenant] - 1
                if left:
                    self._exports[tenant] = left
                else:
                    del self._exports[tenant]

        return release

    def counts(self) -> dict:
        """Totals over tenants (no tenant names: ``/readyz`` needs no token)."""
        return {"queries": self._running, "exports": sum(self._exports.values())}
