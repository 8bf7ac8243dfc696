"""Metrics and health of the real processes: `tagus serve intake`, `tagus run normalise
questdb-readings` (with ``TAGUS_METRICS_PORT``) and `tagus serve api` as subprocesses
against the session's NATS and QuestDB; readings pushed over HTTP; ``/metrics`` scraped
and its counters compared with what the streams and QuestDB hold."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.tokens import TokenStore
from bus.topology import Topology
from ops import wiring
from ops.service import positions, wait_caught_up
from tests.conftest import REPO, free_port
from tests.helpers import eventually

pytestmark = pytest.mark.servers

COMPONENTS = ("normalise", "questdb-readings")
PUSHES = 7
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples]


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(v for n, lab, v in _samples(text) if n == name
               and all(lab.get(k) == want for k, want in labels.items()))


@contextlib.contextmanager
def _processes(logdir: Path):
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(args: list[str], name: str, **env: str) -> subprocess.Popen:
        log = logdir / f"{name}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen([sys.executable, "-m", "ops.cli", *args], cwd=REPO,
                                 env={**os.environ, **env}, stdout=out,
                                 stderr=subprocess.STDOUT)
        procs.append((p, log))
        return p

    try:
        yield start, procs
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


async def _up(http: httpx.AsyncClient, url: str, procs, timeout_s: float = 60.0) -> dict:
    """Wait until ``url`` answers 200; fail with the logs if a process died meanwhile."""
    async def ready():
        for p, log in procs:
            assert p.poll() is None, f"{p.args} exited {p.returncode}:\n{log.read_text()[-3000:]}"
        try:
            r = await http.get(url)
        except httpx.TransportError:
            return False
        return r.json() if r.status_code == 200 else False
    return await eventually(ready, timeout_s=timeout_s, interval_s=0.2, what=f"{url} ready")


async def test_counters_match_the_messages_handled(nc, settings, tmp_path):
    tenant = f"metrics-{uuid.uuid4().hex[:8]}"
    store = TokenStore([])
    write = store.issue(tenant, "scada", ("write",))
    read = store.issue(tenant, "viewer", ("read",))
    tokens = tmp_path / "tokens.yaml"
    store.save(tokens)
    intake_port, runner_port, api_port = free_port(), free_port(), free_port()
    env = {"TAGUS_TOKENS_FILE": str(tokens), "TAGUS_MAIL_POLLER": "off",
           "TAGUS_DROP_DIR": str(tmp_path / "drop")}
    topo = wiring.topology(settings)
    mine = Topology(topo.streams, tuple(topo.consumer(n) for n in COMPONENTS), topo.buckets)

    with _processes(tmp_path) as (start, procs):
        start(["serve", "intake"], "intake", TAGUS_INTAKE_HTTP_PORT=str(intake_port), **env)
        start(["run", *COMPONENTS, "--batch", "20"], "run", TAGUS_METRICS_PORT=str(runner_port),
              TAGUS_METRICS_POLL_S="0.3", **env)
        start(["serve", "api"], "api", TAGUS_API_PORT=str(api_port), **env)
        async with httpx.AsyncClient(timeout=10) as http:
            intake = f"http://127.0.0.1:{intake_port}"
            runner = f"http://127.0.0.1:{runner_port}"
            api = f"http://127.0.0.1:{api_port}"
            await _up(http, f"{intake}/readyz", procs)
            ready = await _up(http, f"{runner}/readyz", procs)
            assert ready["status"] == "ready" and "normalise" in ready["detail"], ready
            assert (await http.get(f"{runner}/healthz")).json()["status"] == "ok"
            await _up(http, f"{api}/healthz", procs)

            # PUSHES accepted writes of 3 readings each, one refused (no token), one 403
            for i in range(PUSHES):
                body = "".join(f"flow,site=p{j},unit=m3/h value={i + j / 10} {T0 + 60 * i}\n"
                               for j in range(3))
                r = await http.post(f"{intake}/api/v2/write", params={"precision": "s"},
                                    content=body, headers={"Authorization": f"Token {write}"})
                assert r.status_code == 204, r.text
            assert (await http.post(f"{intake}/api/v2/write", content=b"x v=1 1")
                    ).status_code == 401
            assert (await http.post(f"{intake}/api/v2/write", content=b"x v=1 1",
                                    headers={"Authorization": f"Token {read}"})
                    ).status_code == 403

            await wait_caught_up(nc, mine, timeout_s=60)
            batches = (await nc.jetstream().stream_info(
                "READINGS", subjects_filter=f"tagus.readings.{tenant}.normalised")).state
            normalised = sum((batches.subjects or {}).values())
            assert normalised >= 1

            async def lag_zero():
                text = (await http.get(f"{runner}/metrics")).text
                return text if all(
                    _value(text, "tagus_consumer_lag", component=c) == 0
                    and any(n == "tagus_consumer_lag" and lab.get("component") == c
                            for n, lab, _ in _samples(text)) for c in COMPONENTS) else None
            text = await eventually(lag_zero, timeout_s=30, what="lag gauges at 0")
            # one handled message per accepted push for normalise, one per normalised
            # batch for the projection, nothing failed or dead-lettered
            assert _value(text, "tagus_runner_handled_total", component="normalise") == PUSHES
            assert _value(text, "tagus_runner_handled_total",
                          component="questdb-readings") == normalised
            assert _value(text, "tagus_intake_values_total", outcome="accepted",
                          source="line-protocol") == 3 * PUSHES
            assert _value(text, "tagus_intake_values_total", outcome="rejected") == 0
            assert _value(text, "tagus_runner_failures_total") == 0
            assert _value(text, "tagus_runner_dead_letters_total") == 0
            assert _value(text, "tagus_runner_handle_duration_seconds_count",
                          component="normalise") == PUSHES
            # normalise published intake.parsed + at least one readings batch per push
            assert _value(text, "tagus_runner_published_total",
                          component="normalise") >= 2 * PUSHES

            text = (await http.get(f"{intake}/metrics")).text
            assert _value(text, "tagus_intake_requests_total", outcome="accepted",
                          door="/api/v2/write") == PUSHES
            assert _value(text, "tagus_intake_requests_total", outcome="refused",
                          status="401") == 1
            assert _value(text, "tagus_intake_requests_total", outcome="refused",
                          status="403") == 1
            assert _value(text, "tagus_intake_uploads_total", outcome="received",
                          source="line-protocol") == PUSHES
            assert _value(text, "tagus_http_requests_total", service="intake",
                          route="/api/v2/write", status="2xx") == PUSHES

            for _ in range(3):
                assert (await http.get(f"{api}/healthz")).status_code == 200
            text = (await http.get(f"{api}/metrics")).text
            assert _value(text, "tagus_http_requests_total", service="api",
                          route="/healthz", status="2xx") >= 3

    rows = await asyncio.to_thread(
        wiring.questdb(settings).rows,
        f"select count() from readings where tenant = '{tenant}'")
    assert rows[0][0] == 3 * PUSHES
    assert all(p.lag == 0 for p in await positions(nc, mine))


async def test_readiness_says_why_not(settings, tmp_path):
    """A runner whose consumer does not exist is alive (/healthz) but not ready (/readyz
    503 naming the consumer)."""
    from ops.telemetry import ConsumerWatch, runner_readiness
    from bus.topology import ConsumerSpec

    conn = await wiring.nats_connection(settings, name="tagus-test-readiness")
    try:
        missing = ConsumerSpec(stream="READINGS", durable=f"nobody-{uuid.uuid4().hex[:6]}",
                               filter_subjects=("tagus.readings.*.nothing",))
        watch = ConsumerWatch(conn, [missing], poll_s=0.1)
        await watch.poll_once()
        alive = asyncio.create_task(asyncio.sleep(30))
        try:
            ok, why = runner_readiness(conn, {"x": alive}, watch)()
        finally:
            alive.cancel()
        assert not ok and missing.durable in why, why
    finally:
        await conn.drain()


async def test_questdb_dashboard_queries_run(settings):
    """Every query of deploy/grafana/tagus-questdb.json, its Grafana macros expanded as the
    QuestDB data source expands them, is valid SQL on the projections' tables."""
    import json

    from bus.components import Projection
    from tests.unit.test_grafana_dashboards import DEPLOY, sql_of

    for comp in wiring.components(settings).values():
        if isinstance(comp, Projection) and comp.prepare:
            await asyncio.to_thread(comp.prepare)
    doc = json.loads((DEPLOY / "tagus-questdb.json").read_text())
    lo, hi = 1_704_067_200_000_000, 1_704_672_000_000_000  # a week of 2024, microseconds
    conn = await wiring.pg_connection(settings)
    try:
        for sql in sql_of(doc):
            expanded = (sql.replace("$__sampleByInterval", "1h").replace("$tenant", "acme"))
            expanded = re.sub(r"\$__timeFilter\((\w+)\)",
                              rf"\1 >= cast({lo} as timestamp) AND \1 <= cast({hi} as timestamp)",
                              expanded)
            try:
                await conn.fetch(expanded)
            except Exception as e:  # noqa: BLE001 - the query and QuestDB's words
                pytest.fail(f"{expanded}\n-> {type(e).__name__}: {e}")
    finally:
        await conn.close()
