"""What ``walkout demo`` shows while the replay runs, and the recording it keeps.

A :class:`Watcher` is one more client on the demo's bus.  It subscribes to the store's tracks, shelf events,
gate entries, carts, receipts and account topics and

* counts them, so that a progress line every few seconds can say how far the store's clock got, how many
  camera frames were processed, how many people the cameras track now, how many shelf events and how many
  visits are open (:meth:`Watcher.progress_line`);
* prints each receipt the moment fusion publishes it (:func:`receipt_text`);
* writes every message it receives to a recording (:class:`walkout.record.RecordingWriter`).  The demo
  replays at maximum speed, so the wall time a message arrived means nothing to someone scrubbing the
  recording; its log time is the message's own capture time (``ts``) instead, the store's clock, which puts
  the camera frames copied in afterwards (:func:`copy_frames`) on the same timeline.

Retained topics (carts, accounts) may hold leftovers of an earlier run on a shared broker; a message of
those kinds whose ``seq`` (the publisher's wall clock in microseconds at its first message, see
``wire/outbox.py``) predates the watcher is left out.  Status messages are not kept (their ``ts`` is the
wall clock, not the store's).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from walkout.record import RecordingWriter
from wire.messages import CartSnapshotMsg, GateEntryMsg, ReceiptMsg, ShelfEventMsg, TracksMsg
from wire.topics import Kind, TopicInfo
from wire.transport import Transport

log = logging.getLogger(__name__)

WATCHED = (Kind.TRACKS, Kind.SHELF_EVENTS, Kind.GATE_ENTRY, Kind.CART, Kind.RECEIPT, Kind.ACCOUNT)
RETAINED = (Kind.CART, Kind.ACCOUNT)
ZERO_DECIMAL = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
                "XAF", "XOF", "XPF"}


def money(amount: int, currency: str) -> str:
    """Integer minor units as currency units: ``1234, "USD"`` -> ``"12.34"`` (``"1234"`` for JPY)."""
    if currency in ZERO_DECIMAL:
        return f"{int(amount)}"
    sign = "-" if amount < 0 else ""
    a = abs(int(amount))
    return f"{sign}{a // 100}.{a % 100:02d}"


def clock(t: float, start: float) -> str:
    """Store time as minutes:seconds since the session started."""
    s = max(0.0, t - start)
    return f"{int(s // 60):02d}:{s % 60:04.1f}"


def receipt_text(r: ReceiptMsg, start: float, shoppers: list[str] | None = None) -> str:
    """A receipt as the demo prints it: who, when, each line with its product name, quantity and price, the
    total, and what happened to it (charged, sent to review and why, ...)."""
    who = f"account {r.account}"
    if shoppers:
        who += f" ({', '.join(shoppers)})"
    head = (f"RECEIPT visit {r.visit}  {who}  in {clock(r.entered_at, start)}  "
            f"out {clock(r.exited_at, start)}  settled {clock(r.ts, start)}")
    out = [head]
    width = max([len(ln.name or ln.sku) for ln in r.lines] + [20])
    for ln in r.lines:
        flag = "  (uncertain)" if ln.uncertain else ""
        out.append(f"    {ln.qty:3d} x {(ln.name or ln.sku):<{width}} @ {money(ln.unit_price, r.currency):>7}"
                   f"  {money(ln.amount, r.currency):>8}{flag}")
    if not r.lines:
        out.append("    (nothing taken)")
    total = f"    total {money(r.total, r.currency)} {r.currency}"
    if r.status == "charged":
        out.append(f"{total}  -- charged")
    elif r.status == "held_for_review":
        why = "; ".join(r.reasons) or "no reason given"
        out.append(f"{total}  -- sent to review: {why}")
    elif r.status == "no_charge":
        out.append(f"{total}  -- nothing to charge")
    else:
        why = "; ".join(r.reasons)
        out.append(f"{total}  -- payment failed{': ' + why if why else ''}")
    return "\n".join(out)


class Watcher:
    """Counts, prints and records what the demo's bus carries (see the module docstring).  Subscribes at
    construction; start the transport afterwards."""

    def __init__(self, transport: Transport, start: float, duration_s: float, frames_total: int,
                 say: Callable[[str], None], recording: RecordingWriter | None = None):
        self.transport = transport
        self.start = start
        self.duration_s = duration_s
        self.frames_total = frames_total
        self.say = say
        self.recording = recording
        self.since_seq = time.time_ns() // 1000
        self.lock = threading.Lock()
        self.frames = 0
        self.event_time = start
        self.in_view: dict[str, int] = {}  # camera -> tracks in its latest frame
        self.track_ids: set[tuple[str, int]] = set()
        self.events = 0
        self.entries = 0
        self.receipts: dict[str, ReceiptMsg] = {}
        self.shoppers: dict[str, set[str]] = {}  # visit -> shoppers its cart lines name
        self.recorded = 0
        self.skipped_retained = 0
        self.wall0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for kind in WATCHED:
            transport.subscribe(kind, self._on_message)

    # ------------------------------------------------------------------------------------------ messages
    def _on_message(self, info: TopicInfo, msg: BaseModel) -> None:
        seq = int(msg.seq)  # type: ignore[attr-defined]
        if info.kind in RETAINED and seq < self.since_seq:
            with self.lock:
                self.skipped_retained += 1
            return
        text = None
        with self.lock:
            if isinstance(msg, TracksMsg):
                self.frames += 1
                self.event_time = max(self.event_time, float(msg.ts))
                self.in_view[msg.camera] = len(msg.tracks)
                self.track_ids.update((msg.camera, t.id) for t in msg.tracks)
            elif isinstance(msg, ShelfEventMsg):
                self.events += 1
            elif isinstance(msg, GateEntryMsg):
                self.entries += 1
            elif isinstance(msg, CartSnapshotMsg):
                named = {ln.shopper for ln in msg.lines if ln.shopper}
                self.shoppers.setdefault(msg.visit, set()).update(named)
            elif isinstance(msg, ReceiptMsg) and msg.visit not in self.receipts:
                self.receipts[msg.visit] = msg
                text = receipt_text(msg, self.start, sorted(self.shoppers.get(msg.visit, ())))
        if self.recording is not None:
            self.recording.message(info.kind, info.key, msg, float(msg.ts))  # type: ignore[attr-defined]
            self.recorded += 1
        if text is not None:
            self.say(text)

    def receipt_count(self) -> int:
        with self.lock:
            return len(self.receipts)

    # ------------------------------------------------------------------------------------------ progress
    def progress_line(self) -> str:
        with self.lock:
            t = self.event_time - self.start
            wall = max(1e-6, time.monotonic() - self.wall0)
            open_visits = max(0, self.entries - len(self.receipts))
            return (f"[{wall:5.0f} s] store time {t:5.1f}/{self.duration_s:g} s ({t / wall:.1f}x)  "
                    f"frames {self.frames}/{self.frames_total}  tracks {sum(self.in_view.values())} "
                    f"({len(self.track_ids)} ids)  events {self.events}  visits open {open_visits}  "
                    f"receipts {len(self.receipts)}")

    def start_progress(self, every_s: float) -> None:
        """Print :meth:`progress_line` every ``every_s`` seconds (0: never) until :meth:`stop_progress`."""
        if every_s <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(every_s):
                self.say(self.progress_line())

        self._thread = threading.Thread(target=loop, name="demo-progress", daemon=True)
        self._thread.start()

    def stop_progress(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


def copy_frames(session_mcap: Path, writer: RecordingWriter, every: int) -> int:
    """Copy every ``every``-th camera frame (by frame number) of a session into the recording, at its
    capture time; returns how many."""
    from mcap.reader import make_reader

    kept = 0
    with open(session_mcap, "rb") as f:
        reader = make_reader(f)
        for schema, channel, m in reader.iter_messages():
            if schema is None or schema.name != "foxglove.CompressedImage" or (m.sequence - 1) % every:
                continue
            payload = json.loads(m.data)
            ts = m.log_time / 1e9
            writer.image(payload["frame_id"], ts, base64.b64decode(payload["data"]), int(m.sequence), ts)
            kept += 1
    return kept
