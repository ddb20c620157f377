"""The shopper API and the ops pages over HTTP (FastAPI's test client), on both backends: entry codes (and
their refusal after a failed payment), my visits and receipts, disputes into the queue and their outcome back
to the shopper, and the pages and actions a reviewer uses."""

# ruff: noqa: F811 - the fixtures come from tests/ops_fixtures.py (imported below)

from __future__ import annotations

import re

import sqlalchemy as sa

from fusion.db import shopper_tokens
from fusion.ops.queue import queue
from tests.fusion_scene import T0
from tests.ops_fixtures import REVIEWER, SECRET, Web, csrf_of, env, web  # noqa: F401 - fixtures
from wire.entry_codes import EntryCodeError, UsedCodes, parse


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_entry_code_is_signed_for_the_account_and_refused_after_a_failed_payment(web: Web) -> None:
    env = web.env
    env.ledger.ensure_account("acct-ok")
    env.ledger.ensure_account("acct-bad")
    tokens = web.app.state.ops.tokens
    ok, bad, nobody = (tokens.issue(a, actor="t") for a in ("acct-ok", "acct-bad", "acct-none"))
    c = web.client()
    r = c.post("/api/v1/entry-code", json={"party_size": 2}, headers=_bearer(ok))
    assert r.status_code == 201, r.text
    body = r.json()
    code = parse(SECRET, body["code"], "t1", now=T0 + 5000)
    assert (code.account, code.party_size, body["expires_at"]) == ("acct-ok", 2, T0 + 5060)
    used = UsedCodes()
    used.use(code, T0 + 5001)
    try:
        used.use(code, T0 + 5002)
        raise AssertionError("a used code was accepted again")
    except EntryCodeError as exc:
        assert exc.reason == "replayed"
    # the card declines: the capture fails, and the account gets no code until it pays again
    env.ledger.mark_declining("acct-bad")
    v = env.visit([("P2", 1)], account="acct-bad", hold=False)
    assert env.reviewer.approve(v, actor=REVIEWER)["status"] == "payment_failed"
    r = c.post("/api/v1/entry-code", headers=_bearer(bad))
    assert (r.status_code, r.json()["error"]) == (403, "payment_failed")
    assert "card_declined" in r.json()["detail"]
    r = c.post("/api/v1/entry-code", headers=_bearer(nobody))
    assert (r.status_code, r.json()["error"]) == (403, "payment_failed")
    env.ledger.set_payment_method("acct-bad", label="new card")
    assert c.post("/api/v1/entry-code", headers=_bearer(bad)).status_code == 201


def test_tokens_are_stored_hashed_and_checked(web: Web) -> None:
    token = web.app.state.ops.tokens.issue("acct-x", actor="t")
    with web.env.db.read() as conn:
        stored = conn.execute(sa.select(shopper_tokens)).all()
    assert len(stored) == 1 and token not in repr(tuple(stored[0]))
    c = web.client()
    assert c.get("/api/v1/visits", headers=_bearer(token)).json() == {"account": "acct-x", "visits": []}
    for header in ({}, _bearer("wos_nope"), _bearer(token + "x"), {"Authorization": f"Basic {token}"}):
        r = c.get("/api/v1/visits", headers=header)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    web.app.state.ops.tokens.revoke_all("acct-x", actor="t")
    assert c.get("/api/v1/visits", headers=_bearer(token)).status_code == 401


def test_dispute_goes_to_the_queue_and_the_outcome_comes_back(web: Web) -> None:
    env = web.env
    v = env.charged([("P2", 1), ("P3", 2)], account="acct-s")
    token = web.app.state.ops.tokens.issue("acct-s", actor="t")
    shopper = web.client()
    mine = shopper.get("/api/v1/visits", headers=_bearer(token)).json()["visits"]
    assert [(x["visit"], x["status"], x["total"]) for x in mine] == [(v, "charged", 800)]
    r = shopper.post(
        f"/api/v1/visits/{v}/disputes",
        json={"sku": "P3", "qty": 1, "reason": "took only one"},
        headers=_bearer(token),
    )
    assert r.status_code == 201, r.text
    dispute = r.json()["dispute"]
    bad = shopper.post(
        f"/api/v1/visits/{v}/disputes",
        json={"sku": "P3", "qty": 9, "reason": "all of them"},
        headers=_bearer(token),
    )
    assert (bad.status_code, bad.json()["error"]) == (409, "refused")
    junk = shopper.post(
        f"/api/v1/visits/{v}/disputes", json={"sku": "P3", "reason": "x", "extra": 1}, headers=_bearer(token)
    )
    assert junk.status_code == 422
    assert [i.key for i in queue(env.db).items] == [f"dispute:{dispute}"]

    # a reviewer opens it from the queue and refunds one P3 of the line
    rita = web.client("rita")
    page = rita.get("/queue")
    assert f"/visits/{v}" in page.text and "dispute" in page.text
    visit_page = rita.get(f"/visits/{v}")
    assert visit_page.status_code == 200 and "took only one" in visit_page.text
    form = re.search(
        r'action="/visits/[^"]+/lines/' + re.escape(f"{v}-e1") + r'/refund".*?name="adj" value="([^"]+)"',
        visit_page.text,
        re.DOTALL,
    )
    assert form is not None
    r = rita.post(
        f"/visits/{v}/lines/{v}-e1/refund",
        data={
            "csrf": csrf_of(rita),
            "adj": form.group(1),
            "qty": "1",
            "reason_code": "quantity",
            "note": "one P3 went back to the shelf",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and "refunded" in r.headers["location"]

    seen = shopper.get(f"/api/v1/visits/{v}", headers=_bearer(token)).json()
    assert (seen["charged"], seen["refunded"], seen["net"]) == (800, 300, 500)
    assert seen["refunds"][0]["reason"] == "a different quantity was taken"
    assert seen["refunds"][0]["note"] == "one P3 went back to the shelf"
    assert [(d["state"], d["outcome"], d["refunded"]) for d in seen["disputes"]] == [
        ("resolved", "refunded", 300)
    ]
    assert queue(env.db).total == 0


def test_one_shopper_cannot_read_or_dispute_anothers_visits(web: Web) -> None:
    env = web.env
    theirs = env.charged([("P6", 1)], account="acct-them")
    mine = env.charged([("P1", 1)], account="acct-me")
    me = web.app.state.ops.tokens.issue("acct-me", actor="t")
    c = web.client()
    assert [x["visit"] for x in c.get("/api/v1/visits", headers=_bearer(me)).json()["visits"]] == [mine]
    r = c.get(f"/api/v1/visits/{theirs}", headers=_bearer(me))
    missing = c.get("/api/v1/visits/no-such-visit", headers=_bearer(me))
    assert r.status_code == missing.status_code == 404
    assert r.json() == missing.json()  # does not even tell that it exists
    assert "P6" not in r.text and "acct-them" not in r.text
    r = c.post(
        f"/api/v1/visits/{theirs}/disputes", json={"sku": "P6", "reason": "let me try"}, headers=_bearer(me)
    )
    assert r.status_code == 404
    assert queue(env.db).total == 0


def test_reviewer_pages_and_actions_end_to_end(web: Web) -> None:
    env = web.env
    v = env.visit([("P2", 1), ("P4", 1)], account="acct-w")
    rita = web.client("rita")
    page = rita.get(f"/visits/{v}")
    assert page.status_code == 200 and "9.00" not in page.text and "6.00 USD" in page.text
    adj = re.search(
        r"lines/" + re.escape(f"{v}-e1") + r'/remove".*?name="adj" value="([^"]+)"', page.text, re.DOTALL
    )
    assert adj is not None
    data = {"csrf": csrf_of(rita), "adj": adj.group(1), "reason_code": "wrong_product", "note": "not a P4"}
    r = rita.post(f"/visits/{v}/lines/{v}-e1/remove", data=data, follow_redirects=False)
    assert r.status_code == 303 and "removed" in r.headers["location"]
    again = rita.post(f"/visits/{v}/lines/{v}-e1/remove", data=data, follow_redirects=False)
    assert "already+done" in again.headers["location"]
    r = rita.post(f"/visits/{v}/approve", data={"csrf": csrf_of(rita)}, follow_redirects=False)
    assert "charged+2.00+USD" in r.headers["location"]
    page = rita.get(f"/visits/{v}")
    assert 'id="visit-status">charged' in page.text and "remove_line" in page.text and "approve" in page.text
    r = rita.post(
        f"/visits/{v}/lines/{v}-e0/remove",
        data=data | {"adj": "adj-0123456789abcdef"},
        follow_redirects=False,
    )
    assert "refund+instead" in r.headers["location"]
    assert rita.get("/visits/nope").status_code == 404
    assert rita.get(f"/visits/{v}/floor.png").headers["content-type"] == "image/png"
    assert rita.get(f"/visits/{v}/floor.png?line={v}-e0").status_code == 200
