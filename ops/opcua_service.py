"""``tagus serve opcua``: the OPC UA server of released schedules (``producers/opcua``).

Endpoint ``opc.tcp://TAGUS_OPCUA_HOST:TAGUS_OPCUA_PORT/tagus``; log in with user = tenant
id and password = one of the tenant's API tokens (``read`` to see its schedules,
``operate`` to acknowledge them); encrypted (Basic256Sha256, SignAndEncrypt) when
``TAGUS_OPCUA_CERTIFICATE`` and ``TAGUS_OPCUA_PRIVATE_KEY`` name the server's certificate
and key, unencrypted otherwise (development only: the token travels in clear).
"""

from __future__ import annotations

import asyncio

from ops import wiring
from ops.settings import Settings


def endpoint(settings: Settings) -> str:
    return f"opc.tcp://{settings.opcua_host}:{settings.opcua_port}/tagus"


async def run(settings: Settings, stop: asyncio.Event, *, clock=None,
              started: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (``started`` is set once clients can connect)."""
    from producers.opcua import ScheduleServer

    nc = await wiring.nats_connection(settings, "tagus-opcua")
    tokens = None
    try:
        tokens = await wiring.token_view(settings, nc)
        extra = {"clock": clock} if clock is not None else {}
        server = ScheduleServer(tokens, endpoint=endpoint(settings),
                                certificate=settings.opcua_certificate,
                                private_key=settings.opcua_private_key, **extra)
        await server.start()
        try:
            if started is not None:
                started.set()
            await server.follow(nc.jetstream(), stop)
        finally:
            await server.stop_server()
    finally:
        if hasattr(tokens, "close"):
            await tokens.close()
        await nc.drain()


def serve(settings: Settings) -> int:
    from ops.logs import configure_logging
    from ops.service import install_stop_signals

    configure_logging(settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await run(settings, stop)

    asyncio.run(main())
    return 0
