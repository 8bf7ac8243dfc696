"""HTTP push intake: InfluxDB-compatible writes (Telegraf) and a JSON readings endpoint.

Thin: authenticate, bound and check the body cheaply, hand the bytes to ``submit``
(which stores them and records ``intake.received``), answer.  Parsing happens later,
in the normalise processor, from the stored bytes, so a replay parses them again.

Endpoints (every one needs a token with the ``write`` scope; the tenant is the token's).
Every door takes ``Authorization: Token <token>`` and ``Authorization: Bearer <token>``:

- ``POST /api/v2/write?org=&bucket=&precision=`` (InfluxDB v2) -> 204 with
  ``X-Tagus-Intake-Id``.  ``org`` (or ``orgID``), if given, must be the token's tenant
  (403 otherwise: a write never lands in another tenant than the one it names).
  ``bucket`` is recorded in the intake params but does not route: a tenant's readings
  are one set, named by measurement, tags and field.
- ``POST /write?db=&precision=`` (InfluxDB v1): also ``u=``/``p=`` query parameters
  (``p`` is the token) or HTTP Basic (the password is the token) -> 204.  ``db`` is
  recorded like ``bucket``.
- ``POST /v1/readings``: JSON push body (see ``contracts.push``) -> 202
  ``{"intake_id": ...}``.
- ``GET|HEAD /ping`` -> 204 (InfluxDB v1 clients check it).

``?mapping=<id>`` names one of the tenant's registered mappings (404 if it has none by
that name).  Every request is new data (points without a timestamp take the receive
time); a client that retries may send ``Idempotency-Key: <key>``: a retry with the same
key and body returns the first intake id and stores nothing again, the same key with
another body is 422.

Bodies may be gzip-compressed (``Content-Encoding: gzip``, one or more members); both
the received and the inflated size are bounded by ``max_body_bytes`` (413 beyond).
Inflating and checking a body run in a worker thread, in time linear in its size, so
the service keeps answering meanwhile.  When NATS is down, writes are answered at once
with 503 and ``Retry-After``.  Errors are JSON ``{"code": ..., "message": ...}`` with
InfluxDB's codes (``invalid``, ``unauthorized``, ``forbidden``, ``not found``,
``request too large``, ``unsupported media type``, ``unprocessable entity``,
``unavailable``); the message says what to change.
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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bus import metrics
from bus.storage import mapping_key
from bus.tokens import SCOPES, TokenRecord
from contracts.errors import ContractError, ForbiddenError, TenantConfigError, TransientError
from contracts.intake import RawIntakeReceived
from contracts.push import check_push_shape, normalise_precision
from producers.intake import IdempotencyConflict, check_idempotency_key

MAX_BODY_BYTES = 64 * 1024 * 1024
LINE_PROTOCOL = "text/x-influx-line-protocol"
JSON = "application/json"
RETRY_AFTER_S = 5
MAX_INFLATING = 2  # bodies inflated and checked at once (worker threads)

log = structlog.get_logger("tagus.intake.http")

_DOORS = ("/api/v2/write", "/write", "/v1/readings")  # metric attribute: the door's path

_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not found",
          405: "method not allowed", 413: "request too large", 415: "unsupported media type",
          422: "unprocessable entity", 429: "too many requests", 503: "unavailable"}


class Submit(Protocol):
    """The raw-intake boundary: store the bytes, record ``intake.received``, return it.

    Called with ``identity="request"`` (every push is new data) and the client's
    ``idempotency_key`` if it sent one; see ``producers.intake``.
    """

    def __call__(self, *, tenant: str, source: str, content_type: str, body: bytes,
                 filename: str | None = None, mapping_id: str | None = None,
                 params: dict[str, str] | None = None, identity: str = "content",
                 idempotency_key: str | None = None) -> Awaitable[RawIntakeReceived]: ...


class Tokens(Protocol):
    """Who a token is (``bus.tokens.TokenFile`` re-reads the store when it changes)."""

    def authenticate(self, token: str | None, scope: str) -> TokenRecord: ...


class IntakeHTTPError(Exception):
    """A request the intake refuses; becomes ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


# ---------------------------------------------------------------- authentication


def _authorise(tokens: Tokens, token: str | None, how: str) -> TokenRecord:
    """The token's record if it may write; 401 if missing or unknown, 403 if read-only."""
    if not token:
        raise IntakeHTTPError(401, "unauthorized", f"missing token: send {how}")
    try:
        return tokens.authenticate(token, "write")
    except ForbiddenError as e:
        for scope in SCOPES:
            try:
                tokens.authenticate(token, scope)
            except ForbiddenError:
                continue
            raise IntakeHTTPError(403, "forbidden", f"{e}; use a token issued with "
                                  f"--scopes write") from None
        raise IntakeHTTPError(401, "unauthorized",
                              "unknown token (revoked, or never issued): ask for a token "
                              "with `tagus token issue --scopes write`") from None


def _header_token(request: Request, schemes: tuple[str, ...], how: str) -> str | None:
    """Token from ``Authorization: <Scheme> <token>`` (Basic: the password); None if the
    header is absent, 401 naming the accepted schemes if it uses another one."""
    header = request.headers.get("authorization", "").strip()
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme not in schemes:
        raise IntakeHTTPError(401, "unauthorized",
                              f"Authorization scheme {header.partition(' ')[0]!r} is not "
                              f"accepted here; send {how}")
    if not value:
        raise IntakeHTTPError(401, "unauthorized", f"the Authorization header carries no "
                                                   f"token; send {how}")
    if scheme != "basic":
        return value
    try:
        _user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise IntakeHTTPError(401, "unauthorized", "malformed Basic credentials: expected "
                              "base64 of 'user:token'") from None
    return password or None


_HOW = "'Authorization: Token <token>' or 'Authorization: Bearer <token>'"
_HOW_V1 = _HOW + ", HTTP Basic with the token as password, or ?u=<user>&p=<token>"


# ---------------------------------------------------------------- bodies


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data`` (one or more members) without producing more than ``limit`` bytes.

    Linear in ``len(data)``: each member is fed in pieces that start small and double,
    so what zlib copies back as unused input is at most about twice the member's size
    (one call on the whole remainder per member would copy it again for every member).
    """
    out = bytearray()
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        step = 256
        while True:
            piece = view[pos:pos + step]
            if not piece:
                raise IntakeHTTPError(400, "invalid", "gzip body is truncated")
            try:
                out += inflater.decompress(piece, limit + 1 - len(out))
            except zlib.error as e:
                raise IntakeHTTPError(400, "invalid", f"body is not valid gzip: {e}") from None
            if len(out) > limit:
                raise IntakeHTTPError(413, "request too large",
                                      f"inflated body exceeds {limit} bytes")
            if inflater.eof:
                pos += len(piece) - len(inflater.unused_data)
                break
            pos += len(piece)
            step = min(2 * step, 1 << 20)
    return bytes(out)


def _decode_body(raw: bytes, encoding: str, content_type: str, limit: int) -> bytes:
    """The inflated, checked body (runs in a worker thread); IntakeHTTPError if refused."""
    body = _gunzip(raw, limit) if encoding == "gzip" else raw
    if not body or body.isspace():
        raise IntakeHTTPError(400, "invalid", "body is empty")
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
    return body


async def _read_raw(request: Request, limit: int) -> tuple[bytes, str]:
    """The body as received and its (checked) Content-Encoding."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding not in ("gzip", "identity"):
        raise IntakeHTTPError(415, "unsupported media type",
                              f"Content-Encoding must be gzip or identity; got {encoding!r}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise IntakeHTTPError(413, "request too large",
                              f"body of {declared} bytes exceeds {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise IntakeHTTPError(413, "request too large", f"body exceeds {limit} bytes")
    return bytes(buf), encoding


# ---------------------------------------------------------------- the app


def create_intake_app(tokens: Tokens, submit: Submit, *,
                      max_body_bytes: int = MAX_BODY_BYTES,
                      retry_after_s: int = RETRY_AFTER_S) -> FastAPI:
    """The intake app.  ``submit`` is called once per accepted request (see module doc)."""
    app = FastAPI(title="Tagus intake")
    inflating = asyncio.Semaphore(MAX_INFLATING)

    @app.exception_handler(IntakeHTTPError)
    async def _refused(request: Request, e: IntakeHTTPError) -> JSONResponse:
        log.info("intake_refused", path=request.url.path, status=e.status, code=e.code,
                 message=e.message)
        path = request.url.path
        metrics.add("tagus.intake.requests", 1, door=path if path in _DOORS else "other",
                    outcome="refused", status=e.status)
        return JSONResponse({"code": e.code, "message": e.message}, status_code=e.status,
                            headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no endpoint {request.url.path}; the intake serves POST "
                        "/api/v2/write, POST /write, POST /v1/readings and GET /ping",
                   405: f"{request.method} is not allowed on {request.url.path}"
                   }.get(e.status_code, str(e.detail))
        return JSONResponse({"code": _CODES.get(e.status_code, "invalid"), "message": message},
                            status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}"
                          for err in e.errors())
        return JSONResponse({"code": "invalid", "message": where}, status_code=400)

    def _mapping(record: TokenRecord, mapping: str | None) -> str | None:
        if not mapping:
            return None
        try:
            mapping_key(record.tenant, mapping)
        except ContractError as e:
            raise IntakeHTTPError(400, "invalid", f"mapping={mapping!r}: {e}") from None
        return mapping

    def _idempotency_key(request: Request) -> str | None:
        key = request.headers.get("idempotency-key")
        if key is None:
            return None
        try:
            return check_idempotency_key(key.strip())
        except ContractError as e:
            raise IntakeHTTPError(400, "invalid", str(e)) from None

    async def _accept(record: TokenRecord, request: Request, *, source: str,
                      content_type: str, params: dict[str, str], mapping: str | None
                      ) -> RawIntakeReceived:
        mapping_id = _mapping(record, mapping)
        key = _idempotency_key(request)
        raw, encoding = await _read_raw(request, max_body_bytes)
        async with inflating:
            body = await asyncio.to_thread(_decode_body, raw, encoding, content_type,
                                           max_body_bytes)
        del raw
        try:
            event = await submit(tenant=record.tenant, source=source,
                                 content_type=content_type, body=body, mapping_id=mapping_id,
                                 params=params, identity="request", idempotency_key=key)
        except TransientError as e:
            raise IntakeHTTPError(503, "unavailable",
                                  f"intake store unavailable ({e}); retry in {retry_after_s} s",
                                  headers={"Retry-After": str(retry_after_s)}) from None
        except IdempotencyConflict as e:
            raise IntakeHTTPError(422, "unprocessable entity", str(e)) from None
        except TenantConfigError as e:
            raise IntakeHTTPError(404, "not found", f"mapping={mapping}: {e}; or leave "
                                  "mapping= out") from None
        except ContractError as e:
            raise IntakeHTTPError(400, "invalid", str(e)) from None
        log.info("intake_accepted", tenant=record.tenant, token=record.name, source=source,
                 size_bytes=len(body), intake_id=event.event_id)
        path = request.url.path
        metrics.add("tagus.intake.requests", 1, door=path if path in _DOORS else "other",
                    outcome="accepted", status=202 if path == "/v1/readings" else 204)
        return event

    def _lp_params(precision: str | None, default: str, **extra: str | None) -> dict[str, str]:
        try:
            params = {"precision": normalise_precision(precision, default=default)}
        except ContractError as e:
            raise IntakeHTTPError(400, "invalid", str(e)) from None
        params.update({k: v for k, v in extra.items() if v})
        return params

    def _check_org(record: TokenRecord, org: str | None, name: str) -> None:
        if org not in (None, "", record.tenant):
            raise IntakeHTTPError(
                403, "forbidden", f"{name}={org!r} is not the token's tenant: token "
                f"{record.name!r} writes for {record.tenant!r}; send {name}={record.tenant} "
                f"or leave {name} out")

    @app.post("/api/v2/write", status_code=204)
    async def write_v2(request: Request, org: str | None = None,
                       orgID: str | None = None,  # noqa: N803 - InfluxDB's parameter name
                       bucket: str | None = None, precision: str | None = None,
                       mapping: str | None = None) -> Response:
        record = _authorise(tokens, _header_token(request, ("token", "bearer"), _HOW), _HOW)
        _check_org(record, org, "org")
        _check_org(record, orgID, "orgID")
        params = _lp_params(precision, "ns", org=org or orgID, bucket=bucket)
        event = await _accept(record, request, source="line-protocol",
                              content_type=LINE_PROTOCOL, params=params, mapping=mapping)
        return Response(status_code=204, headers={"X-Tagus-Intake-Id": event.event_id})

    @app.post("/write", status_code=204)
    async def write_v1(request: Request, db: str | None = None, precision: str | None = None,
                       u: str | None = None, p: str | None = None,
                       mapping: str | None = None) -> Response:
        token = p or _header_token(request, ("token", "bearer", "basic"), _HOW_V1)
        record = _authorise(tokens, token, _HOW_V1)
        params = _lp_params(precision, "ns", db=db)
        event = await _accept(record, request, source="line-protocol",
                              content_type=LINE_PROTOCOL, params=params, mapping=mapping)
        return Response(status_code=204, headers={"X-Tagus-Intake-Id": event.event_id})

    @app.post("/v1/readings", status_code=202)
    async def push_readings(request: Request, mapping: str | None = None) -> JSONResponse:
        record = _authorise(tokens, _header_token(request, ("bearer", "token"), _HOW), _HOW)
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
