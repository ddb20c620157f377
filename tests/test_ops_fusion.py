"""The ops app on what the fusion service itself produced (the scripted session of tests/helpers_ops.py), on
both backends: the queue's items, order and categories; the evidence kept around every event (weights from
the load-cell blocks, tracks from the cameras); the pages and pictures of the visits and the unassigned
event."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from fusion.db import Database, ops_event_evidence
from fusion.ops.app import OpsSettings, create_app
from fusion.ops.queue import queue
from tests.helpers_ops import ERIN, seed_fusion
from tests.ops_fixtures import FAST_HASH, PASSWORDS, login

pytestmark = pytest.mark.slow


def test_queue_and_evidence_from_fusion(db: Database) -> None:
    seeded = seed_fusion(db)
    q = queue(db)
    got = [(i.category, i.account or i.event_id) for i in q.items]
    assert got == [
        ("uncertain", ERIN),
        ("unassigned", "e0"),
        ("uncertain", "acct-bob"),
        ("offline", "acct-carol"),
    ]
    assert q.counts == {"uncertain": 2, "dispute": 0, "offline": 1, "unassigned": 1}
    with db.read() as conn:
        rows = {r.event_id: r for r in conn.execute(sa.select(ops_event_evidence))}
    assert sorted(rows) == ["e0", "e1", "e2", "e3", "e4", "e5", "x1", "x2", "x3"]
    x3 = rows["x3"]
    assert [ln["lane"] for ln in x3.lanes] == ["L4"] and x3.candidates[0]["sku"] == "P4"
    samples = x3.weights["L4"]["samples"]
    assert samples[0] - samples[-1] == pytest.approx(
        150.0, abs=5.0
    )  # the trace shows -150 g, not a P4's 311 g
    assert set(x3.tracks) == {"c1", "c2", "c3"}
    counts = [len(f["tracks"]) for f in x3.tracks["c1"]]
    assert max(counts) == 1 and counts.count(1) > len(counts) // 2  # erin, alone in the store

    app = create_app(db, seeded.store, seeded.ledger, settings=OpsSettings(auth=FAST_HASH))
    app.state.ops.users.create("vera", "viewer", PASSWORDS["vera"], actor="test")
    from fastapi.testclient import TestClient

    c = TestClient(app)
    login(c, "vera", PASSWORDS["vera"])
    page = c.get(f"/visits/{seeded.visits[ERIN]}")
    assert page.status_code == 200
    assert "product identification p=0.55" in page.text and 'id="ev-x3"' in page.text
    assert "no evidence store configured" in page.text  # no frames folder given to this app
    for url in re.findall(r'src="(/(?:visits|events)/[^"]+\.png[^"]*)"', page.text):
        r = c.get(url.replace("&amp;", "&"))
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG", url
    event = c.get("/events/e0")
    assert event.status_code == 200 and "no shopper near the lanes" in event.text
    assert c.get("/events/e0/floor.png").status_code == 200
