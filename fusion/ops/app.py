"""The ops web app: :func:`create_app` builds the FastAPI application (server-rendered pages with Jinja2, a
little htmx, and the shoppers' JSON API) around one database, store description and payment gateway.

Request handling shared by every page: the session cookie is read once per request (:func:`current_user`);
pages and images need at least the ``viewer`` role, actions ``reviewer`` (or ``admin``), each stated on its
route; every POST form is refused without the session's CSRF token.  Responses carry a strict Content
Security Policy (scripts and styles from this app only), ``X-Frame-Options: DENY`` and ``no-store`` caching.

The evidence frames come from an object with ``nearest(camera, t, max_dt)`` returning a frame with ``ts`` and
``read()`` (``edge.evidence.EvidenceStore``; passed in by ``walkout ops``, as fusion does not import edge).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from calibration.store import Store
from fusion.db import Database
from fusion.ops.auth import AuthSettings, ShopperTokens, User, Users
from fusion.ops.review import Reviewer, ReviewError, ReviewSettings
from fusion.payments import PaymentGateway

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "wo_session"
LOGIN_COOKIE = "wo_login"
_ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "HUF"}


class FrameSource(Protocol):
    def nearest(self, camera: str, t: float, max_dt: float = ...) -> Any: ...


@dataclass
class OpsSettings:
    """Settings of the ops app (flags of ``walkout ops``)."""

    auth: AuthSettings = field(default_factory=AuthSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    title: str = "walkout ops"
    frame_max_dt_s: float = 2.0  # how far from the event moment a kept frame may be
    entry_code_ttl_s: float | None = None  # default: the store's entry_codes.ttl_s


@dataclass
class OpsContext:
    """Everything a request handler needs; one per app (``app.state.ops``)."""

    db: Database
    store: Store
    payments: PaymentGateway
    settings: OpsSettings
    users: Users
    tokens: ShopperTokens
    reviewer: Reviewer
    evidence: FrameSource | None
    entry_secret: bytes | None
    camera_sizes: dict[str, tuple[int, int]]
    templates: Jinja2Templates
    clock: Callable[[], float]


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, images and forms answer 401."""


class Refused(Exception):
    """The user lacks the role, or the CSRF check failed: 403 with the reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# ------------------------------------------------------------------------------------------------ formatting
def money(amount: int | None, currency: str = "USD") -> str:
    if amount is None:
        return "–"
    if currency in _ZERO_DECIMAL:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    a = abs(int(amount))
    return f"{sign}{a // 100}.{a % 100:02d} {currency}"


def when(ts: float | datetime | None) -> str:
    if ts is None:
        return "–"
    if isinstance(ts, datetime):
        t = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    else:
        t = datetime.fromtimestamp(float(ts), UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float) -> str:
    s = int(seconds)
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * float(x):.0f}%"


# ------------------------------------------------------------------------------------------------ factory
def create_app(
    db: Database,
    store: Store,
    payments: PaymentGateway,
    *,
    settings: OpsSettings | None = None,
    evidence: FrameSource | None = None,
    entry_secret: bytes | None = None,
    camera_sizes: dict[str, tuple[int, int]] | None = None,
    clock: Callable[[], float] | None = None,
) -> FastAPI:
    """The ops app.  ``db`` must be migrated; ``entry_secret`` enables entry codes in the shopper API;
    ``camera_sizes`` (camera id -> image width, height) scales track pixels onto downscaled frames."""
    import time

    from fusion.ops import pages, shopper_api

    settings = settings or OpsSettings()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(money=money, when=when, age=age, pct=pct)
    templates.env.globals.update(title=settings.title, store_name=store.store.name or store.store.id)
    ctx = OpsContext(
        db=db,
        store=store,
        payments=payments,
        settings=settings,
        users=Users(db, settings.auth),
        tokens=ShopperTokens(db),
        reviewer=Reviewer(db, store, payments, settings.review),
        evidence=evidence,
        entry_secret=entry_secret,
        camera_sizes=dict(camera_sizes or {}),
        templates=templates,
        clock=clock or time.time,
    )
    app = FastAPI(title=settings.title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ops = ctx
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(pages.router)
    app.include_router(shopper_api.router)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            from urllib.parse import quote

            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return PlainTextResponse("login required", status_code=401)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        log.warning("refused %s %s: %s", request.method, request.url.path, exc.reason)
        if "text/html" in request.headers.get("accept", ""):
            return templates.TemplateResponse(
                request,
                "error.html",
                {"user": getattr(request.state, "user", None), "status": 403, "message": exc.reason},
                status_code=403,
            )
        return PlainTextResponse(exc.reason, status_code=403)

    @app.exception_handler(shopper_api.ApiError)
    async def _api_error(_request: Request, exc: shopper_api.ApiError) -> Response:
        return JSONResponse(
            {"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(ReviewError)
    async def _review_error(request: Request, exc: ReviewError) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=409)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def context(request: Request) -> OpsContext:
    return request.app.state.ops


def current_user(request: Request) -> User:
    """The logged-in user (cached on the request); :class:`LoginRequired` without a live session."""
    user = getattr(request.state, "user", None)
    if user is not None:
        return user
    token = request.cookies.get(SESSION_COOKIE)
    user = context(request).users.session_user(token)
    if user is None:
        raise LoginRequired()
    request.state.user = user
    request.state.session_token = token
    return user


def require(role: str) -> Callable[[Request], User]:
    """A dependency: the current user, who must hold ``role`` or above."""

    def dep(request: Request) -> User:
        user = current_user(request)
        if not user.can(role):
            raise Refused(f"{user.name} ({user.role}) may not do this: it needs the {role} role")
        return user

    dep.__name__ = f"require_{role}"
    return dep
