"""The issue's "done when": ``kill -9`` of the fusion process at random moments during a session gives the
same
receipts as a clean run, and exactly one charge per visit — on SQLite and on PostgreSQL.

``walkout fusion`` runs as a subprocess against the real Mosquitto (a store id of its own per run) and a fresh
database; the test publishes the scripted session (tests/helpers_fusion_scene.py) with QoS 1 through an
``MqttTransport`` with an outbox, SIGKILLs fusion at several random moments (publishing on while it is down,
so the broker queues for its persistent session), restarts it, and compares the receipts table and the
payment journal with a clean run's (the same service, nothing killed), and the published receipts with the
database.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from fusion import store_db
from fusion.db import Database
from fusion.service import FusionService, ServiceSettings
from tests.fixtures_db import DbFactory, url_of
from tests.fixtures_mqtt import ROOT, wait_for
from tests.helpers_fusion_scene import (
    ACCOUNTS,
    DECLINING,
    EXPECTED,
    scene_messages,
    scene_store_with_id,
    scene_yaml,
)
from tests.helpers_fusion_service import (
    captures_per_visit,
    ledger_with_accounts,
    payment_journal,
    publish,
    receipts_by_account,
)
from wire.bus import InProcessBus
from wire.messages import ReceiptMsg
from wire.mqtt import MqttTransport
from wire.topics import Kind

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

KILLS = 3
SEED = int(os.environ.get("WALKOUT_KILL_SEED", "0")) or random.SystemRandom().randrange(1, 10**6)


class FusionProcess:
    """``walkout fusion`` as a subprocess; its log goes to a file."""

    def __init__(self, store_yaml: Path, db_url: str, port: int, log_path: Path):
        self.cmd = [
            sys.executable,
            "-m",
            "walkout.cli",
            "fusion",
            "--store",
            str(store_yaml),
            "--db",
            db_url,
            "--broker",
            f"127.0.0.1:{port}",
            "--snapshot-every",
            "3",
            "--status-every",
            "1",
        ]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.starts += 1
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
        if not line.startswith(b"fusion ready"):
            self.proc.kill()
            raise AssertionError(f"fusion did not come up: {line!r}\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        rc = self.proc.wait(30)
        assert rc == 0, f"fusion exited with {rc}\n{self.log_tail()}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class ReceiptWatcher:
    """Collects the receipts fusion publishes (an ordinary subscriber, like the shopper app)."""

    def __init__(self, store_id: str, port: int):
        self.got: list[ReceiptMsg] = []
        self._lock = threading.Lock()
        self.t = MqttTransport(store_id, "watcher", "other", "127.0.0.1", port, backoff=(0.05, 0.5))
        self.t.subscribe(Kind.RECEIPT, self._on)
        self.t.start()
        assert self.t.wait_ready(10)

    def _on(self, info: Any, msg: Any) -> None:
        with self._lock:
            self.got.append(msg)

    def receipts(self) -> list[ReceiptMsg]:
        with self._lock:
            return list(self.got)


def _finished(db: Database) -> bool:
    with db.read() as conn:
        rows = store_db.all_receipts(conn)
    return len(rows) == len(EXPECTED) and all(r.status != "pending" for r in rows)


def run_session(
    db_factory: DbFactory, tmp: Path, port: int, kills: list[int], rng: random.Random
) -> dict[str, Any]:
    """One session through a fusion subprocess, SIGKILLed after each message index in ``kills``."""
    db = db_factory.new()
    ledger_with_accounts(db, ACCOUNTS, DECLINING)
    store_id = "k" + uuid.uuid4().hex[:10]
    tmp.mkdir(parents=True, exist_ok=True)
    fusion = FusionProcess(scene_yaml(tmp / "store.yaml", store_id), url_of(db), port, tmp / "fusion.log")
    watcher = ReceiptWatcher(store_id, port)
    pub = MqttTransport(store_id, "scene", "sim", "127.0.0.1", port, backoff=(0.05, 0.5))
    pub.start()
    msgs = scene_messages("t1")  # the topics carry the run's store id; payloads are the store-free scene
    fusion.start()
    try:
        start = 0
        for cut in [*sorted(kills), len(msgs)]:
            for m in msgs[start:cut]:
                publish(pub, m)
            start = cut
            if cut == len(msgs):
                break
            assert pub.flush(30), "the broker did not take the messages"
            time.sleep(rng.uniform(0.0, 0.6))  # fusion is somewhere in its work on them
            fusion.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            fusion.start()
        assert pub.flush(30)
        wait_for(
            lambda: _finished(db), 120, f"the receipts of the session (fusion log:\n{fusion.log_tail()})"
        )
        wait_for(
            lambda: len({r.visit for r in watcher.receipts()}) == len(EXPECTED), 20, "published receipts"
        )
        fusion.stop()
    finally:
        if fusion.proc is not None and fusion.proc.poll() is None:
            fusion.proc.kill()
        pub.stop(timeout=2)
        watcher.t.stop(timeout=2)
    journal = payment_journal(db)
    published = [
        (r.visit, r.account, r.status, r.total, [ln.model_dump() for ln in r.lines], r.charge_key)
        for r in watcher.receipts()
    ]
    return {
        "receipts": receipts_by_account(db),
        "journal": journal,
        "published": published,
        "starts": fusion.starts,
    }


def clean_session(db_factory: DbFactory) -> dict[str, Any]:
    """The reference: the same session, the same service code, nothing killed (in this process, through the
    in-process bus, which delivers in publish order as the broker does for one publisher)."""
    db = db_factory.new()
    ledger = ledger_with_accounts(db, ACCOUNTS, DECLINING)
    bus = InProcessBus("t1")
    service = FusionService(
        scene_store_with_id("t1"),
        db,
        bus.client("fusion", "fusion"),
        ledger,
        settings=ServiceSettings(snapshot_every_s=3.0),
    )
    service.start()
    pub = bus.client("scene", "sim")
    pub.start()
    for m in scene_messages("t1"):
        publish(pub, m)
    service.stop()
    return {"receipts": receipts_by_account(db), "journal": payment_journal(db)}


def _money(journal: list[dict[str, Any]]) -> set[tuple]:
    return {(r["key"], r["kind"], r["account"], r["amount"], r["status"], r["record_id"]) for r in journal}


def test_kill_9_at_random_moments_gives_identical_receipts_and_one_charge_per_visit(
    db_factory: DbFactory, tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    rng = random.Random(SEED)
    n = len(scene_messages("t1"))
    kills = sorted(rng.sample(range(n // 10, n - n // 20), KILLS))
    print(f"seed {SEED} (WALKOUT_KILL_SEED), {db_factory.backend}, kills after messages {kills} of {n}")

    clean = clean_session(db_factory)
    killed = run_session(db_factory, tmp_path / "killed", mqtt_broker[1], kills, rng)

    assert {a: (r["status"], r["total"]) for a, r in clean["receipts"].items()} == EXPECTED
    assert killed["receipts"] == clean["receipts"]
    assert killed["starts"] == KILLS + 1
    # the money: the same journal entries, and one capture per charged or declined visit, never two
    assert _money(killed["journal"]) == _money(clean["journal"])
    caps = captures_per_visit(killed["journal"])
    assert sorted(caps.values()) == [1, 1]
    assert len({r["key"] for r in killed["journal"]}) == len(killed["journal"])
    # every receipt published (a restart may publish one again) says the same as the database
    for visit, account, status, total, lines, key in killed["published"]:
        row = killed["receipts"][account]
        assert (visit, status, total, key) == (row["visit"], row["status"], row["total"], row["charge_key"])
        assert [(ln["sku"], ln["qty"], ln["amount"]) for ln in lines] == [
            (ln["sku"], ln["qty"], ln["amount"]) for ln in row["lines"]
        ]
    print(
        json.dumps(
            {
                "backend": db_factory.backend,
                "seed": SEED,
                "kills": kills,
                "published_receipts": len(killed["published"]),
                "visits": len(killed["receipts"]),
            }
        )
    )
