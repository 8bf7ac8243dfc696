"""HTTP intake: Telegraf-compatible auth variants, gzip bounds, error answers.

``submit`` (the raw-intake store) is the boundary to the rest of Tagus and is faked
here by a recorder; everything else is the real app, in process and over a real
uvicorn socket.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest

from contracts.base import new_id, utc_now
from contracts.errors import TransientError
from contracts.intake import RawIntakeReceived
from bus.tokens import TokenStore
from ops.dev.stack import free_port
from producers.http_intake import create_intake_app, serve_intake

LP = b"flow,site=p227,unit=m3/h value=83.93 1546300800000000000\n"
PUSH = msgspec.json.encode({"readings": [{"sensor": "p227", "ts": "2019-01-01T00:00:00Z",
                                           "value": 83.93, "unit": "m3/h"}]})


@dataclass
class FakeSubmit:
    calls: list[dict[str, Any]] = field(default_factory=list)
    error: Exception | None = None

    async def __call__(self, **kw: Any) -> RawIntakeReceived:
        if self.error:
            raise self.error
        self.calls.append(kw)
        return RawIntakeReceived(
            event_id=new_id(), tenant=kw["tenant"], occurred_at=utc_now(),
            recorded_at=utc_now(), source=kw["source"], filename=kw.get("filename"),
            bucket="intake", object_name="x", sha256="0" * 64, size_bytes=len(kw["body"]),
            content_type=kw["content_type"], params=kw.get("params") or {})


@dataclass
class Intake:
    client: httpx.AsyncClient
    submit: FakeSubmit
    write: str
    read: str
    other_tenant: str


def _store() -> tuple[TokenStore, str, str, str]:
    store = TokenStore([])
    write = store.issue("ltown", "telegraf", ("write",))
    read = store.issue("ltown", "dashboard", ("read",))
    other = store.issue("ferrara", "scada", ("read", "write"))
    return store, write, read, other


@pytest.fixture
async def intake():
    store, write, read, other = _store()
    submit = FakeSubmit()
    app = create_intake_app(store, submit, max_body_bytes=1024 * 1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield Intake(client, submit, write, read, other)


async def test_v2_write_with_token_submits_raw_bytes_for_the_tokens_tenant(intake):
    r = await intake.client.post(
        "/api/v2/write", params={"org": "ltown", "bucket": "scada", "precision": "ns"},
        headers={"Authorization": f"Token {intake.write}"}, content=LP)
    assert r.status_code == 204
    [call] = intake.submit.calls
    assert r.headers["X-Tagus-Intake-Id"]
    assert call == {"tenant": "ltown", "source": "line-protocol",
                    "content_type": "text/x-influx-line-protocol", "body": LP,
                    "mapping_id": None,
                    "params": {"precision": "ns", "org": "ltown", "bucket": "scada"}}


async def test_the_tenant_comes_from_the_token_not_the_org(intake):
    r = await intake.client.post("/api/v2/write", params={"org": "ltown", "bucket": "b"},
                                 headers={"Authorization": f"Token {intake.other_tenant}"},
                                 content=LP)
    assert r.status_code == 204
    assert intake.submit.calls[0]["tenant"] == "ferrara"


@pytest.mark.parametrize(("path", "precision", "expected"), [
    ("/api/v2/write", None, "ns"), ("/api/v2/write", "s", "s"), ("/api/v2/write", "us", "us"),
    ("/write", None, "ns"), ("/write", "u", "us"), ("/write", "n", "ns"), ("/write", "ms", "ms"),
])
async def test_precision_is_passed_in_canonical_form(intake, path, precision, expected):
    params = {"precision": precision} if precision else {}
    r = await intake.client.post(path, params=params, content=LP,
                                 headers={"Authorization": f"Token {intake.write}"})
    assert r.status_code == 204
    assert intake.submit.calls[0]["params"]["precision"] == expected


async def test_bad_precision_is_400_in_influx_style(intake):
    r = await intake.client.post("/api/v2/write", params={"precision": "d"}, content=LP,
                                 headers={"Authorization": f"Token {intake.write}"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid" and "precision" in r.json()["message"]
    assert intake.submit.calls == []


async def test_v1_auth_variants(intake):
    basic = base64.b64encode(f"telegraf:{intake.write}".encode()).decode()
    variants = [
        ({"db": "scada", "u": "telegraf", "p": intake.write}, {}),
        ({"db": "scada"}, {"Authorization": f"Basic {basic}"}),
        ({"db": "scada"}, {"Authorization": f"Token {intake.write}"}),
    ]
    for params, headers in variants:
        r = await intake.client.post("/write", params=params, headers=headers, content=LP)
        assert r.status_code == 204, r.text
    assert [c["tenant"] for c in intake.submit.calls] == ["ltown"] * 3
    assert intake.submit.calls[0]["params"] == {"precision": "ns", "db": "scada"}


async def test_gzip_body_is_inflated_before_submit(intake):
    r = await intake.client.post("/api/v2/write", content=gzip.compress(LP * 100),
                                 headers={"Authorization": f"Token {intake.write}",
                                          "Content-Encoding": "gzip"})
    assert r.status_code == 204
    assert intake.submit.calls[0]["body"] == LP * 100


async def test_concatenated_gzip_members_are_all_inflated(intake):
    body = gzip.compress(LP) + gzip.compress(LP)
    r = await intake.client.post("/api/v2/write", content=body,
                                 headers={"Authorization": f"Token {intake.write}",
                                          "Content-Encoding": "gzip"})
    assert r.status_code == 204
    assert intake.submit.calls[0]["body"] == LP * 2


async def test_gzip_bomb_is_413(intake):
    bomb = gzip.compress(b"0" * (20 * 1024 * 1024), compresslevel=9)  # ~20 KiB on the wire
    assert len(bomb) < 1024 * 1024
    r = await intake.client.post("/api/v2/write", content=bomb,
                                 headers={"Authorization": f"Token {intake.write}",
                                          "Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert r.json()["code"] == "request too large"
    assert intake.submit.calls == []


async def test_gzip_bomb_is_413_with_the_default_limit():
    store, write, _, _ = _store()
    submit = FakeSubmit()
    app = create_intake_app(store, submit)  # 64 MiB
    bomb = gzip.compress(b"\n" * (65 * 1024 * 1024), compresslevel=9)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://intake") as client:
        r = await client.post("/api/v2/write", content=bomb, headers={
            "Authorization": f"Token {write}", "Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert submit.calls == []


async def test_oversized_plain_body_is_413(intake):
    r = await intake.client.post("/api/v2/write", content=LP * 20_000,
                                 headers={"Authorization": f"Token {intake.write}"})
    assert r.status_code == 413
    assert intake.submit.calls == []


@pytest.mark.parametrize(("body", "encoding", "status"), [
    (b"", None, 400), (b" \n\n", None, 400), (b"m v=\xff\n", None, 400),
    (b"not gzip", "gzip", 400), (gzip.compress(LP)[:-8], "gzip", 400),
    (gzip.compress(b""), "gzip", 400), (LP, "br", 415),
])
async def test_bad_bodies_are_refused(intake, body, encoding, status):
    headers = {"Authorization": f"Token {intake.write}"}
    if encoding:
        headers["Content-Encoding"] = encoding
    r = await intake.client.post("/api/v2/write", content=body, headers=headers)
    assert r.status_code == status
    assert set(r.json()) == {"code", "message"}
    assert intake.submit.calls == []


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "unauthorized"),
    ({"Authorization": "Token tgs_not_a_real_token"}, 401, "unauthorized"),
    ({"Authorization": "Basic !!!"}, 401, "unauthorized"),
    ({"Authorization": "Token"}, 401, "unauthorized"),
])
async def test_missing_or_unknown_token_is_401(intake, headers, status, code):
    for path in ("/api/v2/write", "/write"):
        r = await intake.client.post(path, content=LP, headers=headers)
        assert (r.status_code, r.json()["code"]) == (status, code)
    assert intake.submit.calls == []


async def test_token_without_write_scope_is_403(intake):
    r = await intake.client.post("/api/v2/write", content=LP,
                                 headers={"Authorization": f"Token {intake.read}"})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert "write" in r.json()["message"]
    r = await intake.client.post("/v1/readings", content=PUSH,
                                 headers={"Authorization": f"Bearer {intake.read}"})
    assert r.status_code == 403
    assert intake.submit.calls == []


async def test_json_push_is_202_with_the_intake_id(intake):
    r = await intake.client.post("/v1/readings", content=PUSH, params={"mapping": "scada"},
                                 headers={"Authorization": f"Bearer {intake.write}",
                                          "Content-Type": "application/json"})
    assert r.status_code == 202
    [call] = intake.submit.calls
    assert r.json() == {"intake_id": r.headers["X-Tagus-Intake-Id"]}
    assert (call["tenant"], call["source"], call["content_type"], call["body"],
            call["mapping_id"]) == ("ltown", "json-push", "application/json", PUSH, "scada")


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b'{"rows": []}', b""])
async def test_json_push_with_the_wrong_shape_is_400(intake, body):
    r = await intake.client.post("/v1/readings", content=body,
                                 headers={"Authorization": f"Bearer {intake.write}"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid"
    assert intake.submit.calls == []


async def test_json_push_needs_bearer(intake):
    r = await intake.client.post("/v1/readings", content=PUSH)
    assert r.status_code == 401


async def test_store_down_is_503_so_telegraf_retries(intake):
    intake.submit.error = TransientError("object store unavailable")
    r = await intake.client.post("/api/v2/write", content=LP,
                                 headers={"Authorization": f"Token {intake.write}"})
    assert (r.status_code, r.json()["code"]) == (503, "unavailable")


async def test_ping(intake):
    assert (await intake.client.get("/ping")).status_code == 204



async def test_real_server_accepts_gzip_line_protocol_and_stops():
    store, write, _, _ = _store()
    submit = FakeSubmit()
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve_intake(create_intake_app(store, submit),
                                              "127.0.0.1", port, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    await client.get("/ping")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            r = await client.post("/api/v2/write", params={"bucket": "b", "precision": "s"},
                                  content=gzip.compress(LP),
                                  headers={"Authorization": f"Token {write}",
                                           "Content-Encoding": "gzip"})
        assert r.status_code == 204
        assert submit.calls[0]["body"] == LP
        assert submit.calls[0]["params"] == {"precision": "s", "bucket": "b"}
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)
