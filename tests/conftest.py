"""Test session wiring.

Server tests talk to real servers.  The session starts its own stack (NATS + QuestDB)
on free ports in a temporary directory and stops it at the end, so a developer's stack
on the default ports is never touched (the tests delete streams).  To run against an
already running stack instead, set ``TAGUS_TEST_EXTERNAL_STACK=1`` and its ``TAGUS_*``.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ops.dev.stack import free_port

REPO = Path(__file__).resolve().parents[1]
SPANS = InMemorySpanExporter()


def stack_env(data_dir: Path) -> dict[str, str]:
    """TAGUS_* variables for a stack on fresh free ports under ``data_dir``."""
    return {
        "TAGUS_DATA_DIR": str(data_dir),
        "TAGUS_NATS_PORT": str(free_port()),
        "TAGUS_NATS_MONITOR_PORT": str(free_port()),
        "TAGUS_NATS_MQTT_PORT": str(free_port()),  # MQTT delivery tests; costs no startup time
        "TAGUS_QUESTDB_HTTP_PORT": str(free_port()),
        "TAGUS_QUESTDB_PG_PORT": str(free_port()),
        "TAGUS_QUESTDB_ILP_PORT": str(free_port()),
        "TAGUS_QUESTDB_MIN_HTTP_PORT": str(free_port()),
    }


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cluster: runs on a 3-node NATS cluster "
                            "(tests/cluster_support.py)")
    config.addinivalue_line("markers", "slow: a long variant, run with TAGUS_TEST_SLOW=1")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    """Settings of a running stack (started here if the environment names none)."""
    from ops.dev import stack
    from ops.settings import load_settings

    if os.environ.get("TAGUS_TEST_EXTERNAL_STACK") == "1":
        s = load_settings()
        if not (_reachable(f"http://{s.nats_host}:{s.nats_monitor_port}/healthz")
                and _reachable(f"{s.questdb_http_url}/exec?query=select%201")):
            pytest.fail("TAGUS_TEST_EXTERNAL_STACK=1 but the configured stack is not reachable")
        yield s
        return
    os.environ.update(stack_env(tmp_path_factory.mktemp("stack") / "var"))
    s = load_settings()
    try:
        for line in stack.up(s):
            print(line)
        yield s
    finally:
        stack.down(s)


@pytest.fixture
def spans():
    SPANS.clear()
    return SPANS


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("TAGUS_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"shared test data not found at {path} (set TAGUS_SHARED_DATA)")
    return path


@pytest.fixture
def fast_settings(settings):
    """Short ack wait and few deliveries, so redelivery paths run in seconds."""
    return settings.model_copy(update={"consumer_ack_wait_s": 1.0, "consumer_max_deliver": 3})


@pytest.fixture
async def nc(fast_settings):
    """A NATS connection to a JetStream emptied for this test, topology ensured."""
    from bus.topology import ensure_topology
    from ops import wiring
    from tests.helpers import assert_accepted_were_stored, reset_jetstream

    conn = await wiring.nats_connection(fast_settings, name="tagus-tests")
    await reset_jetstream(conn)
    await ensure_topology(conn.jetstream(), wiring.topology(fast_settings))
    yield conn
    try:
        if conn.is_connected:  # the readings invariant, after every test on the bus
            await assert_accepted_were_stored(conn, fast_settings)
    finally:
        await conn.drain()
