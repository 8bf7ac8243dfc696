"""Who is asking: the tenant of a ``read`` token, never a parameter.

``Authorization: Bearer <token>`` or ``X-API-Key: <token>``.  The token view is
``app.state.tokens``: anything with ``authenticate(token, scope) -> TokenRecord`` that
raises ``ForbiddenError`` for an unknown token or a missing scope (``bus.tokens.TokenFile``
today, re-read when the file changes).  Open-source QuestDB has no per-table
permissions, so this is the tenant boundary: every query binds the token's tenant.
"""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from projections.api.errors import Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


async def reader_tenant(request: Request,
                        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
                        api_key: str | None = Security(_api_key)) -> str:
    """The tenant of the caller's token, which must grant ``read``."""
    return _authenticate(request, bearer, api_key, "read").tenant


def caller(scope: str):
    """A dependency: the caller's token record (tenant, name), which must grant ``scope``
    (``operate`` for tasks and approvals, ``admin`` for configuration)."""

    async def dependency(request: Request,
                         bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
                         api_key: str | None = Security(_api_key)):
        return _authenticate(request, bearer, api_key, scope)

    return dependency


def _authenticate(request: Request, bearer, api_key, scope: str):
    token = bearer.credentials if bearer else api_key
    if not token:
        sent = request.headers.get("authorization", "").strip()
        scheme = sent.split(" ", 1)[0] if sent else ""
        wrong = (f"the Authorization scheme {scheme[:20]!r} is not accepted; " if scheme
                 else "")
        raise Unauthenticated(f"{wrong}send the tenant's token as 'Authorization: Bearer "
                              "<token>' or 'X-API-Key: <token>'")
    record = request.app.state.tokens.authenticate(token, scope)
    request.state.tenant = record.tenant
    return record
