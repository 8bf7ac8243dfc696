"""The API's way to QuestDB: a bounded pool, per-tenant shares and wall-clock deadlines.

``session(tenant)`` is the only way a route gets a connection.  In order, within one
deadline of ``query_timeout_s`` (asyncio's clock, so a hung server cannot stretch it):

1. one of the tenant's query slots (``TenantLimits``), waited for up to
   ``acquire_timeout_s`` -> ``TenantBusy`` (429);
2. a pool slot, waited for up to ``acquire_timeout_s`` -> ``PoolExhausted`` (503): the
   pool is full, QuestDB may be fine;
3. a connection (the pool connects on demand; refused -> ``DatabaseUnavailable``, 503);
4. the route's queries.

When the deadline passes (-> ``QueryTimeout``, 504) the connection is terminated, not
returned: asyncpg's own ``command_timeout`` asks the server to cancel and then waits
for the answer, which a frozen server never sends (asyncpg issues #1326, #1356; seen
here as 45 s against a 30 s limit).  Terminating closes the socket at once; the pool
opens a fresh connection next time.

``probe()`` answers readiness on its own connection, outside the pool, so a full pool
and a dead QuestDB are told apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog

from projections.api.config import ApiConfig
from projections.api.errors import (CONNECTION_ERRORS, DatabaseUnavailable, PoolExhausted,
                                    QueryTimeout)
from projections.api.limits import TenantLimits

log = structlog.get_logger("tagus.api")

RELEASE_TIMEOUT_S = 2.0  # returning a connection (rollback of a left-open transaction)


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """On release to the pool: end a transaction left open, if any.

    Replaces asyncpg's default reset, which sends PostgreSQL session-cleanup SQL
    (advisory locks, LISTEN, RESET ALL) that QuestDB has no use for: one round trip
    less per query.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class Database:
    def __init__(self, config: ApiConfig, limits: TenantLimits) -> None:
        self.config, self.limits = config, limits
        self.pool: asyncpg.Pool | None = None
        self._slots = asyncio.Semaphore(config.pool_size)
        self._in_use = 0
        self._waiting = 0
        self._probe_conn: asyncpg.Connection | None = None
        self._probe_task: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle

    def _connect_args(self) -> dict:
        c = self.config
        return dict(host=c.pg_host, port=c.pg_port, user=c.pg_user, password=c.pg_password,
                    database=c.pg_database)

    async def open(self) -> None:
        """Create the pool; it connects on demand, so the API starts without QuestDB."""
        self.pool = await asyncpg.create_pool(
            **self._connect_args(), min_size=0, max_size=self.config.pool_size,
            command_timeout=None, reset=_reset_connection)

    async def close(self) -> None:
        if self._probe_conn is not None:
            self._probe_conn.terminate()
            self._probe_conn = None
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), RELEASE_TIMEOUT_S)
            except TimeoutError:
                self.pool.terminate()

    # ------------------------------------------------------------ sessions

    @asynccontextmanager
    async def session(self, tenant: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for ``tenant``'s queries, bounded as the module says."""
        c = self.config
        deadline = asyncio.timeout(c.query_timeout_s)
        try:
            async with deadline, self.limits.query(tenant), self._pool_slot():
                try:
                    conn = await self.pool.acquire()
                except CONNECTION_ERRORS as e:
                    raise DatabaseUnavailable(f"QuestDB refused the connection "
                                              f"({type(e).__name__}: {e}); retry later") from e
                try:
                    yield conn
                except (asyncio.CancelledError, TimeoutError, *CONNECTION_ERRORS):
                    conn.terminate()  # maybe mid-query: never hand it to another request
                    raise
                finally:
                    await self._release(conn)
        except TimeoutError as e:
            if deadline.expired():
                raise QueryTimeout(f"QuestDB did not answer within {c.query_timeout_s:g} s "
                                   "(the query timeout); retry later or ask for a shorter "
                                   "range") from e
            raise
        except CONNECTION_ERRORS as e:
            raise DatabaseUnavailable(f"lost the connection to QuestDB ({type(e).__name__}: "
                                      f"{e}); retry later") from e

    @asynccontextmanager
    async def _pool_slot(self) -> AsyncIterator[None]:
        self._waiting += 1
        try:
            async with asyncio.timeout(self.config.acquire_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolExhausted(f"all {self.config.pool_size} QuestDB connections stayed busy "
                                f"for {self.config.acquire_timeout_s:g} s; retry "
                                "later") from None
        finally:
            self._waiting -= 1
        self._in_use += 1
        try:
            yield
        finally:
            self._in_use -= 1
            self._slots.release()

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self.pool.release(conn, timeout=RELEASE_TIMEOUT_S)
        except (Exception, asyncio.CancelledError) as e:  # asyncpg has terminated it
            log.warning("connection dropped on release", error=repr(e))

    def pool_counts(self) -> dict:
        return {"size": self.config.pool_size, "in_use": self._in_use,
                "waiting": self._waiting}

    # ------------------------------------------------------------ readiness

    async def probe(self) -> dict:
        """``{"reachable", "ms", "error"}`` of ``SELECT 1`` on the probe connection.

        Concurrent callers share one probe in flight (a hung QuestDB costs each caller at
        most ``readiness_timeout_s``, not that times the number of callers).
        """
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.create_task(self._probe())
        return await asyncio.shield(self._probe_task)

    async def _probe(self) -> dict:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.readiness_timeout_s):
                if self._probe_conn is None or self._probe_conn.is_closed():
                    self._probe_conn = await asyncpg.connect(**self._connect_args())
                await self._probe_conn.fetchval("SELECT 1")
        except (TimeoutError, *CONNECTION_ERRORS, asyncpg.PostgresError) as e:
            if self._probe_conn is not None:
                self._probe_conn.terminate()
                self._probe_conn = None
            error = (f"no answer within {self.config.readiness_timeout_s:g} s"
                     if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}")
            return {"reachable": False, "ms": None, "error": error}
        return {"reachable": True, "ms": round((time.perf_counter() - t0) * 1e3, 2),
                "error": None}
