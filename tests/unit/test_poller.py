"""API poller against a real local HTTP server; ``submit`` (the intake store) is faked."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from contracts.base import new_id, utc_now
from contracts.errors import ContractError, TenantConfigError, TransientError
from contracts.intake import RawIntakeReceived
from contracts.mapping import PollMapping, compile_path, select
from processors.normalise.jsonpush import parse_polled
from producers.poller import PollerConfig, mapping_params, poll_once, run_poller

SCADA_BODY = json.dumps({"status": "ok", "data": [
    {"tag": "p227", "t": "2019-01-01T00:00:00Z", "v": 83.93},
    {"tag": "p227", "t": "2019-01-01T00:05:00Z", "v": 84.5},
    {"tag": "T1", "t": "2019-01-01T00:00:00Z", "v": 3.1, "u": "m"},
    {"tag": "p235", "t": "2019-01-01T00:00:00", "v": 1.0},
]}).encode()
JAN1_2019_NS = 1_546_300_800 * 10**9
MAPPING = PollMapping(items="data[*]", sensor="tag", ts="t", value="v", unit="u",
                      units={"p227": "m3/h", "p235": "m3/h"})


@dataclass
class Reply:
    status: int = 200
    body: bytes = SCADA_BODY
    delay_s: float = 0.0


@dataclass
class Upstream:
    """A scripted HTTP server: each GET takes the next reply (the last one repeats)."""

    replies: deque[Reply] = field(default_factory=deque)
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def next(self) -> Reply:
        return self.replies.popleft() if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.requests.append(dict(self.headers))
            reply = state.next()
            time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api/values"
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class FakeSubmit:
    calls: list[dict[str, Any]] = field(default_factory=list)
    stop_after: int | None = None
    stop: asyncio.Event | None = None

    async def __call__(self, **kw: Any) -> RawIntakeReceived:
        self.calls.append(kw)
        if self.stop and len(self.calls) == self.stop_after:
            self.stop.set()
        return RawIntakeReceived(
            event_id=new_id(), tenant=kw["tenant"], occurred_at=utc_now(),
            recorded_at=utc_now(), source=kw["source"], bucket="intake", object_name="x",
            sha256="0" * 64, size_bytes=len(kw["body"]), content_type=kw["content_type"],
            params=kw.get("params") or {})


def config(url: str, **kw: Any) -> PollerConfig:
    return PollerConfig(name="scada", tenant="ltown", url=url,
                        headers={"Authorization": "Bearer ${SCADA_TOKEN}"}, mapping=MAPPING,
                        **kw)


ENV = {"SCADA_TOKEN": "s3cret"}


async def test_poll_once_submits_the_raw_body_and_parse_polled_reads_it(upstream):
    upstream.replies.append(Reply())
    submit = FakeSubmit()
    async with httpx.AsyncClient() as client:
        intake = await poll_once(config(upstream.url), client, submit, environ=ENV)
    assert intake is not None
    [call] = submit.calls
    assert upstream.requests[0]["Authorization"] == "Bearer s3cret"
    assert (call["tenant"], call["source"], call["content_type"], call["body"]) == (
        "ltown", "poller:scada", "application/json", SCADA_BODY)
    assert call["params"] == mapping_params(config(upstream.url))

    r = parse_polled(call["body"], call["params"], received_at_ns=JAN1_2019_NS)
    by_id = {s.sensor_id: s for s in r.series}
    assert by_id["p227"].timestamps_ns == [JAN1_2019_NS, JAN1_2019_NS + 300 * 10**9]
    assert by_id["p227"].values == pytest.approx([83.93 / 3600, 84.5 / 3600])
    assert (by_id["T1"].unit, by_id["T1"].values) == ("m", [3.1])
    assert [(x.row, x.sensor_id, x.reason) for x in r.rejected] == [(4, "p235", "naive_time")]
    assert (r.rows_received, r.rows_accepted, r.values_received) == (4, 3, 4)


@pytest.mark.parametrize(("reply", "error"), [
    (Reply(status=500, body=b"oops"), TransientError),
    (Reply(status=503, body=b""), TransientError),
    (Reply(status=429, body=b""), TransientError),
    (Reply(status=401, body=b"{}"), TenantConfigError),
    (Reply(status=200, body=b"<html>maintenance</html>"), ContractError),
])
async def test_poll_once_errors_submit_nothing(upstream, reply, error):
    upstream.replies.append(reply)
    submit = FakeSubmit()
    async with httpx.AsyncClient() as client:
        with pytest.raises(error):
            await poll_once(config(upstream.url), client, submit, environ=ENV)
    assert submit.calls == []


async def test_poll_once_times_out(upstream):
    upstream.replies.append(Reply(delay_s=2.0))
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        with pytest.raises(TransientError, match="did not answer within 0.2 s"):
            await poll_once(config(upstream.url, timeout_s=0.2), client, FakeSubmit(),
                            environ=ENV)
    assert time.monotonic() - started < 1.5


async def test_poll_once_connection_refused_is_transient():
    async with httpx.AsyncClient() as client:
        with pytest.raises(TransientError, match="ConnectError"):
            await poll_once(config("http://127.0.0.1:1/values"), client, FakeSubmit(),
                            environ=ENV)


async def test_empty_response_submits_nothing(upstream):
    upstream.replies.append(Reply(body=b""))
    submit = FakeSubmit()
    async with httpx.AsyncClient() as client:
        assert await poll_once(config(upstream.url), client, submit, environ=ENV) is None
    assert submit.calls == []


async def test_oversized_response_is_refused(upstream):
    upstream.replies.append(Reply(body=b"[" + b"1," * 5000 + b"1]"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(ContractError, match="exceeds"):
            await poll_once(config(upstream.url, max_body_bytes=1000), client, FakeSubmit(),
                            environ=ENV)


async def test_missing_env_var_is_a_config_error(upstream):
    upstream.replies.append(Reply())
    async with httpx.AsyncClient() as client:
        with pytest.raises(TenantConfigError, match="SCADA_TOKEN"):
            await poll_once(config(upstream.url), client, FakeSubmit(), environ={})
    assert upstream.requests == []


async def test_run_poller_backs_off_on_500_and_timeout_then_recovers(upstream):
    # generous timings: a loaded CI machine answers a plain poll in well under 2.5 s
    upstream.replies.extend([Reply(status=500, body=b"down"), Reply(delay_s=5.0), Reply()])
    stop = asyncio.Event()
    submit = FakeSubmit(stop_after=2, stop=stop)
    cfg = config(upstream.url, interval_s=0.05, timeout_s=2.5, backoff_initial_s=0.01,
                 backoff_max_s=1.0)
    with capture_logs() as logs:
        await asyncio.wait_for(run_poller(cfg, submit, stop, environ=ENV), timeout=40)
    polls = [e for e in logs if e["event"] == "poll"]
    assert [e["outcome"] for e in polls] == ["failed", "failed", "submitted", "submitted"]
    assert [e.get("retry_in_s") for e in polls[:2]] == [0.01, 0.02]
    assert polls[0]["error"] == "TransientError" and "500" in polls[0]["message"]
    assert "did not answer within 2.5 s" in polls[1]["message"]
    assert all(e["poller"] == "scada" and e["tenant"] == "ltown" for e in polls)
    assert polls[2]["intake_id"] and len(submit.calls) == 2


async def test_run_poller_stops_promptly_during_a_long_interval(upstream):
    upstream.replies.append(Reply())
    stop = asyncio.Event()
    submit = FakeSubmit()
    task = asyncio.create_task(run_poller(config(upstream.url, interval_s=3600), submit, stop,
                                          environ=ENV))
    while not submit.calls:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert len(submit.calls) == 1


def test_paths():
    doc = {"data": [{"v": 1, "p": [{"x": 5}]}, {"v": 2}, 3], "n": None}
    assert select(doc, compile_path("data[*].v")) == [1, 2]
    assert select(doc, compile_path("data[0].p[*].x")) == [5]
    assert select(doc, compile_path("data[9]")) == []
    assert select(doc, compile_path("")) == [doc]
    assert select([1, 2], compile_path("[*]")) == [1, 2]
    for bad in ("a..b", "a[x]", "a]", "[*]x", "."):
        with pytest.raises(ValueError):
            compile_path(bad)


def test_mapping_validation():
    with pytest.raises(ValidationError):
        PollMapping(units={"p1": "bogus"})
    with pytest.raises(ValidationError):
        PollMapping(timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        PollMapping(ts_format="yesterday")
    with pytest.raises(ValidationError):
        PollMapping(items="data[")
    with pytest.raises(ValidationError):
        PollerConfig(name="Bad Name", tenant="ltown", url="http://x")


def test_parse_polled_wall_clock_and_epoch_formats():
    m = PollMapping(items="rows[*]", sensor_id="T1", ts="0", value="1",
                    units={"T1": "cm"}, ts_format="%d/%m/%Y %H:%M", timezone="Europe/Rome")
    # a row as an object with string keys "0"/"1" (paths are keys, not list indexes)
    body = json.dumps({"rows": [{"0": "01/01/2019 01:00", "1": 310},
                                {"0": "31/10/2021 02:30", "1": 311},
                                {"0": "01/01/2019 01:05", "1": None}]}).encode()
    r = parse_polled(body, {"mapping": m.model_dump_json()}, received_at_ns=JAN1_2019_NS)
    assert (r.series[0].sensor_id, r.series[0].timestamps_ns, r.series[0].values) == (
        "T1", [JAN1_2019_NS], [3.1])
    assert [x.reason for x in r.rejected] == ["ambiguous_local_time", "missing"]

    epoch = PollMapping(ts_format="epoch_s", units={"a": "m"})
    r = parse_polled(b'[{"sensor": "a", "ts": 1546300800, "value": 1}, {"x": 1}]',
                     {"mapping": epoch.model_dump_json()}, received_at_ns=JAN1_2019_NS)
    assert r.series[0].timestamps_ns == [JAN1_2019_NS]
    assert [x.reason for x in r.rejected] == ["malformed_row"]


def test_parse_polled_refuses_bad_params_and_bodies():
    with pytest.raises(TenantConfigError):
        parse_polled(b"[]", {}, received_at_ns=0)
    with pytest.raises(TenantConfigError):
        parse_polled(b"[]", {"mapping": '{"items": 3}'}, received_at_ns=0)
    with pytest.raises(ContractError):
        parse_polled(b"<html>", {"mapping": PollMapping().model_dump_json()}, received_at_ns=0)
