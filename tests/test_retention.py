"""Retention is enforced: per-visit evidence beyond what the record of money needs is deleted once it is older
than the retention, by the code paths the processes run — fusion's upkeep (trajectories, device status events),
its snapshots (the inbox), the ops evidence of shelf events, and the edge cameras' evidence frames — while
receipts, cart lines and payment records stay."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from edge.evidence import DAY_S, EvidenceRecorder, EvidenceStore
from fusion.db import (
    Database,
    cart_lines,
    device_events,
    inbox,
    ops_event_evidence,
    payment_records,
    receipts,
    trajectories,
)
from fusion.ops import tap as tap_mod
from fusion.ops.tap import EvidenceTap
from fusion.service import FusionService, ServiceSettings
from tests.fixtures_mqtt import wait_for
from tests.helpers_fusion_scene import ACCOUNTS, DECLINING, EXPECTED, scene_messages, scene_store_with_id
from tests.helpers_fusion_service import ledger_with_accounts, publish
from wire.bus import InProcessBus
from wire.messages import ShelfEventMsg, TracksMsg

RETENTION_DAYS = 30.0
EVIDENCE_TABLES = {"trajectories": trajectories, "device_events": device_events, "inbox": inbox}
RECORD_TABLES = {"receipts": receipts, "cart_lines": cart_lines, "payment_records": payment_records}


def counts(db: Database, tables: dict[str, sa.Table]) -> dict[str, int]:
    with db.read() as conn:
        return {n: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for n, t in tables.items()}


def test_fusion_forgets_trajectories_status_events_and_inbox_past_retention_and_keeps_the_money(db: Database) -> None:
    bus = InProcessBus("t1")
    ledger = ledger_with_accounts(db, ACCOUNTS, DECLINING)
    service = FusionService(scene_store_with_id("t1"), db, bus.client("fusion", "fusion"), ledger,
                            settings=ServiceSettings(retention_days=RETENTION_DAYS, snapshot_every_s=1e9))
    service.start()
    pub = bus.client("scene", "sim")
    pub.start()
    msgs = scene_messages("t1")
    for m in msgs:
        publish(pub, m)
    service.tick()  # upkeep on the session's own clock: nothing is old yet
    fresh = counts(db, EVIDENCE_TABLES)
    records = counts(db, RECORD_TABLES)
    assert fresh["trajectories"] > 0 and fresh["device_events"] > 0 and fresh["inbox"] > 0
    assert records["receipts"] == len(EXPECTED) and records["cart_lines"] > 0

    # a camera frame a little more than the retention later: the event clock moves on, upkeep prunes (the
    # transports' own status messages carry the wall clock, so "later" is after both)
    later = max(max(m.ts for m in msgs), time.time()) + RETENTION_DAYS * 86400 + 3600
    cam = next(m for m in msgs if isinstance(m, TracksMsg))
    publish(pub, TracksMsg(source=cam.source, seq=cam.seq + 10**6, ts=later, camera=cam.camera, frame=cam.frame + 1))
    service.tick()
    aged = counts(db, EVIDENCE_TABLES)
    assert aged["trajectories"] == 0 and aged["device_events"] == 0
    service.stop()  # the stop's snapshot includes every inbox row: they go with it
    assert counts(db, EVIDENCE_TABLES)["inbox"] == 0
    assert counts(db, RECORD_TABLES) == records


def test_ops_evidence_of_shelf_events_is_pruned_past_retention(db: Database) -> None:
    bus = InProcessBus("t1")
    tap = EvidenceTap(db)
    tap.attach(sub := bus.client("ops-tap", "ops"))
    sub.start()
    pub = bus.client("scene", "sim")
    pub.start()
    msgs = [m for m in scene_messages("t1") if isinstance(m, ShelfEventMsg | TracksMsg)]
    for m in msgs:
        publish(pub, m)
    end = max(m.ts for m in msgs)
    # a late frame pushes the tap's clock past the last event's window, so every event is written
    cam = next(m for m in msgs if isinstance(m, TracksMsg))
    publish(pub, TracksMsg(source=cam.source, seq=cam.seq + 10**6, ts=end + 30, camera=cam.camera, frame=1))
    wait_for(lambda: counts(db, {"e": ops_event_evidence})["e"] > 0, 10, "ops evidence rows")
    kept = counts(db, {"e": ops_event_evidence})["e"]
    with db.begin() as conn:
        assert tap_mod.prune(conn, end - RETENTION_DAYS * 86400) == 0  # within retention: kept
    assert counts(db, {"e": ops_event_evidence})["e"] == kept
    with db.begin() as conn:  # what `walkout ops` runs every few minutes, a retention later
        assert tap_mod.prune(conn, end + RETENTION_DAYS * 86400 + 60 - RETENTION_DAYS * 86400) == kept
    assert counts(db, {"e": ops_event_evidence})["e"] == 0


def test_edge_evidence_frames_are_purged_by_the_recorder_past_retention(tmp_path: Path) -> None:
    now = [1_767_225_600.0]
    store = EvidenceStore(tmp_path / "evidence", retention_s=7 * DAY_S)
    rec = EvidenceRecorder(store, fps=2.0, purge_every_s=0.2, clock=lambda: now[0])
    img = np.full((48, 64, 3), 127, np.uint8)
    for i in range(10):
        rec.offer("cam1", now[0] + i * 0.5, img)
    wait_for(lambda: rec.counters["stored"] == 10, 10, "frames stored")
    files = list((tmp_path / "evidence").rglob("*.jpg"))
    assert len(files) == 10
    now[0] += 7 * DAY_S + 10  # a week and a bit later, on the recorder's clock
    rec.offer("cam1", now[0], img)  # wakes the writer thread, which purges on schedule
    wait_for(lambda: rec.counters["purged"] >= 10, 10, "the purge")
    rec.close()
    left = list((tmp_path / "evidence").rglob("*.jpg"))
    assert len(left) == 1 and all(f not in left for f in files)
