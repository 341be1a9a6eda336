"""The operator's dashboard: a Starlette app with server-rendered pages (docs/dashboard.md).

Pages: ``/`` (Now), ``/positions``, ``/today``, ``/history``, ``/symbol``. Each page renders its
content block on the server; the page's script re-fetches that block (``?fragment=1``) every
DASHBOARD_REFRESH_S seconds and swaps it in, so the page updates itself without a reload.
Every route but ``/healthz`` needs the token (basic auth with any user name, or a bearer token).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import redis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.bars import BarStore

from . import data
from .now import health_problems, now_view
from .settings import DashboardSettings

HERE = Path(__file__).resolve().parent
PAGES = (("now", "/", "Now"), ("positions", "/positions", "Positions"), ("today", "/today", "Today"),
         ("history", "/history", "History"), ("symbol", "/symbol", "Symbol"))


class TokenAuth:
    """ASGI middleware: 401 unless the request carries the token (basic auth password or bearer).

    ``token`` None (DASHBOARD_LOCAL=1 on a loopback address) lets every request through. The
    token is compared in constant time and never logged.
    """

    def __init__(self, app: ASGIApp, token: str | None, open_paths: tuple[str, ...] = ("/healthz",)) -> None:
        self.app, self.token, self.open_paths = app, token, open_paths

    def allowed(self, header: str) -> bool:
        assert self.token is not None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.allowed(headers.get(b"authorization", b"").decode(errors="replace")):
            await self.app(scope, receive, send)
            return
        resp = PlainTextResponse("authentication required\n", status_code=401,
                                 headers={"WWW-Authenticate": 'Basic realm="avwap dashboard", charset="UTF-8"'})
        await resp(scope, receive, send)


def _money(x: Any) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _num(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def create_app(r: redis.Redis, artifacts: Path, ledger: Path, bars: Path, ds: DashboardSettings,
               env_kill: bool = False) -> Starlette:
    """The dashboard over Redis ``r`` and the directories of a running system (or a finished replay)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(money=_money, num=_num)
    env.filters["tojson_safe"] = lambda v: json.dumps(v, default=str).replace("</", "<\\/")
    store = BarStore(bars)
    expected = ds.services()

    def render(request: Request, page: str, ctx: dict[str, Any]) -> HTMLResponse:
        fragment = request.query_params.get("fragment") == "1"
        now = now_view(r, expected, env_kill)
        now.problems = health_problems(now, expected, ds.dashboard_max_lag, ds.dashboard_feed_max_age_s,
                                            time.time_ns())
        body = env.get_template(f"{page}.html").render(**ctx, now=now, wall=time.time())
        live = env.get_template("_banner.html").render(now=now) + body
        digest = hashlib.sha256(live.encode()).hexdigest()[:16]  # the script swaps content only when it changed
        if fragment:
            return HTMLResponse(live, headers={"X-Fragment-Hash": digest})
        return HTMLResponse(env.get_template("base.html").render(
            live=live, digest=digest, page=page, pages=PAGES, refresh_ms=int(ds.dashboard_refresh_s * 1000),
            title=dict((p, t) for p, _, t in PAGES)[page]))

    def session_of(request: Request) -> tuple[str, list[str]]:
        days = data.sessions(artifacts)
        d = request.query_params.get("date") or (days[-1] if days else "")
        return d, days

    async def now_page(request: Request) -> Response:
        return render(request, "now", {})

    async def positions_page(request: Request) -> Response:
        return render(request, "positions", {"pv": data.positions_view(r, artifacts)})

    async def today_page(request: Request) -> Response:
        d, days = session_of(request)
        return render(request, "today", {"tv": data.today_view(artifacts, ledger, d), "days": days})

    async def history_page(request: Request) -> Response:
        q = request.query_params
        hv = data.history_view(artifacts, store, ds.dashboard_benchmark, q.get("symbol", ""), q.get("start", ""),
                               q.get("end", ""), q.get("outcome", ""))
        return render(request, "history", {"hv": hv})

    async def symbol_page(request: Request) -> Response:
        d, days = session_of(request)
        symbols = data.symbols_in(artifacts, d)
        held = [p.symbol for p in data.load_positions(r)]
        sym = request.query_params.get("s") or data.first(held) or data.first(symbols)
        sv = data.symbol_view(artifacts, store, r, sym, d) if sym else None
        return render(request, "symbol", {"sv": sv, "symbols": symbols, "days": days, "date": d})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [Route("/", now_page), Route("/positions", positions_page), Route("/today", today_page),
              Route("/history", history_page), Route("/symbol", symbol_page), Route("/healthz", healthz),
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    token = ds.dashboard_token.get_secret_value() if ds.dashboard_token else None
    return Starlette(routes=routes, middleware=[Middleware(TokenAuth, token=token or None)])
