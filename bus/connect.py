"""Connecting to NATS with settings that survive server restarts."""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import structlog
from nats.aio.client import Client

from contracts.errors import TransientError

log = structlog.get_logger("tagus.bus")


async def connect(
    servers: list[str], *, name: str, user: str | None = None,
    password: str | None = None, creds: str | None = None,
    first_connect_timeout_s: float | None = None,
) -> Client:
    """Connect and keep reconnecting forever; a NATS restart is survived, not fatal.

    ``first_connect_timeout_s``: give up on the *first* connection after this long
    (commands an operator waits on), raising ``TransientError`` with the servers tried.
    Once connected, the client reconnects forever either way.
    """
    nc = Client()

    async def _disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats disconnected", client=name)

    async def _reconnected() -> None:
        log.info("nats reconnected", client=name)

    async def _error(e: Exception) -> None:
        if nc.is_connected or nc.is_reconnecting or first_connect_timeout_s is None:
            log.warning("nats error", client=name, error=str(e))
        # a command's first connection: the one-line TransientError below says it all

    kwargs = {}
    if user:
        kwargs.update(user=user, password=password)
    if creds:
        kwargs["user_credentials"] = creds
    opening = nc.connect(
        servers=servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        allow_reconnect=True, connect_timeout=min(5, first_connect_timeout_s or 5),
        disconnected_cb=_disconnected, reconnected_cb=_reconnected, error_cb=_error,
        **kwargs,
    )
    if first_connect_timeout_s is None:
        await opening
        return nc
    try:
        await asyncio.wait_for(opening, first_connect_timeout_s)
    except (TimeoutError, OSError, nats.errors.Error) as e:
        with contextlib.suppress(Exception):
            await nc.close()
        raise TransientError(
            f"NATS unreachable at {', '.join(servers)} after {first_connect_timeout_s:g} s "
            f"({type(e).__name__}); is it running? (`tagus stack up`, or TAGUS_NATS_URL)"
        ) from None
    return nc
