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
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest

from contracts.base import new_id, utc_now
from contracts.errors import TenantConfigError, TransientError
from contracts.intake import RawIntakeReceived
from bus.tokens import TokenStore
from ops.dev.stack import free_port
from producers.http_intake import _gunzip, create_intake_app, serve_intake
from producers.intake import IdempotencyConflict

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
                    "params": {"precision": "ns", "org": "ltown", "bucket": "scada"},
                    "identity": "request", "idempotency_key": None}


@pytest.mark.parametrize("org", ["org", "orgID"])
async def test_an_org_other_than_the_tokens_tenant_is_refused(intake, org):
    """Seen: alpha's token with org=beta wrote to alpha, silently."""
    r = await intake.client.post("/api/v2/write", params={org: "ltown", "bucket": "b"},
                                 headers={"Authorization": f"Token {intake.other_tenant}"},
                                 content=LP)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert f"{org}=ferrara" in r.json()["message"]  # what to send instead
    assert intake.submit.calls == []
    r = await intake.client.post("/api/v2/write", params={org: "ferrara"},
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


async def test_json_push_needs_a_token(intake):
    r = await intake.client.post("/v1/readings", content=PUSH)
    assert r.status_code == 401
    assert "Bearer <token>" in r.json()["message"]


@pytest.mark.parametrize("path", ["/api/v2/write", "/write", "/v1/readings"])
@pytest.mark.parametrize("scheme", ["Token", "Bearer", "bearer"])
async def test_every_door_takes_token_and_bearer(intake, path, scheme):
    """Seen: ``Authorization: Token x`` on /v1/readings got a 401 telling it to send Token."""
    body = PUSH if path == "/v1/readings" else LP
    r = await intake.client.post(path, content=body,
                                 headers={"Authorization": f"{scheme} {intake.write}"})
    assert r.status_code in (202, 204), r.text
    assert [c["tenant"] for c in intake.submit.calls] == ["ltown"]


async def test_an_unknown_auth_scheme_names_the_accepted_ones(intake):
    r = await intake.client.post("/v1/readings", content=PUSH,
                                 headers={"Authorization": f"Digest {intake.write}"})
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
    message = r.json()["message"]
    assert "'Digest'" in message and "Bearer <token>" in message and "Token <token>" in message
    assert intake.submit.calls == []


@pytest.mark.parametrize("mapping", ["../../x", "a/b", "x" * 200, "nosuch.x"])
async def test_a_malformed_mapping_id_is_400_naming_the_parameter(intake, mapping):
    r = await intake.client.post("/api/v2/write", params={"mapping": mapping}, content=LP,
                                 headers={"Authorization": f"Token {intake.write}"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid")
    assert "mapping=" in r.json()["message"] and "must match" in r.json()["message"]
    assert intake.submit.calls == []


async def test_an_unknown_mapping_is_404_saying_what_to_change(intake):
    """Seen: ``?mapping=nosuch`` answered 500; the helpful message reached only the log."""
    intake.submit.error = TenantConfigError(
        "tenant 'ltown' has no mapping 'nosuch'; register it with `tagus mapping put ...`")
    r = await intake.client.post("/v1/readings", params={"mapping": "nosuch"}, content=PUSH,
                                 headers={"Authorization": f"Bearer {intake.write}"})
    assert (r.status_code, r.json()["code"]) == (404, "not found")
    assert "no mapping 'nosuch'" in r.json()["message"]
    assert "mapping=" in r.json()["message"]


async def test_the_idempotency_key_reaches_submit_and_a_conflict_is_422(intake):
    headers = {"Authorization": f"Token {intake.write}", "Idempotency-Key": "batch-17"}
    r = await intake.client.post("/api/v2/write", content=LP, headers=headers)
    assert r.status_code == 204
    assert intake.submit.calls[0]["idempotency_key"] == "batch-17"
    intake.submit.error = IdempotencyConflict("Idempotency-Key 'batch-17' was used for ...")
    r = await intake.client.post("/api/v2/write", content=LP, headers=headers)
    assert (r.status_code, r.json()["code"]) == (422, "unprocessable entity")
    r = await intake.client.post("/api/v2/write", content=LP, headers={
        **headers, "Idempotency-Key": "\x01" + "k" * 300})
    assert (r.status_code, r.json()["code"]) == (400, "invalid")


async def test_unknown_paths_and_methods_answer_json(intake):
    r = await intake.client.post("/api/v1/write", content=LP)
    assert (r.status_code, r.json()["code"]) == (404, "not found")
    assert "/api/v2/write" in r.json()["message"]
    r = await intake.client.get("/api/v2/write")
    assert (r.status_code, r.json()["code"]) == (405, "method not allowed")


async def test_store_down_is_503_with_retry_after_so_telegraf_retries(intake):
    intake.submit.error = TransientError("object store unavailable")
    r = await intake.client.post("/api/v2/write", content=LP,
                                 headers={"Authorization": f"Token {intake.write}"})
    assert (r.status_code, r.json()["code"]) == (503, "unavailable")
    assert int(r.headers["Retry-After"]) > 0


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


# ---------------------------------------------------------------- hostile gzip (defect 5)

EMPTY_MEMBER = gzip.compress(b"")  # 20 bytes that inflate to nothing


def _inflate_seconds(size_bytes: int) -> float:
    body = EMPTY_MEMBER * (size_bytes // len(EMPTY_MEMBER))
    started = time.perf_counter()
    assert _gunzip(body, MAX) == b""
    return time.perf_counter() - started


MAX = 64 * 1024 * 1024


def test_many_empty_gzip_members_inflate_in_linear_time():
    """Seen: 1.6, 3.2 and 6.4 MB of empty members took 4, 23 and 96 s (quadratic)."""
    small = min(_inflate_seconds(400_000) for _ in range(3))
    large = _inflate_seconds(1_600_000)
    assert large < 1.0, f"1.6 MB of empty gzip members took {large:.1f} s"
    assert large < 6 * small + 0.05, (small, large)  # 4x the bytes: ~4x the time, not 16x


async def test_the_service_keeps_answering_while_a_hostile_body_is_inflated():
    store, write, _, _ = _store()
    submit = FakeSubmit()
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve_intake(create_intake_app(store, submit),
                                              "127.0.0.1", port, stop=stop))
    # 6.4 MB, 320k members: 96 s with the event loop blocked when inflating was quadratic
    hostile = EMPTY_MEMBER * (6_400_000 // len(EMPTY_MEMBER))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(100):
                try:
                    await client.get("/ping")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            started = time.perf_counter()
            post = asyncio.create_task(client.post(
                "/api/v2/write", content=hostile,
                headers={"Authorization": f"Token {write}", "Content-Encoding": "gzip"}))
            pings = []
            while not post.done():
                t = time.perf_counter()
                assert (await client.get("/ping")).status_code == 204
                pings.append(time.perf_counter() - t)
                await asyncio.sleep(0.02)
            r = await post
            took = time.perf_counter() - started
        assert (r.status_code, r.json()["message"]) == (400, "body is empty")
        assert took < 10, took
        assert pings, took  # /ping answered while the body was handled ...
        assert max(pings) < 1.0, pings  # ... at once
        assert submit.calls == []
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)
