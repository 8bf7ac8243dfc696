"""Issue 6 repros against the intake as operators run it: ``tagus serve intake`` as a
real process, real NATS (the session's, or a private one that the test kills), real
HTTP, the drop folder and a poller.

Each test is a defect that once reproduced: repeated timestamp-less line protocol
stored once (2), token changes not reaching the service (3), the service exiting on a
NATS outage (4), gzip members freezing the event loop (5), client errors answered 500
or misleadingly (10), and ``org`` ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from nats.js.errors import ObjectNotFoundError

from bus.runner import Runner
from bus.storage import INTAKE_BUCKET, put_mapping
from bus.tokens import TokenStore
from bus.topology import ensure_topology
from contracts.registry import decode
from ops import wiring
from ops.dev import stack
from ops.service import wait_caught_up
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers

LP = "text/x-influx-line-protocol"
EMPTY_GZIP_MEMBER = gzip.compress(b"")  # 20 bytes that inflate to nothing


def _tenant(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- the service process


@dataclass
class IntakeService:
    """A running ``tagus serve intake`` and what it reads (tokens, drop folder)."""

    proc: subprocess.Popen
    url: str
    data_dir: Path
    log_path: Path
    tokens: TokenStore = field(default_factory=lambda: TokenStore([]))

    @property
    def drop_dir(self) -> Path:
        return self.data_dir / "drop"

    def issue(self, tenant: str, name: str, scopes=("write",)) -> str:
        token = self.tokens.issue(tenant, name, scopes)
        self.tokens.save(self.data_dir / "tokens.yaml")
        return token

    def revoke(self, tenant: str, name: str) -> None:
        assert self.tokens.revoke(tenant, name)
        self.tokens.save(self.data_dir / "tokens.yaml")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.asynccontextmanager
async def intake_service(settings, data_dir: Path, *, pollers: list[dict] | None = None):
    """Start ``tagus serve intake`` against ``settings``' NATS; SIGTERM it on exit and
    check that it stopped cleanly (a service that died meanwhile fails the test)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = stack.free_port()
    env = {k: v for k, v in os.environ.items() if k != "TAGUS_NATS_URL"}
    env.update(TAGUS_DATA_DIR=str(data_dir), TAGUS_NATS_HOST=settings.nats_host,
               TAGUS_NATS_PORT=str(settings.nats_port), TAGUS_INTAKE_HTTP_PORT=str(port),
               TAGUS_CONSUMER_ACK_WAIT_S=str(settings.consumer_ack_wait_s),
               TAGUS_CONSUMER_MAX_DELIVER=str(settings.consumer_max_deliver),
               TAGUS_LOG_LEVEL="INFO", TAGUS_TOKENS_FILE=str(data_dir / "tokens.yaml"))
    if settings.nats_url:
        env["TAGUS_NATS_URL"] = settings.nats_url
    user, password = settings.nats_auth()  # the service user lives in settings' data dir
    if user:
        env.update(TAGUS_NATS_USER=user, TAGUS_NATS_PASSWORD=password or "")
    if pollers:
        (data_dir / "pollers.yaml").write_text(yaml.safe_dump(pollers))
        env["TAGUS_POLLERS_FILE"] = str(data_dir / "pollers.yaml")
    log_path = data_dir / "intake.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "serve", "intake"], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    service = IntakeService(proc, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        async def up() -> bool:
            assert proc.poll() is None, f"intake service exited:\n{service.log_tail()}"
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{service.url}/ping")).status_code == 204
            except httpx.TransportError:
                return False
        await eventually(up, timeout_s=60, interval_s=0.1, what="intake service up")
        yield service
        assert proc.poll() is None, f"intake service exited:\n{service.log_tail()}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{service.log_tail()}"


@pytest.fixture(scope="module")
async def svc(settings, tmp_path_factory):
    """One ``tagus serve intake`` on the session's NATS for the tests that need no outage
    (each uses its own tenants; the ``nc`` fixture re-creates the topology under it)."""
    fast = settings.model_copy(update={"consumer_ack_wait_s": 1.0, "consumer_max_deliver": 3})
    async with intake_service(fast, tmp_path_factory.mktemp("intake")) as svc:
        yield svc


async def _received(nc, tenant: str) -> list:
    return [decode("intake", m.data)
            for m in await stream_messages(nc, "INTAKE", f"tagus.intake.{tenant}.received")]


@contextlib.asynccontextmanager
async def _pipeline(nc, settings):
    """Every component running in this process until all consumers caught up."""
    comps, topo = wiring.components(settings), wiring.topology(settings)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(Runner(nc, c, topo.consumer(n), batch=20,
                                        fetch_timeout_s=0.2).run(stop))
             for n, c in comps.items()]
    try:
        yield
        await wait_caught_up(nc, topo, timeout_s=60)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


# ---------------------------------------------------------------- defect 2


async def test_the_same_timestampless_body_pushed_three_times_is_three_readings(
        nc, fast_settings, svc):
    """Seen: three 204s, one intake id, one row.  Points without a timestamp take the
    receive time, so each request is new data; a client retry with an Idempotency-Key is
    not."""
    tenant = _tenant("lp-repeat")
    body = b"flow,site=x,unit=m3/h value=1\n"
    token = svc.issue(tenant, "telegraf")
    auth = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=svc.url, timeout=10) as http:
        ids = []
        for _ in range(3):
            r = await http.post("/api/v2/write", content=body, headers=auth)
            assert r.status_code == 204, r.text
            ids.append(r.headers["X-Tagus-Intake-Id"])
            await asyncio.sleep(0.01)
        keyed_auth = {**auth, "Idempotency-Key": "job-1"}
        retried = [await http.post("/api/v2/write", headers=keyed_auth,
                                   content=b"flow,site=y,unit=m3/h value=2\n")
                   for _ in range(2)]
        reused = await http.post("/api/v2/write", headers=keyed_auth,
                                 content=b"flow,site=y,unit=m3/h value=3\n")
    assert len(set(ids)) == 3, ids
    assert [r.status_code for r in retried] == [204, 204]
    keyed = {r.headers["X-Tagus-Intake-Id"] for r in retried}
    assert len(keyed) == 1 and not keyed & set(ids)
    assert (reused.status_code, reused.json()["code"]) == (422, "unprocessable entity")
    assert "Idempotency-Key" in reused.json()["message"]

    received = await _received(nc, tenant)
    assert sorted(e.event_id for e in received) == sorted([*ids, *keyed])
    assert len({e.sha256 for e in received if e.event_id in ids}) == 1  # one stored object
    async with _pipeline(nc, fast_settings):
        pass
    db = wiring.questdb(fast_settings)
    db.wait_for_wal("readings")
    rows = db.rows(f"select sensor, count() from readings where tenant = '{tenant}' "
                   f"order by sensor")
    assert rows == [["flow.x.value", 3], ["flow.y.value", 1]], rows


# ---------------------------------------------------------------- defect 3


async def test_token_changes_reach_the_running_service_within_seconds(nc, svc):
    """Seen: a revoked token kept writing and a new one got 401 until a restart."""
    tenant = _tenant("tokens")
    old = svc.issue(tenant, "old-scada")
    async with httpx.AsyncClient(base_url=svc.url, timeout=10) as http:
        async def status(token: str) -> int:
            body = f"level,site=t1,unit=m value=3.2 {time.time_ns()}\n".encode()
            return (await http.post("/api/v2/write", content=body,
                                    headers={"Authorization": f"Token {token}"})
                    ).status_code

        assert await status(old) == 204
        svc.revoke(tenant, "old-scada")
        new = svc.issue(tenant, "new-scada")
        started = time.monotonic()
        await eventually(lambda: _is(status(old), 401), timeout_s=5,
                         what="revoked token refused")
        await eventually(lambda: _is(status(new), 204), timeout_s=5,
                         what="new token accepted")
        assert time.monotonic() - started < 5
        assert await status(old) == 401
    assert len(await _received(nc, tenant)) == 2  # the old token's first write, the new one's


async def _is(coro, expected: int) -> bool:
    return await coro == expected


# ---------------------------------------------------------------- defect 5


async def test_hostile_gzip_leaves_the_service_answering(nc, svc):
    """Seen: 6.4 MB of empty gzip members froze the intake, /ping included, for 96 s."""
    tenant = _tenant("gzip")
    hostile = EMPTY_GZIP_MEMBER * (6_400_000 // len(EMPTY_GZIP_MEMBER))
    token = svc.issue(tenant, "telegraf")
    async with httpx.AsyncClient(base_url=svc.url, timeout=60) as http:
        started = time.monotonic()
        post = asyncio.create_task(http.post(
            "/api/v2/write", content=hostile,
            headers={"Authorization": f"Token {token}", "Content-Encoding": "gzip"}))
        pings = []
        while not post.done():
            t = time.monotonic()
            assert (await http.get("/ping")).status_code == 204
            pings.append(time.monotonic() - t)
            await asyncio.sleep(0.02)
        r = await post
        took = time.monotonic() - started
    assert (r.status_code, r.json()) == (400, {"code": "invalid", "message": "body is empty"})
    assert took < 10, took
    assert pings and max(pings) < 1.0, pings
    assert await _received(nc, tenant) == []


# ---------------------------------------------------------------- defect 10 and org


async def test_client_errors_are_4xx_json_saying_what_to_change(nc, svc):
    alpha, beta = _tenant("alpha"), _tenant("beta")
    lp = b"flow,site=p1,unit=l/s value=1 1704067200000000000\n"
    push = {"readings": [{"sensor": "p1", "ts": "2024-01-01T00:00:00Z", "value": 1,
                          "unit": "l/s"}]}
    token = svc.issue(alpha, "scada")
    svc.issue(beta, "scada")
    auth = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=svc.url, timeout=10) as http:
        nosuch = await http.post("/api/v2/write", params={"mapping": "nosuch"},
                                 content=lp, headers=auth)
        escape = await http.post("/api/v2/write", params={"mapping": "../../x"},
                                 content=lp, headers=auth)
        other_org = await http.post("/api/v2/write", params={"org": beta, "bucket": "b"},
                                    content=lp, headers=auth)
        token_on_json = await http.post("/v1/readings", json=push, headers=auth)
        own_org = await http.post("/api/v2/write", params={"org": alpha, "bucket": "b"},
                                  content=lp, headers=auth)
    assert (nosuch.status_code, nosuch.json()["code"]) == (404, "not found")
    assert "no mapping 'nosuch'" in nosuch.json()["message"]
    assert "tagus mapping put" in nosuch.json()["message"]
    assert (escape.status_code, escape.json()["code"]) == (400, "invalid")
    assert "mapping='../../x'" in escape.json()["message"]
    assert (other_org.status_code, other_org.json()["code"]) == (403, "forbidden")
    assert f"org={alpha}" in other_org.json()["message"]
    assert token_on_json.status_code == 202, token_on_json.text
    assert own_org.status_code == 204, own_org.text
    received = await _received(nc, alpha)
    assert sorted(e.event_id for e in received) == sorted(
        [token_on_json.json()["intake_id"], own_org.headers["X-Tagus-Intake-Id"]])
    assert await _received(nc, beta) == []


# ---------------------------------------------------------------- defect 4


OUTAGE_S = 20
WIDE = ("format: csv\nlayout: wide\n"
        "timestamp: {column: time, format: epoch-s, timezone: UTC}\n"
        "sensors:\n  s1: {id: s1, unit: m, range: [0, 100]}\n").encode()


class _PolledAPI:
    """A JSON API on a free port whose answer changes with every request."""

    def __init__(self) -> None:
        counter = iter(range(10**9))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                n = next(counter)
                body = json.dumps([{"sensor": "polled", "ts": 1_704_067_200 + n,
                                    "value": n}]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _private_nats(settings, root: Path):
    return settings.model_copy(update={
        "data_dir": root, "nats_url": None, "nats_port": stack.free_port(),
        "nats_monitor_port": stack.free_port(), "nats_mqtt_port": None})  # the session's owns it


def _kill_nats(settings) -> None:
    pid = stack.managed_pids(settings)["nats"]
    assert pid, "the private nats-server is not running"
    proc = psutil.Process(pid)
    proc.kill()
    proc.wait(10)


async def test_the_service_rides_out_a_nats_outage(fast_settings, tmp_path):
    """Seen: a file waiting in the drop folder while NATS was down made the service exit
    (port closed for good).  Now: pushes get 503 + Retry-After at once, files stay and
    are retried, polls back off, and everything resumes when NATS returns."""
    settings = _private_nats(fast_settings, tmp_path / "nats")
    tenant = _tenant("outage")
    await asyncio.to_thread(stack.nats_up, settings)
    api = _PolledAPI()
    nc = await wiring.nats_connection(settings, name="tagus-tests-outage")
    try:
        js = nc.jetstream()
        await ensure_topology(js, wiring.topology(settings))
        await put_mapping(js, tenant, "wide", WIDE)
        poller = {"name": "outage", "tenant": tenant, "url": api.url, "interval_s": 1,
                  "timeout_s": 2, "backoff_initial_s": 0.5, "backoff_max_s": 2,
                  "mapping": {"units": {"polled": "m"}}}
        dropped: dict[str, bytes] = {}
        accepted: dict[str, str] = {}  # intake id -> sha256 of what a 2xx acknowledged

        async with intake_service(settings, tmp_path / "svc", pollers=[poller]) as svc:
            token = svc.issue(tenant, "telegraf")
            folder = svc.drop_dir / tenant / "wide"
            folder.mkdir(parents=True)

            def drop(i: int) -> None:
                content = f"time,s1\n{1_704_067_200 + i},{i}.5\n".encode()
                (folder / f"f{i}.csv").write_bytes(content)
                dropped[f"f{i}.csv"] = content

            async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
                async def push(i: int) -> httpx.Response:
                    body = f"flow,site=p{i},unit=l/s value={i} {1_704_067_200 + i}\n".encode()
                    r = await http.post("/api/v2/write", content=body,
                                        params={"precision": "s"},
                                        headers={"Authorization": f"Token {token}"})
                    if r.status_code == 204:
                        accepted[r.headers["X-Tagus-Intake-Id"]] = \
                            hashlib.sha256(body).hexdigest()
                    return r

                assert (await push(0)).status_code == 204
                drop(0)
                await eventually(lambda: not (folder / "f0.csv").exists(), timeout_s=15,
                                 what="first file ingested")

                _kill_nats(settings)
                killed = time.monotonic()
                await asyncio.sleep(0.5)
                refused, i = [], 1
                while time.monotonic() - killed < OUTAGE_S:
                    if i % 5 == 1:
                        drop(i)
                    t = time.monotonic()
                    r = await push(i)
                    refused.append((i, r.status_code, time.monotonic() - t,
                                    r.headers.get("Retry-After"), r.json()["code"]))
                    assert (await http.get("/ping")).status_code == 204
                    i += 1
                    await asyncio.sleep(1)
                assert svc.proc.poll() is None, svc.log_tail()
                assert all(status == 503 and code == "unavailable" and retry
                           for _, status, _, retry, code in refused), refused
                assert max(took for _, _, took, _, _ in refused) < 1.0, refused
                assert [f.name for f in folder.iterdir() if f.is_file()], "files must wait"

                await asyncio.to_thread(stack.nats_up, settings)
                back = time.monotonic()
                for j, *_ in refused:  # the clients retry what was refused
                    async def stored(j=j) -> bool:
                        return (await push(j)).status_code == 204
                    await eventually(stored, timeout_s=30, interval_s=0.5,
                                     what=f"push {j} accepted after NATS returned")
                await eventually(lambda: not [f for f in folder.iterdir() if f.is_file()],
                                 timeout_s=30, what="every dropped file ingested")
                await eventually(lambda: _polled_since(nc, tenant, back), timeout_s=15,
                                 what="the poller submitting again")

        received = await _received(nc, tenant)
        by_id = {e.event_id: e for e in received}
        missing = sorted(set(accepted) - set(by_id))
        assert not missing, f"acknowledged but not stored: {missing}"
        assert all(by_id[i].sha256 == sha for i, sha in accepted.items())
        files = {e.filename: e.sha256 for e in received if e.source == "drop-folder"}
        assert files == {name: hashlib.sha256(c).hexdigest() for name, c in dropped.items()}
        assert sorted(p.name for p in (folder / ".done").iterdir()) == sorted(dropped)
        store = await js.object_store(INTAKE_BUCKET)
        for e in received:
            try:
                info = await store.get_info(e.object_name)
            except ObjectNotFoundError:
                pytest.fail(f"intake {e.event_id} ({e.source}) has no stored bytes")
            assert info.size == e.size_bytes
    finally:
        api.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), 10)
        await asyncio.to_thread(stack._stop, settings, "nats")


async def _polled_since(nc, tenant: str, since_monotonic: float) -> bool:
    ago_s = time.monotonic() - since_monotonic
    now = time.time()
    return any(e.source == "poller:outage" and e.occurred_at.timestamp() > now - ago_s
               for e in await _received(nc, tenant))
