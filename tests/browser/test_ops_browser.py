"""The ops app in Chromium against the real app, database (SQLite) and payment ledger, on data the fusion
service produced from the scripted session (tests/helpers_ops.py), with evidence frames rendered by the
simulator: log in, open the oldest queue item, see the evidence, remove the wrong line, approve (the capture
is the corrected total), refund one line, and read the refund back through the shopper API.  Saves the
screenshots docs/ops_queue.png and docs/ops_visit.png.  No password or token may appear in the logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from edge.evidence import EvidenceStore
from fusion.db import Database, payment_records
from fusion.ops.app import OpsSettings, create_app
from fusion.ops.auth import AuthSettings
from tests.helpers_ops import ERIN, render_evidence, seed_fusion, seed_synthetic
from tests.helpers_ops_server import serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PASSWORD = "reviewer-pass-9481"
SECRET = b"ops-browser-test-entry-secret"
FAST_HASH = AuthSettings(argon2_time_cost=1, argon2_memory_kib=8192, argon2_parallelism=1)


@dataclass
class Ops:
    url: str
    db: Database
    visit: str
    token: str
    ledger: object


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    d = tmp_path_factory.mktemp("ops_browser")
    db = Database(d / "ops.db")
    db.migrate()
    seeded = seed_fusion(db)
    render_evidence(seeded.store, d / "evidence", seeded.events)
    seed_synthetic(db, seeded.store, seeded.ledger)
    app = create_app(
        db,
        seeded.store,
        seeded.ledger,
        settings=OpsSettings(auth=FAST_HASH),
        evidence=EvidenceStore(d / "evidence", retention_s=1e9),
        entry_secret=SECRET,
    )
    ctx = app.state.ops
    ctx.users.create("rita", "reviewer", PASSWORD, actor="test")
    token = ctx.tokens.issue(ERIN, actor="test")
    with serve(app) as url:
        yield Ops(url, db, seeded.visits[ERIN], token, seeded.ledger)
    db.dispose()


def _loaded(page: Page, selector: str) -> None:
    """Wait until the first image matching ``selector`` has really loaded (decoded, non-zero size)."""
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=15000,
    )


def test_review_flow(ops: Ops, page: Page, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    page.set_viewport_size({"width": 1360, "height": 900})
    errors: list[str] = []  # console errors (a CSP violation, a script that fails) and failed image loads
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    # anonymous: the queue sends us to the login form
    page.goto(f"{ops.url}/queue")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#name", "rita")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/queue$"))

    # the queue: oldest first, with counts
    rows = page.locator("table.queue tbody tr")
    expect(rows).to_have_count(5)
    expect(page.locator("#counts")).to_contain_text("uncertain")
    assert page.evaluate("typeof htmx") == "object"  # the vendored htmx loaded under the page's CSP
    first = rows.first
    expect(first).to_contain_text(ops.visit)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "ops_queue.png"))

    # open the oldest item: erin's visit, three lines, the P4 one unsure; its evidence is on the page
    first.locator("a.open").click()
    expect(page).to_have_url(re.compile(re.escape(ops.visit)))
    expect(page.locator("#corrected-total")).to_have_text("9.00 USD")
    _loaded(page, "#ev-x3 img.evidence-frame")
    _loaded(page, "#ev-x3 img.weights")
    _loaded(page, "#ev-x3 img.floor")
    page.locator("#ev-x3").scroll_into_view_if_needed()
    page.screenshot(path=str(DOCS / "ops_visit.png"), full_page=True)

    # remove the wrong line (the shelf saw -150 g, a P4 weighs 311 g)
    row = page.locator("#line-x3")
    row.locator("summary").click()
    row.locator(".remove-form select[name=reason_code]").select_option("wrong_product")
    row.locator(".remove-form input[name=note]").fill("-150 g on L4 is not a P4")
    row.locator(".remove-form button").click()
    expect(page.locator(".flash.ok")).to_contain_text("line x3 removed")
    expect(page.locator("#corrected-total")).to_have_text("5.00 USD")

    # approve: the capture is the corrected total, under the visit's capture key
    page.click("#approve")
    expect(page.locator(".flash.ok")).to_contain_text("charged 5.00 USD")
    expect(page.locator("#visit-status")).to_have_text("charged")
    with ops.db.read() as conn:
        captures = conn.execute(
            sa.select(
                payment_records.c.idempotency_key, payment_records.c.amount, payment_records.c.status
            ).where(payment_records.c.kind == "capture", payment_records.c.account_id == ERIN)
        ).all()
    assert [tuple(c) for c in captures] == [(f"capture:{ops.visit}", 500, "succeeded")]

    # refund one line (the P2)
    row = page.locator("#line-x1")
    row.locator("summary").click()
    row.locator(".refund-form select[name=reason_code]").select_option("damaged")
    row.locator(".refund-form input[name=note]").fill("crushed box")
    row.locator(".refund-form button").click()
    expect(page.locator(".flash.ok")).to_contain_text("refunded 2.00 USD")
    expect(page.locator("#refunded")).to_have_text("2.00 USD")

    # the shopper sees the refund and why
    r = httpx.get(f"{ops.url}/api/v1/visits/{ops.visit}", headers={"Authorization": f"Bearer {ops.token}"})
    assert r.status_code == 200
    receipt = r.json()
    assert receipt["status"] == "charged"
    assert (receipt["charged"], receipt["refunded"], receipt["net"]) == (500, 200, 300)
    assert [(x["amount"], x["reason_code"], x["note"]) for x in receipt["refunds"]] == [
        (200, "damaged", "crushed box")
    ]
    assert [ln["sku"] for ln in receipt["lines"]] == ["P2", "P3"]

    assert errors == []

    # nothing secret was logged on the way (uvicorn's access log included)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    secrets_seen = [PASSWORD, ops.token, cookies.get("wo_session", "<none>")]
    assert "GET /queue" in caplog.text  # the access log was captured
    for s in secrets_seen:
        assert s not in caplog.text
