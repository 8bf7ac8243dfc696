"""Every error the API answers, as JSON ``{"error", "detail"}`` (+ parameter, retry_after_s).

One class per cause, each a subclass of the Tagus error it is (``contracts.errors``);
``install`` maps them to HTTP.  What a client can cause is a 4xx whose ``detail``
says what to change; what the server or QuestDB causes is a 5xx, with ``Retry-After``
when waiting helps.  Nothing answers plain text, not even an unexpected crash.
"""

from __future__ import annotations

import asyncpg
import msgspec
import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.errors import (ContractError, ForbiddenError, NotFoundError, TenantConfigError,
                              TransientError)

log = structlog.get_logger("tagus.api")


class InvalidParameter(ContractError):
    """A query parameter is malformed or out of bounds (422); ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class Unauthenticated(ForbiddenError):
    """No usable token at all (401, unlike a wrong token: 403)."""


class Unavailable(TransientError):
    """Waiting helps: 503 unless a subclass says otherwise, always with ``Retry-After``."""

    status = 503
    code = "unavailable"


class TenantBusy(Unavailable):
    """The tenant already uses its share (queries or exports in flight): 429."""

    status = 429
    code = "too many requests"


class PoolExhausted(Unavailable):
    """Every pooled connection stayed busy for the acquire timeout (QuestDB is fine)."""

    code = "busy"


class DatabaseUnavailable(Unavailable):
    """QuestDB refused or dropped the connection."""


class QueryTimeout(Unavailable):
    """The request's database work outlived the query timeout (QuestDB hung or overloaded)."""

    status = 504
    code = "timeout"


# asyncpg's "could not talk to the server" family (PostgresError = the server answered no)
CONNECTION_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                     asyncpg.CannotConnectNowError)


def json_response(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(status: int, error: str, detail: str, parameter: str | None = None,
                   headers: dict | None = None, retry_after_s: int | None = None) -> Response:
    body: dict = {"error": error, "detail": detail}
    if parameter:
        body["parameter"] = parameter
    headers = dict(headers or {})
    if retry_after_s is not None:
        body["retry_after_s"] = retry_after_s
        headers["Retry-After"] = str(retry_after_s)
    return json_response(body, status, headers)


def _shown(value, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def install(app: FastAPI, retry_after_s: int) -> None:
    """Register the handlers that turn every exception into a JSON answer."""

    @app.exception_handler(Unauthenticated)
    async def _401(_, e):
        return error_response(401, "unauthenticated", str(e),
                              headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ForbiddenError)
    async def _403(_, e):
        return error_response(403, "forbidden", str(e))

    @app.exception_handler(NotFoundError)
    async def _404(_, e):
        return error_response(404, "not found", str(e))

    @app.exception_handler(InvalidParameter)
    async def _422(_, e):
        return error_response(422, "invalid parameter", e.message, e.parameter)

    @app.exception_handler(RequestValidationError)
    async def _422_fastapi(_, e):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ())]
        detail = str(first.get("msg", e))
        if "input" in first and first["input"] is not None:
            detail += f"; got {_shown(first['input'])}"
        return error_response(422, "invalid parameter", detail, loc[-1] if loc else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, e):
        words = {400: "bad request", 404: "not found", 405: "method not allowed"}
        return error_response(e.status_code, words.get(e.status_code, "error"), str(e.detail))

    @app.exception_handler(Unavailable)
    async def _unavailable(request, e):
        log.warning(e.code, path=request.url.path, detail=str(e))
        return error_response(e.status, e.code, str(e), retry_after_s=retry_after_s)

    async def _connection_lost(request, e):
        log.warning("questdb unavailable", path=request.url.path, error=str(e))
        return error_response(503, "unavailable", "QuestDB did not answer; retry later",
                              retry_after_s=retry_after_s)

    for cls in (*CONNECTION_ERRORS, TimeoutError):
        app.add_exception_handler(cls, _connection_lost)

    @app.exception_handler(TenantConfigError)
    async def _500_config(request, e):
        log.error("token store unusable", path=request.url.path, error=str(e))
        return error_response(500, "misconfigured", "the API's token store is invalid; "
                                                    "see its log")

    @app.exception_handler(asyncpg.PostgresError)
    async def _500_query(request, e):
        log.error("query failed", path=request.url.path, error=str(e))
        return error_response(500, "query failed", "QuestDB rejected the query; see the "
                                                   "API's log")

    @app.exception_handler(Exception)
    async def _500(request, e):
        log.exception("unexpected error", path=request.url.path, error=repr(e))
        return error_response(500, "internal error", "the API failed on this request; "
                                                     "see its log")
