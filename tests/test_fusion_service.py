"""The fusion service through the in-process bus on the scripted session (tests/helpers_fusion_scene.py):
receipts on the wire and in the database, exactly one capture per visit, review items, account standing and
the gate's refusal, duplicates, a restart in the middle, effects retried after a database failure."""

from __future__ import annotations

import functools
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from calibration.config import ConfigError
from edge.gate import EntryGate
from fusion import store_db
from fusion.db import Database, cart_lines, engine_snapshots, inbox, trajectories, visits
from fusion.engine import VisitSettled
from fusion.payments import LedgerGateway
from fusion.service import FusionService, ServiceSettings, load_fusion_config
from tests.conftest import free_port
from tests.fusion_scene import T0
from tests.helpers_fusion_scene import ACCOUNTS, DECLINING, EXPECTED, scene_messages, scene_store_with_id
from tests.helpers_fusion_service import (
    captures_per_visit,
    ledger_with_accounts,
    payment_journal,
    publish,
    receipts_by_account,
)
from wire.bus import InProcessBus
from wire.entry_codes import issue
from wire.messages import (
    AccountStatusMsg,
    CartSnapshotMsg,
    GateEntryMsg,
    ReceiptMsg,
    ShelfEventMsg,
    StatusMsg,
    TracksMsg,
)
from wire.topics import Kind, TopicInfo

STORE_ID = "t1"
SECRET = b"0123456789abcdef-test-secret"


class Run:
    """One fusion service on an in-process bus, a publisher for the scene, and a watcher of its output."""

    def __init__(
        self,
        db: Database,
        bus: InProcessBus | None = None,
        *,
        payments: LedgerGateway | None = None,
        settings: ServiceSettings | None = None,
    ):
        self.db = db
        self.store = scene_store_with_id(STORE_ID)
        self.bus = bus or InProcessBus(STORE_ID)
        self.ledger = payments or ledger_with_accounts(db, ACCOUNTS, DECLINING)
        self.out: list[Any] = []
        self.watcher = self.bus.client("watcher")
        for kind in (Kind.RECEIPT, Kind.CART, Kind.ACCOUNT, Kind.GATE_ENTRY):
            self.watcher.subscribe(kind, lambda info, msg: self.out.append(msg))
        self.watcher.start()
        self.settings = settings or ServiceSettings(snapshot_every_s=5.0)
        self.fusion_client = self.bus.client("fusion", "fusion")
        self.service = FusionService(self.store, db, self.fusion_client, self.ledger, settings=self.settings)
        self.service.start()
        self.pub = self.bus.client("sim", "sim")
        self.pub.start()

    def feed(self, msgs: list) -> None:
        for m in msgs:
            publish(self.pub, m)

    def receipts(self) -> list[ReceiptMsg]:
        return [m for m in self.out if isinstance(m, ReceiptMsg)]


def _scene(until: float | None = None) -> list:
    msgs = scene_messages(STORE_ID)
    return msgs if until is None else [m for m in msgs if m.ts < T0 + until]


def _sample(service: FusionService, name: str, labels: dict[str, str] | None = None) -> float:
    value = service.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


# ---------------------------------------------------------------------------------------------- the session
def test_session_gives_receipts_rows_payments_reviews_and_standing(db: Database) -> None:
    run = Run(db)
    msgs = _scene()
    run.feed(msgs)

    # receipts on the wire: one per visit, the expected outcome each
    published = {r.account: (r.status, r.total) for r in run.receipts()}
    assert published == EXPECTED
    assert len(run.receipts()) == 4
    # ... and in the database, with the charge key the ledger used
    rows = receipts_by_account(db)
    assert {a: (r["status"], r["total"]) for a, r in rows.items()} == EXPECTED
    alice = rows["acct-alice"]
    assert alice["charge_key"] == f"capture:{alice['visit']}"
    assert [(ln["sku"], ln["qty"], ln["amount"]) for ln in alice["lines"]] == [("P2", 1, 200)]
    assert rows["acct-bob"]["reasons"] == ["product identification p=0.60"]
    assert rows["acct-dave"]["failure_code"] == "card_declined"

    # payments: exactly one capture per charged visit, the held visit keeps its hold, the empty one is
    # cancelled
    journal = payment_journal(db)
    caps = captures_per_visit(journal)
    assert caps == {f"capture:{rows['acct-alice']['visit']}": 1, f"capture:{rows['acct-dave']['visit']}": 1}
    by_key = {r["key"]: r for r in journal}
    assert by_key[f"capture:{rows['acct-alice']['visit']}"]["status"] == "succeeded"
    assert by_key[f"capture:{rows['acct-dave']['visit']}"]["status"] == "failed"
    assert by_key[f"hold:{rows['acct-dave']['visit']}"]["status"] == "failed"
    assert f"cancel:{rows['acct-carol']['visit']}" in by_key
    assert not any(k.endswith(rows["acct-bob"]["visit"]) and v["kind"] != "hold" for k, v in by_key.items())
    assert run.ledger.account_state("acct-bob").held == 5000
    assert run.ledger.account_state("acct-alice").captured == 200

    # database rows: visits closed with their shopper, cart lines with their evidence, trajectories at ~2 Hz
    with db.read() as conn:
        vrows = {r.account: r for r in conn.execute(sa.select(visits))}
        lines = {r.line_id: r for r in conn.execute(sa.select(cart_lines))}
        traj = Counter(r.visit for r in conn.execute(sa.select(trajectories)))
        reviews = store_db.review_items_all(conn)
    assert {v.status for v in vrows.values()} == {"closed"}
    assert all(len(v.shoppers) == 1 for v in vrows.values())
    assert vrows["acct-alice"].hold_status == "authorized" and vrows["acct-dave"].hold_status == "failed"
    e1 = lines["e1"]
    assert (e1.visit, e1.kind, e1.sku, e1.event_id, e1.uncertain) == (
        alice["visit"],
        "pick",
        "P2",
        "e1",
        False,
    )
    assert e1.shopper == vrows["acct-alice"].shoppers[0] and e1.cameras and e1.lanes == ["L2"]
    assert 0.5 < e1.confidence <= 1 and 0 < e1.margin <= 1
    assert (lines["e5"].kind, lines["e5"].qty) == ("put_back", -1)
    assert lines["e2"].uncertain and "p=0.60" in lines["e2"].reason
    for account, v in vrows.items():
        seconds = v.exited_at - v.entered_at
        assert 1.5 * seconds <= traj[v.visit] <= 2 * seconds + 3, (account, traj[v.visit], seconds)

    # review: the held visit and the event nobody could have done
    assert {(r["kind"], r["item_key"], r["state"]) for r in reviews} == {
        ("visit", f"visit:{rows['acct-bob']['visit']}", "open"),
        ("event", "event:e0", "open"),
    }

    # live carts were retained; the last one of each visit is closed
    carts = [m for m in run.out if isinstance(m, CartSnapshotMsg)]
    last = {c.visit: c for c in carts}
    assert {c.state for c in last.values()} == {"closed"}
    assert last[alice["visit"]].total == 200 and last[rows["acct-carol"]["visit"]].total == 0
    retained = run.bus.retained()
    assert f"walkout/v1/{STORE_ID}/carts/{alice['visit']}" in retained

    # the failed payment blocked dave (retained standing), and the gate on the same bus refuses him
    standing = [m for m in run.out if isinstance(m, AccountStatusMsg)]
    assert standing and all(m.account == "acct-dave" and m.state == "blocked" for m in standing)
    gate_client = run.bus.client("G1", "gate")
    gate = EntryGate(STORE_ID, "G1", SECRET, gate_client, clock=lambda: T0 + 100)
    gate.attach()
    gate_client.start()
    refused = gate.scan(issue(SECRET, STORE_ID, "acct-dave", T0 + 95))
    assert refused is not None and (refused.accepted, refused.reason) == (False, "payment_failed")
    ok = gate.scan(issue(SECRET, STORE_ID, "acct-alice", T0 + 95))
    assert ok is not None and ok.accepted
    entries = [m for m in run.out if isinstance(m, GateEntryMsg)]
    assert [(e.account, e.ts) for e in entries][-1] == ("acct-alice", T0 + 100)
    assert gate.counters["refused_payment_failed"] == 1 and gate.counters["accepted"] == 1

    # metrics
    svc = run.service
    n_tracks = sum(isinstance(m, TracksMsg) for m in msgs)
    assert _sample(svc, "walkout_fusion_messages_total", {"kind": "tracks"}) == n_tracks
    assert _sample(svc, "walkout_fusion_receipts_total", {"status": "charged"}) == 1
    assert _sample(svc, "walkout_fusion_exit_to_receipt_seconds_count") == 4
    svc.refresh_gauges()
    assert _sample(svc, "walkout_fusion_review_queue") == 2
    assert _sample(svc, "walkout_fusion_visits_open") == 0  # alice's new scan waits for event time to pass it
    publish(run.pub, TracksMsg(source="c1", seq=10**6, ts=T0 + 101, camera="c1", frame=1010))
    svc.refresh_gauges()
    assert _sample(svc, "walkout_fusion_visits_open") == 1
    assert _sample(svc, "walkout_fusion_transport_messages_total", {"counter": "received"}) >= len(msgs)
    port = free_port()
    svc.metrics.serve(port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        svc.metrics.stop_serving()
    for name in (
        "walkout_fusion_messages_total",
        "walkout_fusion_review_queue",
        "walkout_fusion_visits_open",
        "walkout_fusion_exit_to_receipt_seconds_bucket",
        "walkout_fusion_duplicates_total",
    ):
        assert name in text

    # ops attaches a working card: the ledger forgets the failure and fusion publishes dave's standing as ok
    run.ledger.set_payment_method("acct-dave", label="new card")
    assert svc.refresh_account("acct-dave") == "ok"
    assert svc.refresh_account("acct-alice") is None  # never failed: no standing to publish
    assert not gate.is_blocked("acct-dave")
    assert gate.scan(issue(SECRET, STORE_ID, "acct-dave", T0 + 95)).accepted
    run.service.stop()


# ----------------------------------------------------------------------------------------------- duplicates
def test_duplicates_are_counted_and_never_fed_twice(sqlite_db: Database) -> None:
    run = Run(sqlite_db)
    msgs = _scene(12.0)
    run.feed(msgs)
    svc = run.service
    before = dict(svc.engine.stats.processed)
    # straight to the handler, past the transport's de-duplicator: the inbox's (source, seq) refuses them
    recent = msgs[-5:]
    for m in recent:
        svc.handle(TopicInfo(Kind.TRACKS, STORE_ID, m.camera), m)
    assert svc.counters["duplicates"] == len(recent)
    # older ones (their inbox rows went with a snapshot) are known to the de-duplicator the snapshot keeps
    old = [m for m in msgs if not isinstance(m, TracksMsg)][:4]
    for m in old:
        svc.offer(m)
    assert svc.counters["duplicates"] == len(recent) + len(old)
    assert _sample(svc, "walkout_fusion_duplicates_total") == len(recent) + len(old)
    assert dict(svc.engine.stats.processed) == before
    again = recent + old
    # a repeated publication on the bus is dropped by the transport before the service
    publish(run.pub, msgs[-1])
    assert run.fusion_client.counters.duplicate >= 1
    assert svc.counters["duplicates"] == len(again)


# ------------------------------------------------------------------------------------------------ restarts
@functools.cache
def clean_receipts() -> dict[str, dict[str, Any]]:
    """The session's receipts from a run without restarts (SQLite; ids and amounts do not depend on the
    database, so the PostgreSQL runs compare with it too)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "clean.db")
        db.migrate()
        Run(db).feed(_scene())
        out = receipts_by_account(db)
        db.dispose()
    return out


def test_restart_in_the_middle_replays_the_inbox_and_charges_once(db_factory) -> None:
    want = clean_receipts()
    db = db_factory.new()
    msgs = _scene()
    bus = InProcessBus(STORE_ID)
    first = Run(db, bus)
    cut = len(msgs) * 3 // 5  # bob and dave are in the store, alice has paid
    first.feed(msgs[:cut])
    assert first.service.counters["snapshots"] >= 2
    with db.read() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one()
        snaps = conn.execute(sa.select(sa.func.count()).select_from(engine_snapshots)).scalar_one()
    assert 0 < left < cut and snaps == 1  # older inbox rows and snapshots were pruned
    first.fusion_client.kill()  # gone without a goodbye: no snapshot, the bus keeps its session

    second = Run(db, bus, payments=first.ledger)
    assert second.service.counters["replayed"] == left
    second.feed(msgs[cut:])
    assert receipts_by_account(db) == {a: {**r} for a, r in want.items()}
    journal = payment_journal(db)
    assert set(captures_per_visit(journal).values()) == {1}
    assert Counter(r["key"] for r in journal).most_common(1)[0][1] == 1
    assert {r.account for r in second.receipts() + first.receipts()} == set(EXPECTED)


def test_effects_wait_and_are_retried_when_the_database_fails(sqlite_db: Database) -> None:
    class FlakyLedger(LedgerGateway):
        """The real ledger, whose database is away for its next two captures."""

        failures_left = 2

        def capture(self, *args: Any, **kwargs: Any):
            if self.failures_left:
                self.failures_left -= 1
                raise OperationalError("INSERT INTO payment_records", {}, Exception("database is locked"))
            return super().capture(*args, **kwargs)

    ledger = FlakyLedger(sqlite_db, currency="USD")
    for account in ACCOUNTS.values():
        ledger.ensure_account(account, declines=account in DECLINING)
    run = Run(sqlite_db, payments=ledger)
    msgs = _scene(12.0)  # alice's whole visit
    svc = run.service
    fed = 0
    while svc.counters["effect_failures"] == 0:
        publish(run.pub, msgs[fed])
        fed += 1
    assert len(svc._pending) >= 1 and isinstance(svc._pending[0], VisitSettled)
    with sqlite_db.read() as conn:
        assert store_db.receipt_get(conn, next(iter(svc.engine.visits.visits))).status == "pending"
    snaps = svc.counters["snapshots"]
    assert not svc.snapshot()  # it retries the effect first (fails again): no snapshot while one waits
    assert svc.counters["effect_failures"] == 2 and svc.counters["snapshots"] == snaps
    run.feed(msgs[fed:])
    assert not svc._pending
    assert receipts_by_account(sqlite_db)["acct-alice"]["status"] == "charged"
    assert set(captures_per_visit(payment_journal(sqlite_db)).values()) == {1}
    assert svc.snapshot()


def test_clean_stop_snapshots_empties_the_inbox_and_says_stopped(sqlite_db: Database) -> None:
    run = Run(sqlite_db, settings=ServiceSettings(snapshot_every_s=1000.0))
    run.feed(_scene(8.0))
    run.service.stop()
    with sqlite_db.read() as conn:
        assert store_db.inbox_size(conn) == 0
        snap = store_db.latest_snapshot(conn)
    assert snap is not None and snap.event_ts == pytest.approx(T0 + 7.9, abs=0.05)
    status = run.bus.retained()[f"walkout/v1/{STORE_ID}/status/fusion"]
    assert b'"state":"stopped"' in status


# -------------------------------------------------------------------------------------------- device status
@pytest.mark.parametrize(
    ("device", "kind", "held"),
    [
        ("c3", "camera", True),  # a camera offline during the visits: every visit is held
        ("fusion", "fusion", False),  # fusion's own last will never holds anything
        ("sim2", "sim", False),  # nor does another kind of device
    ],
)
def test_device_status_reaches_the_engine_only_for_cameras_and_shelves(
    sqlite_db: Database, device: str, kind: str, held: bool
) -> None:
    run = Run(sqlite_db)
    msgs = _scene(12.5)
    # stamped with the wall clock, as transports stamp their status: must not move event time
    offline = StatusMsg(source=device, seq=10**15, ts=T0 + 10**6, device=device, kind=kind, state="offline")
    run.feed(msgs[:100])
    publish(run.pub, offline)
    run.feed(msgs[100:])
    receipt = receipts_by_account(sqlite_db)["acct-alice"]
    assert receipt["status"] == ("held_for_review" if held else "charged")
    assert any(device in r for r in receipt["reasons"]) == held
    assert run.service.engine.clock < T0 + 13
    with sqlite_db.read() as conn:
        events = conn.execute(
            sa.text("SELECT device, state FROM device_events WHERE source = :s AND seq = :q"),
            {"s": device, "q": 10**15},
        ).all()
    assert [tuple(e) for e in events] == [(device, "offline")]



def test_watermark_heartbeats_go_to_the_inbox_not_to_device_events(sqlite_db: Database) -> None:
    """A shelf gateway's watermark heartbeats (several a second) reach the engine through the inbox but are not
    device events; its full status (with counters) still is one."""
    run = Run(sqlite_db)
    msgs = _scene(12.5)
    run.feed(msgs[:100])
    beats = [StatusMsg(source="shelf-x", seq=k, ts=T0 + 1 + 0.25 * k, device="shelf-x", kind="shelf",
                       state="online", watermark=T0 + 0.25 * k) for k in range(4)]
    full = StatusMsg(source="shelf-x", seq=4, ts=T0 + 2.5, device="shelf-x", kind="shelf", state="online",
                     watermark=T0 + 2.4, counters={"events": 3})
    for m in [*beats, full]:
        publish(run.pub, m)
    run.feed(msgs[100:])
    with sqlite_db.read() as conn:
        events = conn.execute(sa.text("SELECT seq FROM device_events WHERE source = 'shelf-x'")).scalars().all()
    assert events == [4]
    assert run.service.engine.shelf_marks["shelf-x"][0] >= T0 + 0.75


@pytest.mark.parametrize("inbox_relaxed", [True, False])
def test_a_replay_keeps_track_frames_out_of_the_inbox_with_the_same_receipts(sqlite_db: Database,
                                                                             inbox_relaxed: bool) -> None:
    """``inbox_relaxed=False`` (what a replay sets): track frames reach the engine without an inbox row; gate
    scans and shelf events still commit there first; the receipts are the same."""
    run = Run(sqlite_db, settings=ServiceSettings(snapshot_every_s=1e9, inbox_relaxed=inbox_relaxed))
    msgs = _scene()
    run.feed(msgs)
    with sqlite_db.read() as conn:
        kinds = Counter(conn.execute(sa.select(inbox.c.kind)).scalars().all())
    n_tracks = sum(isinstance(m, TracksMsg) for m in msgs)
    assert kinds[Kind.TRACKS.value] == (n_tracks if inbox_relaxed else 0)
    assert kinds[Kind.SHELF_EVENTS.value] == sum(isinstance(m, ShelfEventMsg) for m in msgs) > 0
    assert receipts_by_account(sqlite_db) == clean_receipts()


# ------------------------------------------------------------------------------------------- tables, config
def test_cart_lines_are_append_only(db: Database) -> None:
    run = Run(db)
    run.feed(_scene(8.0))
    for change in ("UPDATE cart_lines SET qty = 5", "DELETE FROM cart_lines"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.begin() as conn:
            conn.execute(sa.text(change))
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(cart_lines)).scalar_one() == 1


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("lateness_s: -1\n", "lateness_s"),
        ("floor:\n  gate_chi2: 0\n", "floor.gate_chi2"),
        ("checkout:\n  hold_amount: 12.5\n", "checkout.hold_amount"),
        ("association:\n  frobnicate: 1\n", "association.frobnicate"),
        ("association:\n  body_at_step_s: 4\n", "association.body_at_step_s"),  # beyond the body's profile
    ],
)
def test_bad_fusion_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "fusion.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_fusion_config(path)
    assert err.value.field == field and str(path) in str(err.value)


def test_good_fusion_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "fusion.yaml"
    path.write_text("lateness_s: 0.5\ncheckout:\n  hold_amount: 2000\n")
    cfg = load_fusion_config(path)
    assert cfg.lateness_s == 0.5 and cfg.checkout.hold_amount == 2000
