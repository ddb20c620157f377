"""The ops app's pages, images and form actions (see :mod:`fusion.ops.app` for the rules they share).

Every route states its role: :data:`ViewerUser` for pages and images, :data:`ReviewerUser` for cart actions,
approval and refunds (the refund limit is checked again in :class:`fusion.ops.review.Reviewer`),
:data:`AdminUser` for users and shopper tokens.  Every POST depends on :data:`CsrfChecked`.  Actions answer
with a redirect to the page they came from (``?msg=`` or ``?err=``), so a reload never repeats one; forms
carry a fresh adjustment id besides, so a double submit does its work once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fusion.db import trajectories
from fusion.ops import images
from fusion.ops.app import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    OpsContext,
    Refused,
    context,
    current_user,
    money,
    require,
)
from fusion.ops.auth import ROLES, AuthError, RateLimited, User, csrf_ok, csrf_token, login_csrf_ok
from fusion.ops.queue import CATEGORIES, queue
from fusion.ops.review import (
    REASON_CODES,
    Forbidden,
    LineView,
    Missing,
    ReviewError,
    VisitView,
    new_adjustment_id,
)
from fusion.ops.tap import nearest_tracks

log = logging.getLogger(__name__)
router = APIRouter()


async def csrf_checked(request: Request) -> None:
    """Refuse a state-changing request without the session's CSRF token (form field or X-CSRF-Token)."""
    current_user(request)
    form = await request.form()
    given = form.get("csrf") or request.headers.get("x-csrf-token")
    if not csrf_ok(getattr(request.state, "session_token", None), given if isinstance(given, str) else None):
        raise Refused("the form's CSRF token is missing or wrong; reload the page and try again")


ViewerUser = Annotated[User, Depends(require("viewer"))]
ReviewerUser = Annotated[User, Depends(require("reviewer"))]
AdminUser = Annotated[User, Depends(require("admin"))]
CsrfChecked = Annotated[None, Depends(csrf_checked)]
Text = Annotated[str, Form(max_length=2000)]


def _render(request: Request, name: str, data: dict[str, Any], status: int = 200) -> HTMLResponse:
    ctx = context(request)
    token = getattr(request.state, "session_token", None)
    base = {
        "user": getattr(request.state, "user", None),
        "csrf": csrf_token(token) if token else "",
        "msg": request.query_params.get("msg", "")[:300],
        "err": request.query_params.get("err", "")[:300],
        "categories": CATEGORIES,
        "reason_codes": REASON_CODES,
        "currency": ctx.store.store.currency,
    }
    return ctx.templates.TemplateResponse(request, name, {**base, **data}, status_code=status)


def _back(url: str, **params: str) -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (sep + urlencode(params) if params else ""), status_code=303)


def _act(url: str, fn: Callable[[], Any], ok: str | Callable[[Any], str]) -> RedirectResponse:
    """Run an action; back to ``url`` with its message, or its error (a refused role is a 403)."""
    try:
        out = fn()
    except Forbidden as exc:
        raise Refused(str(exc)) from None
    except ReviewError as exc:
        return _back(url, err=str(exc))
    if out is False or (isinstance(out, dict) and out.get("again") and "status" not in out):
        return _back(url, msg="already done (the form was sent twice)")
    return _back(url, msg=ok(out) if callable(ok) else ok)


def _visit_url(visit: str) -> str:
    return f"/visits/{quote(visit, safe='')}"


def _event_url(event_id: str) -> str:
    return f"/events/{quote(event_id, safe='')}"


def _qty(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ReviewError(f"quantity {text!r} is not a whole number") from None


# ------------------------------------------------------------------------------------------------ login
def _safe_next(target: str) -> str:
    """Where to go after logging in: a path on this site only."""
    ok = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok else "/queue"


def _set_cookie(request: Request, resp: Response, name: str, value: str, max_age: int | None = None) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=context(request).settings.auth.secure_cookies,
        path="/",
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/queue") -> Response:
    value = secrets.token_urlsafe(24)
    resp = _render(request, "login.html", {"login_csrf": value, "next": _safe_next(next)})
    _set_cookie(request, resp, LOGIN_COOKIE, value, max_age=3600)
    return resp


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = context(request)
    form = await request.form()
    name = str(form.get("name", ""))
    password = str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/queue")))
    if not login_csrf_ok(request.cookies.get(LOGIN_COOKIE), str(form.get("csrf", ""))):
        raise Refused("the login form's CSRF token is missing or wrong; reload the page")
    client = request.client.host if request.client else "unknown"
    again = {"login_csrf": request.cookies.get(LOGIN_COOKIE, ""), "next": target, "name": name[:64]}
    try:
        user = ctx.users.authenticate(name, password, client)
    except RateLimited as exc:
        wait = f"Too many failed logins. Try again in {exc.retry_after_s} s."
        resp = _render(request, "login.html", {**again, "error": wait}, status=429)
        resp.headers["Retry-After"] = str(exc.retry_after_s)
        return resp
    if user is None:
        return _render(request, "login.html", {**again, "error": "Wrong name or password."}, status=401)
    token = ctx.users.open_session(user)
    resp = RedirectResponse(target, status_code=303)
    _set_cookie(request, resp, SESSION_COOKIE, token, max_age=int(ctx.settings.auth.session_ttl_s))
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    return resp


@router.post("/logout")
def logout(request: Request, _u: ViewerUser, _c: CsrfChecked) -> Response:
    context(request).users.close_session(request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/")
def home(_u: ViewerUser) -> Response:
    return RedirectResponse("/queue", status_code=303)


# ------------------------------------------------------------------------------------------------ queue
def _queue_data(request: Request, category: str | None, page: int) -> dict[str, Any]:
    if category not in CATEGORIES:
        category = None
    q = queue(context(request).db, category=category, page=page)
    return {"q": q, "category": category}


@router.get("/queue", response_class=HTMLResponse)
def queue_page(
    request: Request,
    _u: ViewerUser,
    category: str | None = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
) -> Response:
    return _render(request, "queue.html", _queue_data(request, category, page))


@router.get("/queue/table", response_class=HTMLResponse)
def queue_table(
    request: Request,
    _u: ViewerUser,
    category: str | None = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
) -> Response:
    """The queue's table alone (htmx refreshes it every few seconds)."""
    return _render(request, "_queue_table.html", _queue_data(request, category, page))


# ------------------------------------------------------------------------------------------------ visits
def _frame_at(ctx: OpsContext, camera: str, t: float) -> Any:
    if ctx.evidence is None:
        return None
    try:
        return ctx.evidence.nearest(camera, t, max_dt=ctx.settings.frame_max_dt_s)
    except (OSError, ValueError) as exc:
        log.warning("evidence frame of %s at %.3f unreadable: %s", camera, t, exc)
        return None


def _evidence_info(ctx: OpsContext, view: VisitView, ln: LineView) -> dict[str, Any] | None:
    """What the page shows as the evidence of one line (None for lines without a shelf event)."""
    if not ln.event_id:
        return None
    ev = ctx.reviewer.event_evidence(ln.event_id) if ln.evidence else None
    if ev is not None:
        t0, t1 = float(ev["t_start"]), float(ev["t_end"])
        moment = (t0 + t1) / 2
        cams = sorted(ev["tracks"] or {})
    else:
        t0 = t1 = moment = float(ln.t)
        cams = []
    wanted = [c for c in ln.cameras if c in cams] or ln.cameras or cams
    frames = []
    for cam in wanted:
        frame = _frame_at(ctx, cam, moment)
        q = urlencode({"t": f"{moment:.3f}", "visit": view.visit["visit"], "line": ln.line_id})
        if frame is None:
            why = (
                "no evidence store configured (walkout ops --evidence)"
                if ctx.evidence is None
                else f"no frame of {cam} kept within {ctx.settings.frame_max_dt_s:.0f} s of the event"
            )
            frames.append({"camera": cam, "url": None, "dt": None, "why": why})
        else:
            url = f"/frames/{quote(ln.event_id, safe='')}/{quote(cam, safe='')}.jpg?{q}"
            frames.append({"camera": cam, "url": url, "dt": float(frame.ts) - moment, "why": None})
    weights = ev is not None and bool(ev["weights"])
    return {
        "event_id": ln.event_id,
        "t_start": t0,
        "t_end": t1,
        "moment": moment,
        "kept": ev is not None,
        "lanes": [x["lane"] for x in ev["lanes"]] if ev else ln.lanes,
        "candidates": ev["candidates"] if ev else [],
        "frames": frames,
        "weights_url": f"{_event_url(ln.event_id)}/weights.png" if weights else None,
        "floor_url": f"{_visit_url(view.visit['visit'])}/floor.png?line={quote(ln.line_id, safe='')}",
    }


@router.get("/visits/{visit}", response_class=HTMLResponse)
def visit_page(request: Request, visit: str, _u: ViewerUser) -> Response:
    ctx = context(request)
    try:
        view = ctx.reviewer.visit_view(visit)
    except Missing as exc:
        return _render(request, "error.html", {"status": 404, "message": str(exc)}, status=404)
    evidence = {ln.line_id: _evidence_info(ctx, view, ln) for ln in view.lines}
    focus = next((ln for ln in view.lines if ln.uncertain and ln.remaining), None) or next(
        (ln for ln in view.lines if ln.event_id), None
    )
    return _render(
        request,
        "visit.html",
        {
            "v": view,
            "evidence": evidence,
            "focus": focus,
            "adj": {ln.line_id: new_adjustment_id() for ln in view.lines},
            "adj_add": new_adjustment_id(),
            "adj_all": new_adjustment_id(),
            "products": ctx.store.catalogue,
            "url": _visit_url(visit),
        },
    )


def _paths_of(ctx: OpsContext, shopper: str, t0: float, t1: float) -> list[tuple[float, float, float]]:
    with ctx.db.read() as conn:
        rows = conn.execute(
            sa.select(trajectories.c.t, trajectories.c.x, trajectories.c.y)
            .where(trajectories.c.shopper == shopper, trajectories.c.t >= t0, trajectories.c.t <= t1)
            .order_by(trajectories.c.t)
            .limit(5000)
        ).all()
    return [(float(t), float(x), float(y)) for t, x, y in rows]


@router.get("/visits/{visit}/floor.png")
def visit_floor(request: Request, visit: str, _u: ViewerUser, line: str | None = None) -> Response:
    """The floor plan with the visit's trajectories; with ``line``, at its event (lanes, runner-up)."""
    ctx = context(request)
    paths = ctx.reviewer.trajectories(visit)
    lanes: list[str] = []
    moment = chosen = runner = None
    if line:
        try:
            ln = ctx.reviewer.line(visit, line)
        except Missing:
            return Response(status_code=404)
        ev = ctx.reviewer.event_evidence(ln.event_id) if ln.event_id else None
        lanes = [x["lane"] for x in ev["lanes"]] if ev else ln.lanes
        moment = (float(ev["t_start"]) + float(ev["t_end"])) / 2 if ev else ln.t
        chosen, runner = ln.shopper, ln.runner_up
        if runner:
            other = _paths_of(ctx, runner, moment - 15, moment + 15)
            if other:
                paths = {**paths, f"{runner} (runner-up)": other}
    png = images.floor_plan_png(ctx.store, paths, lanes=lanes, moment=moment, chosen=chosen, runner_up=runner)
    return Response(png, media_type="image/png")


def _position(ctx: OpsContext, shopper: str | None, t: float) -> np.ndarray | None:
    """A shopper's floor position at event time ``t`` (from the trajectories), or None."""
    if not shopper:
        return None
    pts = _paths_of(ctx, shopper, t - 3.0, t + 3.0)
    if not pts:
        return None
    a = np.asarray(pts)
    return np.array([np.interp(t, a[:, 0], a[:, 1]), np.interp(t, a[:, 0], a[:, 2])])


def _track_of(tracks: list[dict[str, Any]], xy: np.ndarray | None, taken: set[int]) -> int | None:
    """The camera track standing nearest ``xy`` on the floor (within 1 m), not among ``taken``."""
    if xy is None or not tracks:
        return None

    def dist(t: dict[str, Any]) -> float:
        return float(np.hypot(t["floor"][0] - xy[0], t["floor"][1] - xy[1]))

    best = min((t for t in tracks if int(t["id"]) not in taken), key=dist, default=None)
    if best is None or dist(best) > 1.0:
        return None
    return int(best["id"])


@router.get("/frames/{event_id}/{camera}.jpg")
def frame(
    request: Request,
    event_id: str,
    camera: str,
    t: float,
    _u: ViewerUser,
    visit: str | None = None,
    line: str | None = None,
) -> Response:
    """The kept frame of ``camera`` nearest event time ``t``, with the tracks of that instant drawn."""
    ctx = context(request)
    f = _frame_at(ctx, camera, t)
    if f is None:
        png = images.placeholder_png(f"no frame of {camera} near this moment")
        return Response(png, media_type="image/png", status_code=404)
    ev = ctx.reviewer.event_evidence(event_id) or {}
    msg = nearest_tracks(ev, camera, float(f.ts))
    tracks = msg["tracks"] if msg and abs(float(msg["ts"]) - float(f.ts)) <= 0.5 else []
    chosen = runner = None
    if visit and line and tracks:
        try:
            ln = ctx.reviewer.line(visit, line)
        except Missing:
            ln = None
        if ln is not None:
            chosen = _track_of(tracks, _position(ctx, ln.shopper, float(f.ts)), set())
            taken = {chosen} if chosen is not None else set()
            runner = _track_of(tracks, _position(ctx, ln.runner_up, float(f.ts)), taken)
    caption = f"{camera}  {float(f.ts) - t:+.2f} s from the event moment" + (
        "" if tracks else "  (no tracks kept for this instant)"
    )
    try:
        data = images.annotated_frame_jpeg(
            f.read(),
            tracks,
            source_size=ctx.camera_sizes.get(camera),
            chosen=chosen,
            runner_up=runner,
            caption=caption,
        )
    except (OSError, ValueError) as exc:
        log.warning("evidence frame %s unreadable: %s", getattr(f, "path", "?"), exc)
        png = images.placeholder_png("the kept frame cannot be read")
        return Response(png, media_type="image/png", status_code=404)
    return Response(data, media_type="image/jpeg")


@router.get("/events/{event_id}/weights.png")
def weights(request: Request, event_id: str, _u: ViewerUser) -> Response:
    """The event's lanes' weight trace, with what the shelf's candidates would weigh (dashed)."""
    ctx = context(request)
    ev = ctx.reviewer.event_evidence(event_id)
    if ev is None or not ev["weights"]:
        png = images.placeholder_png("no weight samples kept for this event")
        return Response(png, media_type="image/png", status_code=404)
    deltas = {x["lane"]: float(x["delta_g"]) for x in ev["lanes"]}
    sign = -1.0 if ev["action"] == "pick" else 1.0
    expected = []
    for c in ev["candidates"][:3]:
        p = ctx.store.products.get(c["sku"])
        if p is not None:
            grams = sign * c["qty"] * p.weight_g
            expected.append((f"{c['qty']} x {c['sku']} = {grams:+.0f} g", grams))
    png = images.weight_trace_png(
        ev["weights"], float(ev["t_start"]), float(ev["t_end"]), deltas=deltas, expected=expected
    )
    return Response(png, media_type="image/png")


# ------------------------------------------------------------------------------------------------ actions
@router.post("/visits/{visit}/lines/{line_id}/confirm")
def confirm(
    request: Request, visit: str, line_id: str, user: ReviewerUser, _c: CsrfChecked, note: Text = ""
) -> Response:
    r = context(request).reviewer
    return _act(
        _visit_url(visit),
        lambda: r.confirm(visit, line_id, actor=user, note=note),
        f"line {line_id} confirmed",
    )


@router.post("/visits/{visit}/lines/{line_id}/remove")
def remove(
    request: Request,
    visit: str,
    line_id: str,
    user: ReviewerUser,
    _c: CsrfChecked,
    reason_code: Annotated[str, Form()],
    adj: Annotated[str, Form()],
    note: Text = "",
    qty: Text = "",
) -> Response:
    r = context(request).reviewer
    return _act(
        _visit_url(visit),
        lambda: r.remove(
            visit, line_id, actor=user, reason_code=reason_code, note=note, adj=adj, qty=_qty(qty)
        ),
        f"line {line_id} removed",
    )


@router.post("/visits/{visit}/lines/{line_id}/move")
def move(
    request: Request,
    visit: str,
    line_id: str,
    user: ReviewerUser,
    _c: CsrfChecked,
    target: Annotated[str, Form()],
    reason_code: Annotated[str, Form()],
    adj: Annotated[str, Form()],
    note: Text = "",
) -> Response:
    r = context(request).reviewer
    target = target.strip()
    return _act(
        _visit_url(visit),
        lambda: r.move(visit, line_id, target, actor=user, reason_code=reason_code, note=note, adj=adj),
        f"line {line_id} moved to visit {target}",
    )


@router.post("/visits/{visit}/lines/{line_id}/refund")
def refund_line(
    request: Request,
    visit: str,
    line_id: str,
    user: ReviewerUser,
    _c: CsrfChecked,
    reason_code: Annotated[str, Form()],
    adj: Annotated[str, Form()],
    note: Text = "",
    qty: Text = "",
    dispute: Text = "",
) -> Response:
    ctx = context(request)
    cur = ctx.store.store.currency
    return _act(
        _visit_url(visit),
        lambda: ctx.reviewer.refund(
            visit,
            actor=user,
            reason_code=reason_code,
            adj=adj,
            line_id=line_id,
            note=note,
            qty=_qty(qty),
            dispute_id=_qty(dispute),
        ),
        lambda out: f"refunded {money(out['amount'], cur)}",
    )


@router.post("/visits/{visit}/refund")
def refund_all(
    request: Request,
    visit: str,
    user: ReviewerUser,
    _c: CsrfChecked,
    reason_code: Annotated[str, Form()],
    adj: Annotated[str, Form()],
    note: Text = "",
) -> Response:
    ctx = context(request)
    cur = ctx.store.store.currency
    return _act(
        _visit_url(visit),
        lambda: ctx.reviewer.refund(visit, actor=user, reason_code=reason_code, adj=adj, note=note),
        lambda out: f"refunded {money(out['amount'], cur)}",
    )


@router.post("/visits/{visit}/add")
def add(
    request: Request,
    visit: str,
    user: ReviewerUser,
    _c: CsrfChecked,
    sku: Annotated[str, Form()],
    reason_code: Annotated[str, Form()],
    adj: Annotated[str, Form()],
    qty: Text = "1",
    note: Text = "",
) -> Response:
    r = context(request).reviewer
    return _act(
        _visit_url(visit),
        lambda: r.add(visit, sku, _qty(qty) or 1, actor=user, reason_code=reason_code, note=note, adj=adj),
        f"{sku} added",
    )


@router.post("/visits/{visit}/approve")
def approve(request: Request, visit: str, user: ReviewerUser, _c: CsrfChecked, note: Text = "") -> Response:
    ctx = context(request)
    cur = ctx.store.store.currency

    def done(out: dict[str, Any]) -> str:
        if out["status"] == "charged":
            return f"approved: charged {money(out['total'], cur)}"
        if out["status"] == "no_charge":
            return "approved: nothing to pay, the hold is released"
        return f"the payment failed ({out.get('failure_code')}); the visit stays in the queue"

    return _act(_visit_url(visit), lambda: ctx.reviewer.approve(visit, actor=user, note=note), done)


@router.post("/visits/{visit}/disputes/{dispute_id}/reject")
def reject_dispute(
    request: Request, visit: str, dispute_id: int, user: ReviewerUser, _c: CsrfChecked, note: Text = ""
) -> Response:
    r = context(request).reviewer
    return _act(
        _visit_url(visit),
        lambda: r.reject_dispute(visit, dispute_id, actor=user, note=note),
        f"dispute {dispute_id} rejected",
    )


# ------------------------------------------------------------------------------------------------ events
def _moment(ev: dict[str, Any]) -> float:
    data = ev["evidence"]
    return (float(data["t_start"]) + float(data["t_end"])) / 2 if data else float(ev["t"])


@router.get("/events/{event_id}", response_class=HTMLResponse)
def event_page(request: Request, event_id: str, _u: ViewerUser) -> Response:
    ctx = context(request)
    try:
        ev = ctx.reviewer.event_view(event_id)
    except Missing as exc:
        return _render(request, "error.html", {"status": 404, "message": str(exc)}, status=404)
    data = ev["evidence"]
    moment = _moment(ev)
    frames = []
    for cam in sorted((data or {}).get("tracks") or {}):
        f = _frame_at(ctx, cam, moment)
        url = f"/frames/{quote(event_id, safe='')}/{quote(cam, safe='')}.jpg?{urlencode({'t': f'{moment:.3f}'})}"
        frames.append(
            {
                "camera": cam,
                "url": url if f else None,
                "why": None if f else f"no frame of {cam} kept near the event",
            }
        )
    return _render(
        request,
        "event.html",
        {
            "ev": ev,
            "frames": frames,
            "moment": moment,
            "adj": new_adjustment_id(),
            "weights_url": f"{_event_url(event_id)}/weights.png" if data and data["weights"] else None,
            "floor_url": f"{_event_url(event_id)}/floor.png",
            "url": _event_url(event_id),
        },
    )


@router.get("/events/{event_id}/floor.png")
def event_floor(request: Request, event_id: str, _u: ViewerUser) -> Response:
    """Everyone on the floor around an event (keyed visit/shopper), the event's lanes highlighted."""
    ctx = context(request)
    try:
        ev = ctx.reviewer.event_view(event_id)
    except Missing:
        return Response(status_code=404)
    moment = _moment(ev)
    paths = ctx.reviewer.trajectories_between(moment - 10, moment + 10)
    lanes = [x["lane"] for x in ev["evidence"]["lanes"]] if ev["evidence"] else []
    return Response(
        images.floor_plan_png(ctx.store, paths, lanes=lanes, moment=moment), media_type="image/png"
    )


@router.post("/events/{event_id}/assign")
def assign_event(
    request: Request,
    event_id: str,
    user: ReviewerUser,
    _c: CsrfChecked,
    visit: Annotated[str, Form()],
    sku: Annotated[str, Form()],
    adj: Annotated[str, Form()],
    qty: Text = "1",
    note: Text = "",
) -> Response:
    r = context(request).reviewer
    visit = visit.strip()
    return _act(
        _event_url(event_id),
        lambda: r.assign_event(event_id, visit, sku, _qty(qty) or 1, actor=user, adj=adj, note=note),
        f"event {event_id} assigned to visit {visit}",
    )


@router.post("/events/{event_id}/dismiss")
def dismiss_event(
    request: Request, event_id: str, user: ReviewerUser, _c: CsrfChecked, note: Text = ""
) -> Response:
    r = context(request).reviewer
    return _act(
        _event_url(event_id),
        lambda: r.dismiss_event(event_id, actor=user, note=note),
        f"event {event_id} dismissed",
    )


# ------------------------------------------------------------------------------------------------ admin
@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, _u: AdminUser) -> Response:
    return _render(request, "users.html", {"users": context(request).users.all(), "roles": ROLES})


def _admin_act(fn: Callable[[], Any], ok: str) -> RedirectResponse:
    try:
        fn()
    except AuthError as exc:
        return _back("/admin/users", err=str(exc))
    return _back("/admin/users", msg=ok)


@router.post("/admin/users")
def create_user(
    request: Request,
    user: AdminUser,
    _c: CsrfChecked,
    name: Annotated[str, Form()],
    role: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> Response:
    users = context(request).users
    return _admin_act(lambda: users.create(name, role, password, actor=user.name), f"user {name} created")


@router.post("/admin/users/{name}/role")
def set_role(
    request: Request, name: str, user: AdminUser, _c: CsrfChecked, role: Annotated[str, Form()]
) -> Response:
    users = context(request).users
    return _admin_act(lambda: users.set_role(name, role, actor=user.name), f"{name} is now {role}")


@router.post("/admin/users/{name}/active")
def set_active(
    request: Request, name: str, user: AdminUser, _c: CsrfChecked, active: Annotated[str, Form()]
) -> Response:
    users = context(request).users
    on = active == "1"
    if name == user.name and not on:
        return _back("/admin/users", err="you cannot disable yourself")
    return _admin_act(
        lambda: users.set_active(name, on, actor=user.name), f"{name} {'enabled' if on else 'disabled'}"
    )


@router.post("/admin/shopper-tokens", response_class=HTMLResponse)
def issue_token(
    request: Request,
    user: AdminUser,
    _c: CsrfChecked,
    account: Annotated[str, Form()],
    label: Text = "app",
) -> Response:
    try:
        token = context(request).tokens.issue(account.strip(), label=label.strip() or "app", actor=user.name)
    except AuthError as exc:
        return _back("/admin/users", err=str(exc))
    return _render(request, "token.html", {"account": account.strip(), "token": token})
