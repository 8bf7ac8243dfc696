"""Connecting to NATS with settings that survive server restarts."""

from __future__ import annotations

import structlog
from nats.aio.client import Client

log = structlog.get_logger("tagus.bus")


async def connect(
    servers: list[str], *, name: str, user: str | None = None,
    password: str | None = None, creds: str | None = None,
) -> Client:
    """Connect and keep reconnecting forever; a NATS restart is survived, not fatal."""
    nc = Client()

    async def _disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats disconnected", client=name)

    async def _reconnected() -> None:
        log.info("nats reconnected", client=name)

    async def _error(e: Exception) -> None:
        log.warning("nats error", client=name, error=str(e))

    kwargs = {}
    if user:
        kwargs.update(user=user, password=password)
    if creds:
        kwargs["user_credentials"] = creds
    await nc.connect(
        servers=servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        allow_reconnect=True, connect_timeout=5,
        disconnected_cb=_disconnected, reconnected_cb=_reconnected, error_cb=_error,
        **kwargs,
    )
    return nc
