"""Who is looking: sessions after a token login, and CSRF protection.

An operator logs in once with a tenant's token (``read`` at least); the console keeps a
session in this process's memory and hands the browser only its random id, in a cookie
that scripts cannot read (``HttpOnly``), sent only to this site (``SameSite=Lax``) and
only over TLS when the console is served over TLS (``Secure``).  Every request
re-checks the token with the token view, so a revoked or expired token, or a suspended
tenant, ends its sessions at once; the tenant and scopes are always the token's.

A session ends at logout, after ``idle_s`` without a request, or ``absolute_s`` after
login.  Sessions live in one process: behind several API replicas, route a browser to
the same replica (sticky sessions) or it logs in again.

CSRF: every session has a random token that each form carries (field ``csrf``) and each
script request sends (header ``X-CSRF-Token``); a state-changing request without it,
or with a foreign ``Origin``, is refused.  The login form itself carries a token bound
to a short-lived cookie (double submit), so nobody can log a browser into their tenant.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import Request

from bus.tokens import grants
from contracts.errors import ForbiddenError

SESSION_COOKIE = "tagus_session"
LOGIN_COOKIE = "tagus_login"


class LoginRequired(Exception):
    """No valid session: the console answers with its login page (``why`` says why)."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


class CsrfRefused(ForbiddenError):
    """A state-changing request without this session's CSRF token, or from another site."""


@dataclass
class Session:
    id: str
    token: str = field(repr=False)
    tenant: str
    name: str
    scopes: tuple[str, ...]
    csrf: str = field(repr=False)
    created: float
    seen: float


@dataclass(frozen=True)
class Operator:
    """The person at the console: the token's tenant, name and scopes."""

    tenant: str
    name: str
    scopes: tuple[str, ...]
    csrf: str
    session_id: str

    def can(self, scope: str) -> bool:
        return grants(self.scopes, scope)


class Sessions:
    """Console sessions of this process.  Times in seconds (monotonic clock)."""

    def __init__(self, *, idle_s: float = 1800.0, absolute_s: float = 12 * 3600.0,
                 max_sessions: int = 10_000, clock=time.monotonic) -> None:
        self.idle_s, self.absolute_s = idle_s, absolute_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def create(self, token: str, record) -> Session:
        now = self._clock()
        self._expire(now)
        if len(self._by_id) >= self.max_sessions:  # drop the least recently used
            oldest = min(self._by_id.values(), key=lambda s: s.seen)
            del self._by_id[oldest.id]
        s = Session(id=secrets.token_urlsafe(32), token=token, tenant=record.tenant,
                    name=record.name, scopes=tuple(record.scopes),
                    csrf=secrets.token_urlsafe(32), created=now, seen=now)
        self._by_id[s.id] = s
        return s

    def get(self, session_id: str | None) -> Session | None:
        """The live session, touched; None when unknown or expired (then forgotten)."""
        if not session_id:
            return None
        s = self._by_id.get(session_id)
        if s is None:
            return None
        now = self._clock()
        if now - s.seen > self.idle_s or now - s.created > self.absolute_s:
            del self._by_id[session_id]
            return None
        s.seen = now
        return s

    def end(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)

    def _expire(self, now: float) -> None:
        dead = [k for k, s in self._by_id.items()
                if now - s.seen > self.idle_s or now - s.created > self.absolute_s]
        for k in dead:
            del self._by_id[k]

    def __len__(self) -> int:
        return len(self._by_id)


def sessions_of(request: Request) -> Sessions:
    return request.app.state.console_sessions


def operator(request: Request) -> Operator:
    """The dependency of every console page: the session's operator, its token checked
    again (``read``); LoginRequired otherwise."""
    store = sessions_of(request)
    s = store.get(request.cookies.get(SESSION_COOKIE))
    if s is None:
        raise LoginRequired("your session has ended: log in again"
                            if request.cookies.get(SESSION_COOKIE) else "")
    try:
        record = request.app.state.tokens.authenticate(s.token, "read")
    except ForbiddenError:
        store.end(s.id)
        raise LoginRequired("the token of this session is no longer valid (revoked, "
                            "expired or the tenant suspended)") from None
    if record.tenant != s.tenant:  # cannot happen with sha256-named tokens; be sure
        store.end(s.id)
        raise LoginRequired("the token of this session changed tenant")
    s.scopes = tuple(record.scopes)
    request.state.tenant = s.tenant  # the API's request log names the tenant
    return Operator(tenant=s.tenant, name=s.name, scopes=s.scopes, csrf=s.csrf,
                    session_id=s.id)


def require(request: Request, who: Operator, scope: str) -> None:
    """ForbiddenError unless the session's token grants ``scope`` now."""
    s = sessions_of(request).get(who.session_id)
    if s is None:
        raise LoginRequired("your session has ended: log in again")
    request.app.state.tokens.authenticate(s.token, scope)  # ForbiddenError names the scope


def check_csrf(request: Request, who: Operator, sent: str | None) -> None:
    """Refuse a state-changing request that lacks this session's CSRF token (form field
    or ``X-CSRF-Token``) or comes from another origin."""
    check_origin(request)
    sent = sent or request.headers.get("x-csrf-token") or ""
    if not hmac.compare_digest(sent.encode(), who.csrf.encode()):
        raise CsrfRefused("the form is stale or did not come from this console (CSRF "
                          "token missing or wrong): reload the page and try again")


def check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:  # not sent: older browsers, same-origin navigation, scripts
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise CsrfRefused(f"a request from {origin[:80]!r} to this console is refused "
                          "(cross-site)")


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_nonce_matches(request: Request, sent: str | None) -> bool:
    held = request.cookies.get(LOGIN_COOKIE) or ""
    return bool(held) and hmac.compare_digest(held.encode(), (sent or "").encode())


def cookie_args(request: Request) -> dict:
    """HttpOnly, SameSite=Lax, path /, Secure when the request came over TLS."""
    return dict(httponly=True, samesite="lax", path="/",
                secure=request.url.scheme == "https")
