"""The local outbox: messages waiting for the broker's acknowledgement, and the per-source ``seq`` counters.

A transport puts every message here before it sends it and removes it only when the broker acknowledged
it (PUBACK), so a message published while the broker is away, or lost with a dropped connection, is sent
again later with the same bytes (and so the same ``seq``: receivers drop the duplicates).

Two flavours, one class:

* in memory (``path=None``): survives reconnects, not a process restart.  Sequence numbers start at the
  wall clock in microseconds, so a restarted process continues above its predecessor without a file.
* write-through to a SQLite file: unsent messages and the sequence counters survive a restart (and a
  crash: every put and ack is committed).  Counters are reserved in blocks of :data:`SEQ_BLOCK`, so a
  restart may skip numbers but never reuses one, even if the wall clock went backwards.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

SEQ_BLOCK = 1000
MAX_SEQ = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    oid INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seq (source TEXT PRIMARY KEY, reserved INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Outgoing:
    """One message in the outbox; ``oid`` orders them (first in, first out)."""

    oid: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class OutboxFull(RuntimeError):
    """The outbox holds ``max_messages`` unacknowledged messages already."""


def _wall_clock_seq() -> int:
    return time.time_ns() // 1000


class Outbox:
    """Unacknowledged messages in publish order, in memory or in a SQLite file; thread-safe.

    ``max_messages`` (default unbounded) makes :meth:`put` raise :class:`OutboxFull` instead of growing
    without limit; nothing already in the outbox is ever dropped.
    """

    def __init__(self, path: str | Path | None = None, max_messages: int | None = None):
        self.path = Path(path) if path is not None else None
        self.max_messages = max_messages
        self._items: OrderedDict[int, Outgoing] = OrderedDict()
        self._next_oid = 1
        self._seq_next: dict[str, int] = {}
        self._seq_reserved: dict[str, int] = {}
        self._lock = threading.Lock()
        self._empty = threading.Condition(self._lock)
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._open(self.path)

    # ------------------------------------------------------------------ file
    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        for oid, topic, payload, qos, retain in db.execute(
                "SELECT oid, topic, payload, qos, retain FROM outbox ORDER BY oid"):
            self._items[oid] = Outgoing(oid, topic, bytes(payload), qos, bool(retain))
        self._next_oid = (max(self._items) + 1) if self._items else 1
        for source, reserved in db.execute("SELECT source, reserved FROM seq"):
            self._seq_reserved[source] = reserved
        self._db = db

    @property
    def persistent(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        """Close the file (an in-memory outbox keeps working; a closed file outbox must not be used)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ sequence numbers
    def next_seq(self, source: str) -> int:
        """The next sequence number of ``source``: strictly above every one handed out before, also by an
        earlier process on the same file, and not below the wall clock in microseconds at first use."""
        with self._lock:
            nxt = self._seq_next.get(source)
            if nxt is None:
                nxt = max(self._seq_reserved.get(source, 0), _wall_clock_seq())
            if nxt >= MAX_SEQ:
                raise OverflowError(f"sequence numbers of {source!r} are exhausted")
            if self._db is not None and nxt >= self._seq_reserved.get(source, 0):
                reserved = nxt + SEQ_BLOCK
                self._db.execute("INSERT INTO seq (source, reserved) VALUES (?, ?) ON CONFLICT(source) "
                                 "DO UPDATE SET reserved = excluded.reserved", (source, reserved))
                self._seq_reserved[source] = reserved
            self._seq_next[source] = nxt + 1
            return nxt

    # ------------------------------------------------------------------ messages
    def put(self, topic: str, payload: bytes, qos: int, retain: bool) -> Outgoing:
        """Append a message; it stays until :meth:`ack`."""
        with self._lock:
            if self.max_messages is not None and len(self._items) >= self.max_messages:
                raise OutboxFull(f"outbox holds {len(self._items)} unacknowledged messages")
            item = Outgoing(self._next_oid, topic, bytes(payload), qos, bool(retain))
            if self._db is not None:
                self._db.execute("INSERT INTO outbox (oid, topic, payload, qos, retain) "
                                 "VALUES (?, ?, ?, ?, ?)", (item.oid, topic, item.payload, qos, int(retain)))
            self._items[item.oid] = item
            self._next_oid += 1
            return item

    def pending(self, after: int = 0, limit: int | None = None) -> list[Outgoing]:
        """Messages with ``oid > after`` in order, at most ``limit``."""
        out: list[Outgoing] = []
        with self._lock:
            for oid, item in self._items.items():
                if oid <= after:
                    continue
                if limit is not None and len(out) >= limit:
                    break
                out.append(item)
        return out

    def ack(self, oid: int) -> bool:
        """Remove a message the broker acknowledged; False if it was not (or no longer) here."""
        with self._lock:
            if self._items.pop(oid, None) is None:
                return False
            if self._db is not None:
                self._db.execute("DELETE FROM outbox WHERE oid = ?", (oid,))
            if not self._items:
                self._empty.notify_all()
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def wait_empty(self, timeout: float) -> bool:
        """Block until every message was acknowledged; False if ``timeout`` seconds passed first."""
        with self._lock:
            return self._empty.wait_for(lambda: not self._items, timeout)
