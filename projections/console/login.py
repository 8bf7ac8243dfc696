"""``/login`` (a token, once) and ``/logout``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from contracts.errors import ForbiddenError
from projections.console import web
from projections.console.session import (
    LOGIN_COOKIE, SESSION_COOKIE, check_csrf, check_origin, cookie_args, login_nonce_matches,
    new_login_nonce, operator, sessions_of,
)

router = APIRouter(route_class=web.ConsoleRoute, include_in_schema=False)
LOGIN_NONCE_S = 3600


def _next(target: str | None) -> str:
    """Only a local path (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") \
            or target.startswith("/login"):
        return "/"
    return target


async def _login_page(request: Request, *, status: int = 200, problem: str = ""):
    nonce = new_login_nonce()
    response = await web.render(request, None, "login.html", status=status, nonce=nonce,
                                next=_next(request.query_params.get("next")),
                                why=request.query_params.get("why", ""), problem=problem)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_NONCE_S, **cookie_args(request))
    return response


@router.get("/login")
async def login_form(request: Request):
    return await _login_page(request)


@router.post("/login")
async def login(request: Request):
    check_origin(request)
    fields = await web.form(request)
    if not login_nonce_matches(request, fields.get("nonce")):
        return await _login_page(request, status=403, problem=(
            "the login form expired or did not come from this console: try again"))
    token = fields.get("token", "").strip()
    try:
        record = request.app.state.tokens.authenticate(token, "read")
    except ForbiddenError:
        return await _login_page(request, status=403, problem=(
            "this token is unknown, expired or revoked, or it does not grant 'read' "
            "(a write-only token feeds data, it cannot look)"))
    old = request.cookies.get(SESSION_COOKIE)
    sessions = sessions_of(request)
    sessions.end(old)  # a fresh id at every login: no session fixation
    session = sessions.create(token, record)
    response = web.redirect(_next(fields.get("next")))
    response.set_cookie(SESSION_COOKIE, session.id, **cookie_args(request))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request):
    who = operator(request)
    check_csrf(request, who, (await web.form(request)).get("csrf"))
    sessions_of(request).end(who.session_id)
    response = web.redirect("/login?why=" + "you+have+logged+out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
