"""The issue's "done when": 10,000 QoS 1 messages from 4 publishers reach a persistent subscriber exactly
once each after de-duplication, through a real Mosquitto, across a SIGKILL of the subscriber process and a
restart of the broker, both in the middle of the stream."""

from __future__ import annotations

import json
import select
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures_mqtt import ROOT, shelf_event, wait_for
from wire.broker import MosquittoProcess, MosquittoSettings
from wire.mqtt import MqttTransport
from wire.topics import Kind

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

PUBLISHERS = 4
TOTAL = 10_000


class Subscriber:
    """The subscriber process (tests/helpers_mqtt_sub.py) and the SQLite file it commits to."""

    def __init__(self, broker: MosquittoProcess, store: str, db: Path):
        self.broker, self.store, self.db = broker, store, db
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers_mqtt_sub",
                "--port",
                str(self.broker.port),
                "--store",
                self.store,
                "--db",
                str(self.db),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
        if line.strip() != b"connected":
            self.proc.kill()
            raise AssertionError(f"subscriber did not come up: {line!r} {self.proc.stderr.read()[-2000:]!r}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(15)
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        assert self.proc.returncode == 0, err[-3000:]

    def _query(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.db, timeout=30) as db:
            return db.execute(sql).fetchall()

    def handled(self) -> list[tuple[str, int]]:
        return [(s, q) for s, q in self._query("SELECT source, seq FROM handled")] if self.db.exists() else []

    def count(self) -> int:
        return self._query("SELECT count(*) FROM handled")[0][0] if self.db.exists() else 0

    def runs(self) -> list[dict[str, int]]:
        return [json.loads(c) for (c,) in self._query("SELECT counters FROM runs ORDER BY rowid")]


@pytest.fixture
def bulk_broker(tmp_path: Path):
    """A test-owned broker with persistence saved on shutdown (and each minute), not after every change:
    saving after every change rewrites the whole queue each time, which takes minutes for 10,000 queued
    messages (the SIGKILL-the-broker test in test_transport_mqtt.py uses that crash-safe setting)."""
    broker = MosquittoProcess(
        MosquittoSettings(autosave_on_changes=False, autosave_interval=60), workdir=tmp_path / "broker"
    )
    broker.start()
    yield broker
    broker.close()


def test_10000_messages_exactly_once_across_subscriber_kill_and_broker_restart(
    bulk_broker: MosquittoProcess, store_id: str, tmp_path: Path
) -> None:
    mosquitto = bulk_broker
    sub = Subscriber(mosquitto, store_id, tmp_path / "subscriber.db")
    sub.start()  # creates the persistent session and its subscription
    pubs = [
        MqttTransport(store_id, f"shelf{k}", "shelf", mosquitto.host, mosquitto.port, backoff=(0.05, 0.5))
        for k in range(PUBLISHERS)
    ]
    for p in pubs:
        p.start()
    sent: set[tuple[str, int]] = set()

    def publish_all() -> None:
        for i in range(TOTAL // PUBLISHERS):
            for p in pubs:
                msg = shelf_event(p, i)
                sent.add((msg.source, msg.seq))
                p.publish(Kind.SHELF_EVENTS, p.device, msg)
            if i % 50 == 49:
                time.sleep(0.01)  # a steady stream rather than one burst

    publisher = threading.Thread(target=publish_all)
    t0 = time.monotonic()
    publisher.start()
    try:
        wait_for(lambda: sub.count() >= TOTAL * 0.2, 60, "the subscriber to handle 20 % of the messages")
        sub.kill()  # SIGKILL in the middle of the stream
        killed_at = sub.count()
        sub.start()  # same client id: resumes the session
        wait_for(lambda: sub.count() >= killed_at + TOTAL * 0.2, 60, "the restarted subscriber to catch up")
        mosquitto.restart()  # broker restart (SIGTERM: it saves its state) in the middle of the stream
        publisher.join(120)
        for p in pubs:
            assert p.flush(60), f"{p.device} still has {len(p.outbox)} unacknowledged messages"
        wait_for(lambda: sub.count() >= TOTAL, 90, "all messages to be handled")
        time.sleep(0.5)  # anything redelivered late would show up now
    finally:
        for p in pubs:
            p.stop(timeout=2)
        sub.stop()
    elapsed = time.monotonic() - t0

    handled = sub.handled()
    runs = sub.runs()
    received = sum(r["received"] for r in runs)
    duplicates = sum(r["duplicate"] for r in runs)
    print(
        f"\nexactly-once: published {len(sent)}, handled {len(handled)}, unique {len(set(handled))}, "
        f"received {received} (last counters of the killed process may be up to 0.1 s old), "
        f"duplicates dropped {duplicates}, subscriber runs {len(runs)}, {elapsed:.1f} s"
    )
    print("per run:", runs)
    print("publishers:", [p.counters.as_dict() for p in pubs])
    assert len(sent) == TOTAL
    assert len(handled) == len(set(handled)), "a message was handled twice"
    assert set(handled) == sent, f"missing {len(sent - set(handled))}, unexpected {len(set(handled) - sent)}"
    assert len(runs) == 2 and all(r["rejected"] == 0 and r["failed"] == 0 for r in runs)
    assert sum(p.counters.delivered for p in pubs) >= TOTAL + PUBLISHERS  # the events and the statuses
