from __future__ import annotations

import pytest

from bus.topology import ensure_topology
from ops import wiring
from tests.helpers import reset_jetstream


@pytest.fixture
def fast_settings(settings):
    """Short ack wait and few deliveries, so redelivery paths run in seconds."""
    return settings.model_copy(update={"consumer_ack_wait_s": 1.0, "consumer_max_deliver": 3})


@pytest.fixture
async def nc(fast_settings):
    conn = await wiring.nats_connection(fast_settings, name="tagus-tests")
    await reset_jetstream(conn)
    await ensure_topology(conn.jetstream(), wiring.topology(fast_settings))
    yield conn
    await conn.drain()
