"""Security of the ops app, on both backends: every page and endpoint refuses anonymous requests, a viewer
cannot change anything, forms without the CSRF token are refused, cookies are HttpOnly/SameSite (and Secure
when asked), logins are rate limited, sessions end, and no password or token reaches the logs."""

# ruff: noqa: F811 - the fixtures come from tests/ops_fixtures.py (imported below)

from __future__ import annotations

import logging
import re

import pytest
from fastapi.routing import APIRoute
from hypothesis import given
from hypothesis import strategies as st

from fusion.ops.app import OpsSettings, create_app, money
from fusion.ops.auth import AuthSettings, csrf_ok, csrf_token, login_csrf_ok
from fusion.ops.pages import _safe_next
from tests.ops_fixtures import FAST_HASH, PASSWORDS, Web, csrf_of, env, login, web  # noqa: F401 - fixtures

PUBLIC = {"/login", "/healthz"}


def _routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route of the app (ids in paths replaced by ``x1``), public ones left out."""
    from fusion.ops import pages, shopper_api

    out = []
    for r in [*app.routes, *pages.router.routes, *shopper_api.router.routes]:
        if isinstance(r, APIRoute) and r.path not in PUBLIC:
            for m in sorted(r.methods - {"HEAD"}):
                out.append((m, re.sub(r"\{[^}]+\}", "x1", r.path)))
    return out


def test_every_page_and_endpoint_refuses_anonymous_requests(web: Web) -> None:
    c = web.client()
    routes = _routes(web.app)
    assert len(routes) >= 25
    for method, path in routes:
        r = c.request(
            method,
            path,
            follow_redirects=False,
            headers={"accept": "text/html"},
            data={"csrf": "x"} if method == "POST" and not path.startswith("/api") else None,
        )
        if path.startswith("/api/"):
            assert r.status_code == 401, (method, path, r.status_code)
        elif method == "GET":
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code)
    assert c.get("/healthz").json() == {"status": "ok"}


def test_a_viewer_reads_but_every_action_is_refused(web: Web) -> None:
    env = web.env
    held = env.visit([("P2", 1)])
    vera = web.client("vera")
    assert vera.get("/queue").status_code == 200
    page = vera.get(f"/visits/{held}")
    assert page.status_code == 200 and "Approve" not in page.text and "Remove" not in page.text
    token = csrf_of(vera)
    posts = [
        (m, p) for m, p in _routes(web.app) if m == "POST" and not p.startswith("/api") and p != "/logout"
    ]
    assert len(posts) >= 14
    for _m, path in posts:
        path = path.replace("/visits/x1", f"/visits/{held}")
        r = vera.post(
            path,
            data={
                "csrf": token,
                "adj": "adj-0123456789abcdef",
                "reason_code": "other",
                "note": "trying",
                "sku": "P1",
                "qty": "1",
                "visit": held,
                "target": held,
                "role": "admin",
                "name": "mallory",
                "password": "mallory-pass-1",
                "active": "0",
                "account": "acct-x",
            },
            follow_redirects=False,
        )
        assert r.status_code == 403, (path, r.status_code)
    assert vera.get("/admin/users").status_code == 403
    view = env.reviewer.visit_view(held)
    assert view.history == [] and view.status == "held_for_review"
    assert [u.name for u in web.app.state.ops.users.all()] == ["adam", "rita", "vera"]


def test_forms_without_the_csrf_token_are_refused(web: Web) -> None:
    env = web.env
    v = env.visit([("P2", 1)])
    rita = web.client("rita")
    good = csrf_of(rita)
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": csrf_token("another-session")}):
        r = rita.post(f"/visits/{v}/approve", data=data, follow_redirects=False)
        assert r.status_code == 403, data
    assert env.reviewer.visit_view(v).status == "held_for_review"
    # the header works as well as the field (htmx sends it)
    r = rita.post(f"/visits/{v}/approve", headers={"X-CSRF-Token": good}, follow_redirects=False)
    assert r.status_code == 303
    assert env.reviewer.visit_view(v).status == "charged"
    # the login form has its own token, tied to a cookie
    fresh = web.client()
    r = fresh.post(
        "/login",
        data={"name": "rita", "password": PASSWORDS["rita"], "csrf": "x" * 32},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "wo_session" not in r.headers.get("set-cookie", "")


def test_cookies_and_headers(env) -> None:
    for secure in (False, True):
        app = create_app(
            env.db,
            env.store,
            env.ledger,
            settings=OpsSettings(auth=AuthSettings(**{**FAST_HASH.__dict__, "secure_cookies": secure})),
        )
        users = app.state.ops.users
        if users.get("rita") is None:
            users.create("rita", "reviewer", PASSWORDS["rita"], actor="t")
        from fastapi.testclient import TestClient

        c = TestClient(app, base_url="https://testserver")
        r = login(c, "rita", PASSWORDS["rita"])
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("wo_session="))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert ("Secure" in cookie) == secure
        page = c.get("/queue")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"


def test_sessions_end_with_logout_disabling_and_a_new_password(web: Web) -> None:
    users = web.app.state.ops.users
    for end in ("logout", "disable", "password"):
        rita = web.client("rita")
        assert rita.get("/queue").status_code == 200
        if end == "logout":
            assert (
                rita.post("/logout", data={"csrf": csrf_of(rita)}, follow_redirects=False).status_code == 303
            )
        elif end == "disable":
            users.set_active("rita", False, actor="adam")
        else:
            users.set_password("rita", "another-password-1", actor="adam")
        r = rita.get("/queue", follow_redirects=False, headers={"accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), end
        users.set_active("rita", True, actor="adam")
        users.set_password("rita", PASSWORDS["rita"], actor="adam")


def test_logins_are_rate_limited_per_name_and_per_client(web: Web) -> None:
    users = web.app.state.ops.users
    for _ in range(5):
        assert users.authenticate("rita", "wrong-password!", "10.0.0.1") is None
    c = web.client()
    r = login(c, "rita", PASSWORDS["rita"])  # the right password, but the name is locked for now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "wo_session" not in r.headers.get("set-cookie", "")
    assert users.authenticate("vera", PASSWORDS["vera"], "10.0.0.2") is not None  # other names are fine
    for i in range(5):  # one client trying many names is stopped too
        assert users.authenticate(f"nobody{i}", "guess-guess-1", "10.0.0.9") is None
    from fusion.ops.auth import RateLimited

    with pytest.raises(RateLimited):
        users.authenticate("vera", PASSWORDS["vera"], "10.0.0.9")


def test_no_password_or_token_in_the_logs(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = web.env
    ops = web.app.state.ops
    v = env.charged([("P2", 1)], account="acct-l")
    token = ops.tokens.issue("acct-l", actor="adam")
    adam = web.client("adam")
    session = adam.cookies.get("wo_session")
    csrf = csrf_of(adam)
    new_password = "fresh-user-pass-42"
    adam.post("/admin/users", data={"csrf": csrf, "name": "nina", "role": "viewer", "password": new_password})
    login(web.client(), "nina", "wrong-" + new_password)
    login(web.client(), "nina", new_password)
    issued = adam.post("/admin/shopper-tokens", data={"csrf": csrf, "account": "acct-l", "label": "phone"})
    token2 = re.search(r'id="token">([^<]+)<', issued.text).group(1)  # type: ignore[union-attr]
    c = web.client()
    for t in (token, token2):
        c.get(f"/api/v1/visits/{v}", headers={"Authorization": f"Bearer {t}"})
        c.post("/api/v1/entry-code", headers={"Authorization": f"Bearer {t}"})
    c.get("/api/v1/visits", headers={"Authorization": "Bearer wos_wrong-token-value"})
    ops.users.set_password("nina", "second-pass-4242", actor="adam")
    assert "login failed for nina" in caplog.text and "entry code issued" in caplog.text
    for secret in (
        new_password,
        "second-pass-4242",
        *PASSWORDS.values(),
        token,
        token2,
        session,
        csrf,
        "wos_wrong-token-value",
    ):
        assert secret and secret not in caplog.text


@given(st.text(max_size=40))
def test_login_redirect_stays_on_this_site(target: str) -> None:
    out = _safe_next(target)
    assert out.startswith("/") and not out.startswith("//") and "\\" not in out


@given(st.text(min_size=1, max_size=80), st.text(max_size=80))
def test_csrf_tokens_match_only_their_session(session: str, given_token: str) -> None:
    assert csrf_ok(session, csrf_token(session))
    assert csrf_ok(session, given_token) == (given_token == csrf_token(session))
    assert not login_csrf_ok(given_token if len(given_token) < 16 else None, given_token)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (0, "USD", "0.00 USD"),
        (5, "USD", "0.05 USD"),
        (123456, "EUR", "1234.56 EUR"),
        (-250, "USD", "-2.50 USD"),
        (500, "JPY", "500 JPY"),
        (None, "USD", "–"),
    ],
)
def test_money_is_shown_from_minor_units(amount, currency: str, text: str) -> None:
    assert money(amount, currency) == text
