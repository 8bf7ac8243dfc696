"""HTTP push intake: InfluxDB-compatible writes (Telegraf) and a JSON readings endpoint.

Thin: authenticate, bound and check the body cheaply, hand the bytes to ``submit``
(which stores them and records ``intake.received``), answer.  Parsing happens later,
in the normalise processor, from the stored bytes, so a replay parses them again.

Endpoints (every one needs a token with the ``write`` scope; the tenant is the token's):

- ``POST /api/v2/write?org=&bucket=&precision=`` (InfluxDB v2): ``Authorization: Token
  <token>`` -> 204 with ``X-Tagus-Intake-Id``.
- ``POST /write?db=&precision=`` (InfluxDB v1): ``u=``/``p=`` query parameters (``p`` is
  the token), HTTP Basic (the password is the token) or ``Authorization: Token`` -> 204.
- ``POST /v1/readings``: JSON push body (see ``producers.formats.jsonpush``),
  ``Authorization: Bearer <token>`` -> 202 ``{"intake_id": ...}``.
- ``GET|HEAD /ping`` -> 204 (InfluxDB v1 clients check it).

Bodies may be gzip-compressed (``Content-Encoding: gzip``); both the received and the
inflated size are bounded by ``max_body_bytes`` (413 beyond).  Errors are JSON
``{"code": ..., "message": ...}`` with InfluxDB's codes (``invalid``, ``unauthorized``,
``forbidden``, ``request too large``, ``unsupported media type``, ``unavailable``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import zlib
from collections.abc import Awaitable
from typing import Protocol

import structlog
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from contracts.errors import ContractError, ForbiddenError, TransientError
from contracts.intake import RawIntakeReceived
from bus.tokens import SCOPES, TokenRecord
from contracts.push import check_push_shape, normalise_precision

MAX_BODY_BYTES = 64 * 1024 * 1024
LINE_PROTOCOL = "text/x-influx-line-protocol"
JSON = "application/json"

log = structlog.get_logger("tagus.intake.http")


class Submit(Protocol):
    """The raw-intake boundary: store the bytes, record ``intake.received``, return it."""

    def __call__(self, *, tenant: str, source: str, content_type: str, body: bytes,
                 filename: str | None = None, mapping_id: str | None = None,
                 params: dict[str, str] | None = None) -> Awaitable[RawIntakeReceived]: ...


class Tokens(Protocol):
    """Who a token is (``bus.tokens.TokenFile`` re-reads the store when it changes)."""

    def authenticate(self, token: str | None, scope: str) -> TokenRecord: ...


class IntakeHTTPError(Exception):
    """A request the intake refuses; becomes ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _authorise(tokens: Tokens, token: str | None) -> TokenRecord:
    """The token's record if it may write; 401 if missing or unknown, 403 if read-only."""
    if not token:
        raise IntakeHTTPError(401, "unauthorized",
                              "missing token: send 'Authorization: Token <token>'")
    try:
        return tokens.authenticate(token, "write")
    except ForbiddenError as e:
        for scope in SCOPES:
            try:
                tokens.authenticate(token, scope)
            except ForbiddenError:
                continue
            raise IntakeHTTPError(403, "forbidden", str(e)) from None
        raise IntakeHTTPError(401, "unauthorized", "unknown token") from None


def _header_token(request: Request, schemes: tuple[str, ...]) -> str | None:
    """Token from ``Authorization: <Scheme> <token>`` (Basic: the password)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme not in schemes or not value:
        return None
    if scheme != "basic":
        return value
    try:
        _user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise IntakeHTTPError(401, "unauthorized", "malformed Basic credentials") from None
    return password or None


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data`` (one or more members) without producing more than ``limit`` bytes."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as e:
            raise IntakeHTTPError(400, "invalid", f"body is not valid gzip: {e}") from None
        if len(out) > limit:
            raise IntakeHTTPError(413, "request too large",
                                  f"inflated body exceeds {limit} bytes")
        if not inflater.eof:
            raise IntakeHTTPError(400, "invalid", "gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise IntakeHTTPError(413, "request too large",
                              f"body of {declared} bytes exceeds {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise IntakeHTTPError(413, "request too large", f"body exceeds {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = _gunzip(bytes(buf), limit)
    elif encoding in ("", "identity"):
        body = bytes(buf)
    else:
        raise IntakeHTTPError(415, "unsupported media type",
                              f"Content-Encoding must be gzip or identity; got {encoding!r}")
    if not body or body.isspace():
        raise IntakeHTTPError(400, "invalid", "body is empty")
    return body


def create_intake_app(tokens: Tokens, submit: Submit, *,
                      max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The intake app.  ``submit`` is called once per accepted request (see module doc)."""
    app = FastAPI(title="Tagus intake")

    @app.exception_handler(IntakeHTTPError)
    async def _refused(request: Request, e: IntakeHTTPError) -> JSONResponse:
        log.info("intake_refused", path=request.url.path, status=e.status, code=e.code,
                 message=e.message)
        return JSONResponse({"code": e.code, "message": e.message}, status_code=e.status)

    async def _accept(record: TokenRecord, request: Request, *, source: str,
                      content_type: str, params: dict[str, str], mapping: str | None
                      ) -> RawIntakeReceived:
        body = await _read_body(request, max_body_bytes)
        if content_type == LINE_PROTOCOL:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise IntakeHTTPError(400, "invalid", f"line protocol must be UTF-8: {e}") \
                    from None
        else:
            try:
                check_push_shape(body)
            except ContractError as e:
                raise IntakeHTTPError(400, "invalid", str(e)) from None
        try:
            event = await submit(tenant=record.tenant, source=source,
                                 content_type=content_type, body=body, mapping_id=mapping,
                                 params=params)
        except TransientError as e:
            raise IntakeHTTPError(503, "unavailable", f"intake store unavailable: {e}") \
                from None
        log.info("intake_accepted", tenant=record.tenant, token=record.name, source=source,
                 size_bytes=len(body), intake_id=event.event_id)
        return event

    def _lp_params(precision: str | None, default: str, **extra: str | None) -> dict[str, str]:
        try:
            params = {"precision": normalise_precision(precision, default=default)}
        except ContractError as e:
            raise IntakeHTTPError(400, "invalid", str(e)) from None
        params.update({k: v for k, v in extra.items() if v})
        return params

    @app.post("/api/v2/write", status_code=204)
    async def write_v2(request: Request, org: str | None = None, bucket: str | None = None,
                       precision: str | None = None, mapping: str | None = None) -> Response:
        record = _authorise(tokens, _header_token(request, ("token", "bearer")))
        params = _lp_params(precision, "ns", org=org, bucket=bucket)
        event = await _accept(record, request, source="line-protocol",
                              content_type=LINE_PROTOCOL, params=params, mapping=mapping)
        return Response(status_code=204, headers={"X-Tagus-Intake-Id": event.event_id})

    @app.post("/write", status_code=204)
    async def write_v1(request: Request, db: str | None = None, precision: str | None = None,
                       u: str | None = None, p: str | None = None,
                       mapping: str | None = None) -> Response:
        token = p or _header_token(request, ("token", "basic"))
        record = _authorise(tokens, token)
        params = _lp_params(precision, "ns", db=db)
        event = await _accept(record, request, source="line-protocol",
                              content_type=LINE_PROTOCOL, params=params, mapping=mapping)
        return Response(status_code=204, headers={"X-Tagus-Intake-Id": event.event_id})

    @app.post("/v1/readings", status_code=202)
    async def push_readings(request: Request, mapping: str | None = None) -> JSONResponse:
        record = _authorise(tokens, _header_token(request, ("bearer",)))
        event = await _accept(record, request, source="json-push", content_type=JSON,
                              params={}, mapping=mapping)
        return JSONResponse({"intake_id": event.event_id}, status_code=202,
                            headers={"X-Tagus-Intake-Id": event.event_id})

    @app.api_route("/ping", methods=["GET", "HEAD"], status_code=204)
    async def ping() -> Response:
        return Response(status_code=204)

    return app


async def serve_intake(app: FastAPI, host: str = "127.0.0.1", port: int = 8086, *,
                       stop: asyncio.Event | None = None) -> None:
    """Serve ``app`` on the running event loop until ``stop`` is set (or a signal).

    Runs in the caller's loop so ``submit`` can use the process's NATS connection.
    """
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    if stop is None:
        await serving
        return
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
