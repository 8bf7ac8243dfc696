"""The query API under attack and bad luck (issue 6: defect 6, defect 10's API part, the
truncated CSV export; defect 9's rule on the read side).

The API runs under a real uvicorn on a free port inside the test's event loop, so slow
clients are real sockets with real TCP back-pressure and the test can reach the app's
state.  The hung-QuestDB test starts a QuestDB of its own (the session's is never
stopped) and freezes it with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import uvicorn

from bus.tokens import TokenStore
from contracts.base import new_id, utc_now
from contracts.readings import ReadingsNormalised, Series
from ops.dev.stack import free_port
from ops.serving import api_config
from ops.wiring import questdb
from projections.api import create_app
from projections.readings import TABLE, ReadingsWriter

pytestmark = pytest.mark.servers

RUN = uuid.uuid4().hex[:8]
A, B = f"adv-a-{RUN}", f"adv-b-{RUN}"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
BULK_ROWS = 40_000  # ~1.6 MB of CSV: more than the socket buffers between server and client
ODD_IDS = ["A", "9", "a_b.c:d-e", "x" * 128]  # the rule's corners: all must be queryable


def _write(settings, tenant: str, sensor: str, n: int, start: datetime = T0) -> None:
    db = questdb(settings)
    writer = ReadingsWriter(db)
    writer.prepare()
    ts = int(start.timestamp()) * 10**9 + np.arange(n, dtype=np.int64) * 60 * 10**9
    now = utc_now()
    writer.write([ReadingsNormalised(
        event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now, source="adv",
        series=[Series(sensor_id=sensor, unit="m3/s", timestamps_ns=ts.tolist(),
                       values=np.random.default_rng(n).normal(1, 0.1, n).tolist())])])
    db.wait_for_wal(TABLE)


@pytest.fixture(scope="module")
def data(settings):
    _write(settings, A, "bulk", BULK_ROWS)
    for sensor in ODD_IDS:
        _write(settings, A, sensor, 10)
    _write(settings, B, "b-1", 10)


@pytest.fixture(scope="module")
def tokens(settings, tmp_path_factory):
    path = tmp_path_factory.mktemp("adv") / "tokens.yaml"
    store = TokenStore([])
    issued = {"a": store.issue(A, "ops-a", ("read",)), "b": store.issue(B, "ops-b", ("read",))}
    store.save(path)
    return path, issued


@asynccontextmanager
async def running_api(config, *, send_buffer: int | None = None):
    """The API under uvicorn on ``config.port``, in this event loop.

    ``send_buffer``: SO_SNDBUF of the listening socket (accepted connections inherit it),
    so a client that stops reading blocks the server after kilobytes rather than after
    the megabytes of loopback's auto-tuned buffers: a slow WAN client, quickly.
    """
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=2))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", config.port))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start: {task.exception() if task.done() else ''}")
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{config.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=15, trust_env=False) as client:
            yield app, client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


def _config(settings, tokens, **overrides):
    return api_config(settings, tokens_path=tokens[0], port=free_port(), **overrides)


def _auth(tokens, who: str) -> dict:
    return {"Authorization": f"Bearer {tokens[1][who]}"}


def _assert_json_error(r: httpx.Response, status: int | tuple, error: str | None = None):
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["detail"] and (error is None or body["error"] == error), body
    return body


# ---------------------------------------------------------------- defect 6: one tenant stalls all


async def _slow_download(port: int, path: str, token: str):
    """Ask for ``path`` and read only the response head: then this client reads nothing
    more (a receive buffer of 4 KiB), like ``curl --limit-rate`` at its slowest."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
                 .encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    return head, writer


async def test_slow_csv_downloads_of_one_tenant_do_not_stall_another(settings, data, tokens):
    config = _config(settings, tokens, pool_size=8, tenant_max_queries=4,
                     tenant_max_exports=8, acquire_timeout_s=15, query_timeout_s=20)
    path = (f"/v1/sensors/bulk/readings?format=csv&limit={BULK_ROWS}"
            f"&start=2024-01-01T00:00:00Z&end=2024-04-01T00:00:00Z")
    async with running_api(config, send_buffer=16384) as (app, client):
        slow = await asyncio.wait_for(asyncio.gather(*(
            _slow_download(config.port, path, tokens[1]["a"]) for _ in range(8))), 60)
        try:
            assert all(head.startswith(b"HTTP/1.1 200") for head, _ in slow)
            t = time.monotonic()
            r = await client.get("/v1/sensors", headers=_auth(tokens, "b"), timeout=5)
            assert r.status_code == 200 and r.json()["tenant"] == B
            assert time.monotonic() - t < 3
            ready = await client.get("/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
            assert ready.json()["pool"]["in_use"] == 0  # no connection pinned to a download
            assert ready.json()["tenants"]["exports"] == 8
            ninth = await client.get(path, headers=_auth(tokens, "a"), timeout=5)
            body = _assert_json_error(ninth, 429, "too many requests")
            assert ninth.headers["retry-after"] and "8 CSV exports" in body["detail"]
        finally:
            for _, writer in slow:
                writer.transport.abort()


async def test_a_stalled_download_is_cut_off_and_frees_its_export_slot(settings, data,
                                                                       tokens):
    config = _config(settings, tokens, tenant_max_exports=1, export_stall_timeout_s=0.5)
    path = (f"/v1/sensors/bulk/readings?format=csv&limit={BULK_ROWS}"
            f"&start=2024-01-01T00:00:00Z&end=2024-04-01T00:00:00Z")
    async with running_api(config, send_buffer=16384) as (app, client):
        head, writer = await _slow_download(config.port, path, tokens[1]["a"])
        try:
            assert head.startswith(b"HTTP/1.1 200")
            r = await client.get(path, headers=_auth(tokens, "a"))
            _assert_json_error(r, 429, "too many requests")  # the one slot is taken
            deadline = time.monotonic() + 10
            while (await client.get("/readyz")).json()["tenants"]["exports"] \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            r = await client.get(path, headers=_auth(tokens, "a"))
            assert r.status_code == 200 and r.text.endswith(f"# end: {BULK_ROWS} rows\n")
        finally:
            writer.transport.abort()


async def test_a_tenant_past_its_query_share_waits_then_gets_429(settings, data, tokens):
    config = _config(settings, tokens, pool_size=4, tenant_max_queries=2,
                     acquire_timeout_s=0.5, query_timeout_s=5)
    async with running_api(config) as (app, client):
        async with app.state.db.session(A), app.state.db.session(A):  # A's whole share
            t = time.monotonic()
            r = await client.get("/v1/sensors", headers=_auth(tokens, "a"))
            assert time.monotonic() - t < 2
            _assert_json_error(r, 429, "too many requests")
            assert r.headers["retry-after"]
            r = await client.get("/v1/sensors", headers=_auth(tokens, "b"))
            assert r.status_code == 200  # the other tenant is served meanwhile


async def test_pool_exhaustion_is_a_503_and_readiness_tells_it_from_a_dead_questdb(
        settings, data, tokens):
    config = _config(settings, tokens, pool_size=2, tenant_max_queries=1,
                     acquire_timeout_s=0.5, query_timeout_s=5)
    async with running_api(config) as (app, client):
        async with app.state.db.session("x1"), app.state.db.session("x2"):  # pool full
            t = time.monotonic()
            r = await client.get("/v1/sensors", headers=_auth(tokens, "b"))
            assert time.monotonic() - t < 2
            body = _assert_json_error(r, 503, "busy")
            assert r.headers["retry-after"] and body["retry_after_s"] > 0
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "busy"
            assert ready.json()["questdb"]["reachable"] is True
            assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json()["status"] == "ready"

    with socket.socket() as s:  # a port nobody listens on: QuestDB is down
        s.bind(("127.0.0.1", 0))
        dead = _config(settings, tokens, pg_port=s.getsockname()[1], acquire_timeout_s=0.5,
                       query_timeout_s=5)
    async with running_api(dead) as (app, client):
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert ready.json()["questdb"]["reachable"] is False
        assert (await client.get("/healthz")).status_code == 200
        r = await client.get("/v1/sensors", headers=_auth(tokens, "b"))
        _assert_json_error(r, 503, "unavailable")


# ---------------------------------------------------------------- defect 6: a hung QuestDB


@pytest.fixture
def own_questdb(settings, tmp_path):
    """A QuestDB of this test's own (SIGSTOP must never touch the session's)."""
    from ops.dev import stack

    ports = {f"questdb_{k}_port": free_port() for k in ("http", "pg", "ilp", "min_http")}
    mine = settings.model_copy(update={"data_dir": tmp_path / "var", **ports})
    stack.questdb_up(mine)
    pid = stack.managed_pids(mine)["questdb"]
    try:
        yield mine, pid
    finally:
        os.kill(pid, signal.SIGCONT)
        stack.down(mine)


def _freeze(pid: int) -> None:
    """SIGSTOP, then wait until every thread of the JVM has stopped: delivery to a
    process of many threads is not instant, and a query in flight could still be answered
    (seen in CI: the first request after the signal got its 200)."""
    import psutil

    def running(tid: int) -> bool:
        try:
            return psutil.Process(tid).status() != psutil.STATUS_STOPPED
        except psutil.NoSuchProcess:
            return False  # a thread that ended meanwhile answers nothing

    os.kill(pid, signal.SIGSTOP)
    proc, deadline = psutil.Process(pid), time.monotonic() + 10
    while any(running(t.id) for t in proc.threads()):
        assert time.monotonic() < deadline, "QuestDB did not stop within 10 s of SIGSTOP"
        time.sleep(0.05)


async def test_a_frozen_questdb_cannot_hold_a_request_past_the_query_timeout(own_questdb,
                                                                             tokens):
    mine, pid = own_questdb
    _write(mine, A, "bulk", 1_000)
    config = _config(mine, tokens, acquire_timeout_s=1, query_timeout_s=3,
                     readiness_timeout_s=1)
    limit_s = config.query_timeout_s + 1.5  # scheduling slack on a busy 2-core machine
    readings = "/v1/sensors/bulk/readings?start=2024-01-01T00:00:00Z&end=2024-01-02T00:00:00Z"
    async with running_api(config) as (app, client):
        assert (await client.get("/v1/sensors", headers=_auth(tokens, "a"))).status_code == 200
        _freeze(pid)

        async def timed(path, **kw):
            t = time.monotonic()
            r = await client.get(path, timeout=30, **kw)
            return r, time.monotonic() - t

        answers = await asyncio.gather(
            timed("/v1/sensors", headers=_auth(tokens, "a")),
            timed(readings + "&format=csv", headers=_auth(tokens, "a")),
            timed(readings, headers=_auth(tokens, "a")),
            timed("/readyz"), timed("/healthz"))
        for r, took in answers[:3]:  # pooled connection, then new connections to a frozen server
            _assert_json_error(r, (503, 504))
            assert r.headers["retry-after"] and took < limit_s, (r.text, took)
        ready, took = answers[3]
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert took < config.readiness_timeout_s + 1.5
        assert answers[4][0].status_code == 200 and answers[4][1] < 1

        os.kill(pid, signal.SIGCONT)  # back to life: the API recovers without a restart
        deadline = time.monotonic() + 20
        while (r := await client.get("/v1/sensors", headers=_auth(tokens, "a"))).status_code \
                != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert r.status_code == 200 and [s["sensor"] for s in r.json()["sensors"]] == ["bulk"]


# ---------------------------------------------------------------- defect 10: 4xx JSON, never 500


BAD = [
    ("/v1/sensors/bulk/readings?start=0001-01-01T00:00%2B14:00&end=2024-01-01T00:00Z", "start"),
    ("/v1/sensors/bulk/readings?start=9999-12-31T23:00-14:00", "start"),
    ("/v1/sensors/bulk/readings?end=0001-01-01T00:00:00Z", "end"),
    ("/v1/sensors/bulk/readings?start=2024-01-01T00:00%2B99:00", "start"),
    ("/v1/sensors/bulk/readings?start=%FF%FE", "start"),
    ("/v1/sensors/bulk/readings?start=" + "9" * 5000, "start"),
    ("/v1/sensors/bulk/readings?limit=" + "9" * 5000, "limit"),
    ("/v1/sensors/bulk/readings?limit=-1", "limit"),
    ("/v1/sensors/bulk/readings?limit=1e3", "limit"),
    ("/v1/sensors/bulk/readings?bucket=%EF%BC%91h", "bucket"),
    ("/v1/sensors/bulk/readings?bucket=9999999d", "bucket"),
    ("/v1/sensors/%FF%FE/latest", "sensor"),
    ("/v1/sensors/" + "x" * 129 + "/latest", "sensor"),
    ("/v1/sensors/" + "x" * 5000 + "/readings", "sensor"),
    ("/v1/sensors/a%09b/readings?format=csv", "sensor"),
    ("/v1/sensors/%00/latest", "sensor"),
    ("/v1/sensors/-x/latest", "sensor"),
    ("/v1/latest?" + "&".join(f"sensor=s{i}" for i in range(101)), "sensor"),
    ("/v1/latest?sensor=", "sensor"),
    ("/v1/intakes?limit=0", "limit"),
    ("/v1/intakes?limit=" + "9" * 40, "limit"),
    ("/v1/intakes/" + "f" * 5000 + "/rejections", "intake_id"),
    ("/v1/intakes/%FF/rejections", "intake_id"),
]


async def test_every_bad_parameter_is_a_422_json_naming_it(settings, data, tokens):
    async with running_api(_config(settings, tokens)) as (app, client):
        # an end in year 1 without start: the default start stops at year 1, no overflow
        for params in ({"end": "0001-01-01T10:00Z"}, {"end": "0001-01-01T10:00Z", "bucket": "1h"},
                       {"end": "0001-01-01T10:00Z", "format": "csv"}):
            r = await client.get("/v1/sensors/bulk/readings", params=params,
                                 headers=_auth(tokens, "a"))
            assert r.status_code == 200, r.text
            assert r.json()["points"] == [] if "format" not in params \
                else r.text.endswith("# end: 0 rows\n")
        for path, parameter in BAD:
            r = await client.get(path, headers=_auth(tokens, "a"))
            body = _assert_json_error(r, 422, "invalid parameter")
            assert body["parameter"] == parameter, (path[:80], body)
            assert len(body["detail"]) < 600, body  # an echoed 5000-character input is cut
        r = await client.get("/v1/sensors", headers={"Authorization": "Token x"})
        body = _assert_json_error(r, 401, "unauthenticated")
        assert "'Token' is not accepted" in body["detail"] and "Bearer" in body["detail"]
        r = await client.post("/v1/sensors", headers=_auth(tokens, "a"))
        _assert_json_error(r, 405)


async def test_every_valid_sensor_id_is_queryable_on_every_route(settings, data, tokens):
    """The read side of defect 9: ids are checked by the contract's rule, so whatever a
    door accepted and ``/v1/sensors`` lists, every per-sensor route answers."""
    async with running_api(_config(settings, tokens)) as (app, client):
        listed = (await client.get("/v1/sensors", headers=_auth(tokens, "a"))).json()
        assert set(ODD_IDS) <= {s["sensor"] for s in listed["sensors"]}
        h = _auth(tokens, "a")
        span = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z"}
        for sensor in ODD_IDS:
            p = quote(sensor, safe="")
            for r in (await client.get(f"/v1/sensors/{p}/latest", headers=h),
                      await client.get(f"/v1/sensors/{p}/readings", params=span, headers=h),
                      await client.get(f"/v1/sensors/{p}/readings", headers=h,
                                       params={**span, "format": "csv", "bucket": "1h"}),
                      await client.get("/v1/latest", params={"sensor": sensor}, headers=h)):
                assert r.status_code == 200, (sensor, r.url, r.text[:200])


# ---------------------------------------------------------------- truncated CSV exports


async def test_a_complete_export_says_so_and_a_cut_one_is_detectable(settings, data, tokens,
                                                                     monkeypatch):
    from projections.api import export

    path = "/v1/sensors/bulk/readings"
    params = {"format": "csv", "limit": 30_000, "start": "2024-01-01T00:00:00Z",
              "end": "2024-03-01T00:00:00Z"}
    async with running_api(_config(settings, tokens)) as (app, client):
        r = await client.get(path, params=params, headers=_auth(tokens, "a"))
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
        lines = r.text.splitlines()
        assert lines[0] == "ts,value" and lines[-1] == "# end: 30000 rows (limit 30000 " \
            "reached: later rows left out; narrow the range or raise limit)"
        assert len(lines) == 30_002

        def failing_chunks(self):  # the disk under the spool fails after the first chunk
            self.file.seek(0)
            yield self.file.read(export.CHUNK_BYTES)
            raise OSError("I/O error reading the export spool")

        monkeypatch.setattr(export.Spool, "chunks", failing_chunks)
        got = bytearray()
        with pytest.raises(httpx.HTTPError):  # incomplete body: the client knows
            async with client.stream("GET", path, params=params,
                                     headers=_auth(tokens, "a")) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_bytes():
                    got += chunk
        assert 0 < len(got) < int(r.headers["content-length"])
        assert b"# end:" not in got  # and a saved partial file says so too
        assert (await client.get("/readyz")).json()["tenants"]["exports"] == 0
