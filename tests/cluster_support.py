"""A three-node NATS JetStream cluster for the cluster tests (``@pytest.mark.cluster``).

The ``cluster_nodes`` fixture starts it once per module with ``ops.dev.stack`` (as ``tagus
stack up --cluster 3`` does) on free loopback ports in a temporary directory, with
streams and buckets at replication 3; the rest of the suite keeps the session's single
server.  QuestDB is the session's.  Clients (this process and the Tagus processes the
tests start) are configured as for an external cluster: every node's URL and the
service user (``TAGUS_NATS_URL``, ``TAGUS_NATS_USER``/``_PASSWORD``), so a process that
connects while a node is down finds the others.

``TAGUS_TEST_SLOW=1`` runs the tests' long variants (``@pytest.mark.slow``: QuestDB down
for 60 s, a processor stopped for 10 minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from ops.dev import stack
from ops.settings import Settings, load_settings
from tests.conftest import REPO

SIZE = 3
# Redelivery fast enough for a test, long enough to ride out a 60 s QuestDB outage:
# deliveries at 0, 3, 9, 21, 45, 93, 189... s (backoff 3 s doubling), 8 at most.
ACK_WAIT_S, MAX_DELIVER = 3.0, 8
PIPELINE = ("normalise", "questdb-readings")  # one process each
RUN_SLOW = os.environ.get("TAGUS_TEST_SLOW") == "1"
slow = pytest.mark.skipif(not RUN_SLOW, reason="long variant: TAGUS_TEST_SLOW=1 runs it")


@dataclass
class Cluster:
    """The running cluster: ``stack_settings`` drive ``ops.dev.stack`` (embedded, node 1
    on the settings' ports); ``settings`` and ``env`` are what clients use."""

    stack_settings: Settings
    settings: Settings
    env: dict[str, str]
    stack_env: dict[str, str]  # `tagus stack` / `tagus status` as an operator runs them
    logs: Path
    components: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[stack.NatsNode, ...]:
        return stack.cluster_layout(self.stack_settings).nodes

    def node(self, name: str) -> stack.NatsNode:
        (node,) = [n for n in self.nodes if n.name == name]
        return node

    def pid(self, node: stack.NatsNode) -> int | None:
        return stack.managed_pids(self.stack_settings)[node.proc]

    def kill(self, node: stack.NatsNode) -> None:
        """SIGKILL one node (no shutdown: its Raft groups just lose a member)."""
        pid = self.pid(node)
        assert pid, f"{node.name} is not running"
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(10)

    def start_missing(self) -> list[str]:
        """``tagus stack up`` on the cluster: starts the nodes that are down and waits
        until each is healthy (JetStream current)."""
        return stack.nats_up(self.stack_settings).splitlines()

    async def leader(self, nc, stream: str, *, timeout_s: float = 60.0) -> stack.NatsNode:
        """The node that leads ``stream`` now (waits while there is none)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                info = await nc.jetstream().stream_info(stream)
                if info.cluster and info.cluster.leader:
                    return self.node(info.cluster.leader)
            except Exception:  # noqa: BLE001 - no leader elected yet: the API times out
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {stream} has no leader after {timeout_s} s")
            await asyncio.sleep(0.1)

    def states(self, node: stack.NatsNode) -> dict[str, dict] | None:
        """What ``node`` itself holds of every stream (its monitor's ``/jsz``)."""
        return stack.node_stream_state(self.stack_settings, node)

    def run(self, component: str) -> subprocess.Popen:
        """``tagus run COMPONENT`` as a child process against the cluster, unless it runs
        already; its log is appended to ``logs/<component>.log``."""
        proc = self.components.get(component)
        if proc is not None and proc.poll() is None:
            return proc
        log = open(self.log_path(component), "ab")  # noqa: SIM115 - the child's now
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "run", component, "--batch", "20"], cwd=REPO,
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.components[component] = proc
        return proc

    def stop(self, component: str, timeout_s: float = 30.0) -> int:
        """SIGTERM the component's process (SIGKILL after ``timeout_s``); its exit code."""
        proc = self.components.pop(component)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def log_path(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def log_lines(self, component: str, since: int = 0) -> list[dict]:
        """The component's JSON log lines from byte offset ``since``."""
        with open(self.log_path(component), "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


def operator_env(stack_settings: Settings) -> dict[str, str]:
    """The environment of an operator's commands on this stack: embedded NATS (node 1's
    ports, the data directory), the session's QuestDB as an external server (so `tagus
    stack up` neither starts nor stops it)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TAGUS_NATS_MQTT_PORT", "TAGUS_NATS_URL")}
    env.update({
        "TAGUS_DATA_DIR": str(stack_settings.data_dir),
        "TAGUS_NATS_PORT": str(stack_settings.nats_port),
        "TAGUS_NATS_MONITOR_PORT": str(stack_settings.nats_monitor_port),
        "TAGUS_STREAM_REPLICAS": str(SIZE),
        "TAGUS_CONSUMER_ACK_WAIT_S": str(ACK_WAIT_S),
        "TAGUS_CONSUMER_MAX_DELIVER": str(MAX_DELIVER),
        "TAGUS_QUESTDB_EXTERNAL": "true",
    })
    return env


def client_env(stack_settings: Settings, nodes, service: dict) -> dict[str, str]:
    urls = ",".join(f"nats://{stack_settings.nats_host}:{n.client_port}" for n in nodes)
    env = {k: v for k, v in os.environ.items() if k != "TAGUS_NATS_MQTT_PORT"}
    env.update({
        "TAGUS_DATA_DIR": str(stack_settings.data_dir),
        "TAGUS_NATS_URL": urls,
        "TAGUS_NATS_USER": service["user"],
        "TAGUS_NATS_PASSWORD": service["password"],
        "TAGUS_STREAM_REPLICAS": str(SIZE),
        "TAGUS_CONSUMER_ACK_WAIT_S": str(ACK_WAIT_S),
        "TAGUS_CONSUMER_MAX_DELIVER": str(MAX_DELIVER),
        "TAGUS_LOG_LEVEL": "INFO",
    })
    return env


@pytest.fixture
async def cluster(cluster_nodes, settings):
    """The module's cluster for one test, as a test left it for the next: every node,
    the session's QuestDB and the pipeline's components running."""
    yield cluster_nodes
    await asyncio.to_thread(cluster_nodes.start_missing)
    if not stack.managed_pids(settings)["questdb"] and not settings.questdb_external:
        await asyncio.to_thread(stack.questdb_up, settings)
    for component in PIPELINE:
        cluster_nodes.run(component)


@pytest.fixture(scope="module")
async def cluster_nodes(settings, tmp_path_factory):
    """A 3-node cluster on free ports (its own data directory), topology at R3, the
    session's QuestDB.  Stopped at the end of the module."""
    from bus.topology import ensure_topology
    from ops import wiring
    from ops.dev.stack import free_port

    root = tmp_path_factory.mktemp("cluster")
    stack_settings = settings.model_copy(update={
        "data_dir": root / "var", "nats_url": None, "nats_user": None,
        "nats_password": None, "nats_creds": None, "nats_port": free_port(),
        "nats_monitor_port": free_port(), "nats_mqtt_port": None,
        "stream_replicas": SIZE})
    (root / "logs").mkdir()
    try:
        t = time.monotonic()
        lines = await asyncio.to_thread(stack.nats_up, stack_settings, cluster=SIZE,
                                        ports="free")
        print(lines, f"\ncluster up in {time.monotonic() - t:.1f} s")
        nodes = stack.cluster_layout(stack_settings).nodes
        service = json.loads(stack_settings.nats_service_user_file.read_text())
        env = client_env(stack_settings, nodes, service)
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("TAGUS_NATS_MQTT_PORT", raising=False)
            for k, v in env.items():
                mp.setenv(k, v)
            client = load_settings()
        t = time.monotonic()
        async with wiring.nats(client, "tagus-tests-cluster") as nc:
            await ensure_topology(nc.jetstream(timeout=30), wiring.topology(client))
        print(f"topology at R{SIZE} in {time.monotonic() - t:.1f} s")
        c = Cluster(stack_settings, client, env, operator_env(stack_settings), root / "logs")
        try:
            for component in PIPELINE:  # once for the module: they take seconds to start
                c.run(component)
            yield c
        finally:
            for component in list(c.components):
                c.stop(component)
    finally:
        # the session's QuestDB stays up for the rest of the suite
        stack.down(stack_settings.model_copy(update={"questdb_external": True}))
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(root) in part for part in p.info["cmdline"] or [])]
    assert not left, f"processes outlived `stack down`: {left}"
