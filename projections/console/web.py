"""Rendering: the Jinja2 templates, the page context, formatting, forms, and errors as
pages.

Every console route is a ``ConsoleRoute``: an error becomes a page saying what to do
(login, 403, 404, 409, 422, 503) instead of the JSON the ``/v1`` API answers, except for
script requests (``X-Requested-With: fetch``), which get JSON with the same words.
Pages carry a strict Content-Security-Policy: scripts only from this origin (no inline
script), nothing framed, nothing sent elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from contracts.errors import ContractError, ForbiddenError, NotFoundError, TagusError
from projections.api.errors import InvalidParameter, Unavailable, json_response
from projections.console.session import LoginRequired, Operator

log = structlog.get_logger("tagus.console")
HERE = Path(__file__).parent
MAX_FORM_BYTES = 20 * 2**20

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}

PAGES = (("overview", "/", "Overview"), ("schedule", "/schedule", "Schedule"),
         ("forecasts", "/forecasts", "Forecasts"), ("data", "/data", "Data"),
         ("tasks", "/tasks", "Tasks"), ("alerts", "/alerts", "Alerts"),
         ("config", "/config", "Configuration"), ("whatif", "/whatif", "What-if"),
         ("simulations", "/simulations", "Simulations"))


# ---------------------------------------------------------------- formatting


def number(value: Any, digits: int = 2) -> str:
    """``12.35``; an em dash for nothing (None, NaN)."""
    if value is None or isinstance(value, float) and not math.isfinite(value):
        return "\u2014"
    return f"{float(value):,.{digits}f}"


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def local(value: str | datetime | None, zone: str = "UTC", fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO time (or aware datetime) in the tenant's zone."""
    t = parse_iso(value) if isinstance(value, str) or value is None else value
    if t is None:
        return "\u2014"
    return t.astimezone(ZoneInfo(zone)).strftime(fmt)


def age(value: str | datetime | None, now: datetime | None = None) -> str:
    """How long ago: ``4 min ago``; a time ahead of now: ``in 2 h``."""
    t = parse_iso(value) if isinstance(value, str) or value is None else value
    if t is None:
        return "never"
    s = ((now or datetime.now(UTC)) - t).total_seconds()
    ahead, s = s < 0, abs(s)
    text = (f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else
            f"{s / 3600:.1f} h" if s < 48 * 3600 else f"{s / 86400:.0f} d")
    return f"in {text}" if ahead else f"{text} ago"


def make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(number=number, local=local, age=age)
    return env


ENV = make_env()


# ---------------------------------------------------------------- pages


async def tenant_facts(request: Request, tenant: str) -> dict:
    """The tenant's display name, zone and modes (from its configuration; defaults when
    the API serves no configuration)."""
    store = getattr(request.app.state, "config_store", None)
    doc = await store.document(tenant, "tenant") if store is not None else None
    return {"display_name": getattr(doc, "display_name", tenant),
            "zone": getattr(doc, "timezone", "UTC"),
            "schedules_mode": doc.mode("schedules") if doc is not None else "advisory",
            "doc": doc}


async def render(request: Request, who: Operator | None, template: str, *,
                 page: str = "", status: int = 200, **context) -> HTMLResponse:
    facts = context.pop("facts", None)
    if who is not None and facts is None:
        facts = await tenant_facts(request, who.tenant)
    html = ENV.get_template(template).render(
        who=who, page=page, pages=PAGES, facts=facts or {}, zone=(facts or {}).get("zone",
                                                                                 "UTC"),
        now=datetime.now(UTC), plotly_js=request.app.state.console_plotly_url,
        flash=request.query_params.get("flash", ""),
        live_every=getattr(request.app.state, "console_live_every_s", 10.0), **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def fragment(request: Request) -> bool:
    """The page asked for its live part only (``?fragment=1``, polled by console.js)."""
    return request.query_params.get("fragment") == "1"


def redirect(path: str, flash: str = "") -> RedirectResponse:
    """303 to ``path`` (ours: always a local path), with a message to show there."""
    if not path.startswith("/") or path.startswith("//"):
        path = "/"
    sep = "&" if "?" in path else "?"
    target = f"{path}{sep}flash={quote(flash)}" if flash else path
    return RedirectResponse(target, status_code=303)


async def form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (no files: uploads send the bytes as
    the body).  The last value of a repeated field wins; lists via ``form_list``."""
    raw = await _body(request)
    return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"),
                                         keep_blank_values=True).items()}


async def form_list(request: Request, name: str) -> list[str]:
    raw = await _body(request)
    return parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).get(name, [])


async def _body(request: Request) -> bytes:
    held = getattr(request.state, "console_body", None)
    if held is not None:
        return held
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > MAX_FORM_BYTES:
            raise InvalidParameter("body", f"larger than {MAX_FORM_BYTES // 2**20} MiB")
    request.state.console_body = bytes(buf)
    return request.state.console_body


# ---------------------------------------------------------------- errors as pages


def _scripted(request: Request) -> bool:
    return (request.headers.get("x-requested-with") == "fetch"
            or request.query_params.get("fragment") == "1")


async def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    if _scripted(request):
        return json_response({"error": title, "detail": detail}, status)
    return await render(request, None, "error.html", status=status, title=title,
                        detail=detail)


class ConsoleRoute(APIRoute):
    """A console route: its errors are pages (or JSON for scripts), never a stack trace."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as e:
                if _scripted(request):
                    return json_response({"error": "login", "detail": e.why or
                                          "log in again", "login": "/login"}, 401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                if request.method != "GET":
                    target = "/"
                why = f"&why={quote(e.why)}" if e.why else ""
                return RedirectResponse(f"/login?next={quote(target)}{why}", status_code=303)
            except ForbiddenError as e:
                return await error_page(request, 403, "Not allowed", str(e))
            except NotFoundError as e:
                return await error_page(request, 404, "Not found", str(e))
            except InvalidParameter as e:
                return await error_page(request, 422, "Invalid input",
                                        f"{e.parameter}: {e.message}")
            except RequestValidationError as e:
                first = e.errors()[0] if e.errors() else {}
                where = ".".join(str(x) for x in first.get("loc", ())[1:])
                return await error_page(request, 422, "Invalid input",
                                        f"{where}: {first.get('msg', e)}")
            except Unavailable as e:
                return await error_page(request, e.status, "Try again shortly", str(e))
            except ContractError as e:
                return await error_page(request, 409, "Refused", str(e))
            except TagusError as e:
                log.warning("console refused", path=request.url.path, error=str(e))
                return await error_page(request, 409, "Refused", str(e))
            except Exception as e:  # a bug or QuestDB refusing: a page, and the log
                log.exception("console failed", path=request.url.path, error=repr(e))
                return await error_page(request, 500, "Something failed",
                                        "the console failed on this request; see the "
                                        "API's log")

        return run
