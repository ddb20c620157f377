"""A persistent subscriber process for the exactly-once tests (run as ``python -m tests.helpers_mqtt_sub``).

It does what fusion will do: every handled shelf event is committed to a SQLite file together with the
de-duplicator's state, in one transaction, and the state is restored at start, so a SIGKILL at any moment
neither loses a message nor lets a redelivered one through twice.  It records its counters in the same
file (table ``runs``, one row per process) and prints ``connected`` once its session is up.
SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading

from wire.dedup import Deduplicator
from wire.mqtt import MqttTransport
from wire.topics import Kind, TopicInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (source TEXT NOT NULL, seq INTEGER NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (pid INTEGER PRIMARY KEY, counters TEXT NOT NULL);
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--device", default="fusion")
    ap.add_argument("--db", required=True)
    ap.add_argument("--protocol", type=int, default=5)
    args = ap.parse_args(argv)

    db = sqlite3.connect(args.db, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill (what the tests do)
    db.executescript(SCHEMA)
    lock = threading.Lock()
    row = db.execute("SELECT v FROM state WHERE k = 'dedup'").fetchone()
    dedup = Deduplicator.from_state(json.loads(row[0])) if row else Deduplicator()
    pid = os.getpid()

    t = MqttTransport(
        args.store,
        args.device,
        "fusion",
        args.host,
        args.port,
        dedup=dedup,
        protocol=args.protocol,
        backoff=(0.05, 0.5),
    )

    def handle(info: TopicInfo, msg) -> None:
        # The transport marked (source, seq) seen before calling us: the state saved here includes it.
        with lock:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO handled (source, seq, pid) VALUES (?, ?, ?)", (msg.source, msg.seq, pid))
            db.execute(
                "INSERT INTO state (k, v) VALUES ('dedup', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                (json.dumps(dedup.export_state()),),
            )
            db.execute("COMMIT")

    def save_counters() -> None:
        with lock:
            db.execute(
                "INSERT INTO runs (pid, counters) VALUES (?, ?) ON CONFLICT(pid) DO UPDATE SET "
                "counters = excluded.counters",
                (pid, json.dumps(t.counters.as_dict())),
            )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    t.subscribe(Kind.SHELF_EVENTS, handle)
    t.start()
    while not t.wait_ready(1.0):
        pass
    print("connected", flush=True)
    while not stop.wait(0.1):
        save_counters()
    t.stop(timeout=2.0)
    save_counters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
