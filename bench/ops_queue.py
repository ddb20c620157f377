"""Ops queue benchmark: how fast the review queue page answers with many visits in the database.

    python -m bench.ops_queue [--visits 10000] [--requests 40] [--pg URL] [--sqlite] [--json]

Fills a fresh PostgreSQL schema (dropped at the end) with ``--visits`` settled visits (two cart lines and a
receipt each; a third held with an open review item, one in ten with an unassigned event: ~4,300 open items
at 10,000 visits; tests/helpers_ops.py ``bulk_visits``), serves the real app with uvicorn on a local port and
asks for the queue page over HTTP as a logged-in reviewer, ``--requests`` times each for:

* ``page``: ``GET /queue`` (the oldest 50 items, the counts and ages per category, rendered);
* ``page, category``: ``GET /queue?category=offline`` (a filtered page);
* ``page, last``: the last page (the newest items: the deepest OFFSET);
* ``query``: :func:`fusion.ops.review.queue` alone, in process (the database's share);
* ``peer``: the same page on a tenth of the visits in another schema, in the same process: the ratio
  ``page / peer`` says how the page scales with the queue's size.

With ``--sqlite`` the same is run on a SQLite file as well.  Prints median and p95 (ms) per case, and one
JSON object with ``--json``.  The issue's goal: the queue page answers in < 200 ms at 10,000 visits.

Measured 2026-11-29 (2-core machine shared with a training run; ``--requests 15``, PostgreSQL, 10,000 visits,
4,334 open items): page median 39.5 ms, p95 74.5 ms; last page 33.3 ms; the query alone 19.0 ms; page / peer
(a tenth of the visits) 2.85.  About 15 s to run.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from fusion.db import Database
from fusion.ops.app import OpsSettings, create_app
from fusion.ops.auth import AuthSettings
from fusion.ops.queue import queue
from fusion.payments import LedgerGateway
from tests.helpers_ops import bulk_visits, ops_store
from tests.helpers_ops_server import serve

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PASSWORD = "bench-reviewer-pass"


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
    return {"median_ms": round(statistics.median(s) * 1000, 2), "p95_ms": round(p95 * 1000, 2), "n": len(s)}


def _timed(fn: Any, n: int) -> list[float]:
    fn()  # warm-up (connections, template compilation)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _login(client: httpx.Client) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": token, "next": "/queue"})
    if "wo_session" not in client.cookies:
        raise RuntimeError(f"login failed: {r.status_code}")


def run_backend(db: Database, visits: int, requests: int, peer_db: Database | None) -> dict[str, Any]:
    store = ops_store()
    out: dict[str, Any] = {"backend": db.dialect, "visits": visits}
    t = time.perf_counter()
    bulk_visits(db, store, visits)
    out["fill_s"] = round(time.perf_counter() - t, 1)
    q = queue(db, per_page=1)
    out["open_items"] = q.total
    ledger = LedgerGateway(db, currency=store.store.currency)
    fast = AuthSettings(argon2_time_cost=1, argon2_memory_kib=8192, argon2_parallelism=1)
    app = create_app(db, store, ledger, settings=OpsSettings(auth=fast))
    app.state.ops.users.create("bench", "reviewer", PASSWORD, actor="bench")
    last = q.pages if q.per_page == 50 else -(-q.total // 50)
    cases: dict[str, list[float]] = {}
    with serve(app, log_level="warning") as url, httpx.Client(base_url=url) as client:
        _login(client)

        def get(path: str) -> Any:
            def go() -> None:
                r = client.get(path)
                if r.status_code != 200 or "Review queue" not in r.text:
                    raise RuntimeError(f"{path}: {r.status_code}")

            return go

        cases["page"] = _timed(get("/queue"), requests)
        cases["page, category"] = _timed(get("/queue?category=offline"), requests)
        cases["page, last"] = _timed(get(f"/queue?page={last}"), requests)
    cases["query"] = _timed(lambda: queue(db), requests)
    if peer_db is not None:
        bulk_visits(peer_db, store, max(1, visits // 10))
        papp = create_app(peer_db, store, LedgerGateway(peer_db), settings=OpsSettings(auth=fast))
        papp.state.ops.users.create("bench", "reviewer", PASSWORD, actor="bench")
        with serve(papp, log_level="warning") as url, httpx.Client(base_url=url) as client:
            _login(client)
            cases["peer"] = _timed(lambda: client.get("/queue"), requests)
    out["cases"] = {k: _stats(v) for k, v in cases.items()}
    if "peer" in cases:
        out["page_over_peer"] = round(statistics.median(cases["page"]) / statistics.median(cases["peer"]), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visits", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL URL (default %(default)s)")
    ap.add_argument("--sqlite", action="store_true", help="also run on a SQLite file")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = []
    schema = f"bench_ops_{secrets.token_hex(3)}"
    pg = Database(args.pg, schema=schema)
    peer = Database(args.pg, schema=schema + "_peer")
    try:
        pg.migrate()
        peer.migrate()
        results.append(run_backend(pg, args.visits, args.requests, peer))
    finally:
        pg.drop_schema()
        peer.drop_schema()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as d:
            lite = Database(Path(d) / "ops.db")
            lite.migrate()
            results.append(run_backend(lite, args.visits, args.requests, None))
            lite.dispose()
    if args.json:
        print(json.dumps({"bench": "ops_queue", "goal_ms": 200, "results": results}))
        return 0
    print(f"ops queue page, {args.visits} visits, {args.requests} requests per case (ms)")
    print(f"{'backend':<11}{'case':<17}{'median':>9}{'p95':>9}")
    for r in results:
        for case, s in r["cases"].items():
            print(f"{r['backend']:<11}{case:<17}{s['median_ms']:>9.1f}{s['p95_ms']:>9.1f}")
        extra = f", page/peer {r['page_over_peer']}" if "page_over_peer" in r else ""
        print(f"{'':<11}open items {r['open_items']}, filled in {r['fill_s']} s{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
