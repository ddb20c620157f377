"""Keeps the evidence around each shelf event for the ops app: the lanes' weight samples and every camera's
tracks (boxes, head and wrist points), from the same messages fusion consumes.

Fusion deletes its inbox at each snapshot and the shelf gateway keeps no samples, so nothing else holds the
weight trace or the pixel boxes of the moment a product was taken.  :class:`EvidenceTap` buffers the last
``buffer_s`` seconds of ``TracksMsg`` per camera and of ``LoadCellMsg`` per shelf (bounded: old entries
drop), and when the event clock (the newest capture time seen) passes a shelf event's end by ``after_s`` it
writes one ``ops_event_evidence`` row: the event's lanes and candidates, each lane's samples from
``before_s`` before the event to ``after_s`` after it (decimated to at most ``max_rate_hz``), and each
camera's track messages over the same span (at most ``max_frames`` per camera, evenly thinned).

Raw load-cell samples reach the broker only when a shelf publishes them (``Kind.LOADCELLS``: the recording
gateways and remote readers do, the built-in gateway does not), so the weight trace is empty for shelves that
publish events only; the page says so.  :meth:`EvidenceTap.attach` subscribes a transport; :meth:`offer` takes
messages directly (replays and tests).  Rows are written with ``insert ... on conflict do nothing``, so a
replayed event is kept once; :func:`prune` deletes rows older than a retention.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from fusion.db import Database, ops_event_evidence, utcnow
from wire.messages import LoadCellMsg, ShelfEventMsg, Track, TracksMsg
from wire.topics import Kind, TopicInfo
from wire.transport import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TapSettings:
    before_s: float = 2.0
    after_s: float = 2.0
    buffer_s: float = 30.0
    max_rate_hz: float = 50.0
    max_frames: int = 48
    max_pending: int = 1000


def _keypoint(kp: Any) -> list[float] | None:
    if kp is None:
        return None
    return [round(float(kp.px[0]), 1), round(float(kp.px[1]), 1), round(float(kp.conf), 3)]


def compact_track(t: Track) -> dict[str, Any]:
    """What the ops page draws of a track: id, box, floor point, head and wrists (pixels, confidence)."""
    return {
        "id": int(t.id),
        "box": [round(float(v), 1) for v in t.box],
        "conf": round(float(t.conf), 3),
        "floor": [round(float(t.floor[0]), 3), round(float(t.floor[1]), 3)],
        "head": _keypoint(t.head),
        "lwrist": _keypoint(t.lwrist),
        "rwrist": _keypoint(t.rwrist),
    }


class EvidenceTap:
    """See the module docstring.  Thread-safe: the transport may call :meth:`handle` from its own thread."""

    def __init__(self, db: Database, settings: TapSettings | None = None):
        self.db = db
        self.settings = settings or TapSettings()
        self.clock = 0.0
        self._tracks: dict[str, deque[TracksMsg]] = {}
        self._cells: dict[str, deque[LoadCellMsg]] = {}
        self._pending: list[ShelfEventMsg] = []
        self._lock = threading.Lock()
        self.counters = {"events": 0, "written": 0, "duplicates": 0, "dropped": 0, "failed": 0}

    # ------------------------------------------------------------------------------------------ input
    def attach(self, transport: Transport) -> None:
        """Subscribe ``transport`` to the store's tracks, load-cell blocks and shelf events."""
        for kind in (Kind.TRACKS, Kind.LOADCELLS, Kind.SHELF_EVENTS):
            transport.subscribe(kind, self.handle)

    def handle(self, _info: TopicInfo, msg: BaseModel) -> None:
        self.offer(msg)

    def offer(self, msg: BaseModel) -> int:
        """Take one message; returns the number of events written because of it."""
        with self._lock:
            ts = float(getattr(msg, "ts", 0.0))
            if isinstance(msg, TracksMsg):
                self._push(self._tracks.setdefault(msg.camera, deque()), msg, ts)
            elif isinstance(msg, LoadCellMsg):
                self._push(self._cells.setdefault(msg.shelf, deque()), msg, ts)
            elif isinstance(msg, ShelfEventMsg):
                self.counters["events"] += 1
                if len(self._pending) >= self.settings.max_pending:
                    self.counters["dropped"] += 1
                    log.warning("evidence tap: too many events waiting; event %s not kept", msg.event_id)
                else:
                    self._pending.append(msg)
            else:
                return 0
            self.clock = max(self.clock, ts)
            due = [e for e in self._pending if e.t_end + self.settings.after_s <= self.clock]
            if not due:
                return 0
            self._pending = [e for e in self._pending if e.t_end + self.settings.after_s > self.clock]
            rows = [self._row(e) for e in due]
        return self._write(rows)

    def flush(self) -> int:
        """Write every waiting event with what is buffered now (end of a replay, or a clean stop)."""
        with self._lock:
            rows = [self._row(e) for e in self._pending]
            self._pending = []
        return self._write(rows)

    def _push(self, buf: deque, msg: Any, ts: float) -> None:
        buf.append(msg)
        horizon = max(self.clock, ts) - self.settings.buffer_s
        while buf and float(buf[0].ts) < horizon:
            buf.popleft()

    # ------------------------------------------------------------------------------------------ rows
    def _row(self, ev: ShelfEventMsg) -> dict[str, Any]:
        t0 = float(ev.t_start) - self.settings.before_s
        t1 = float(ev.t_end) + self.settings.after_s
        lanes = [ln.lane for ln in ev.lanes]
        return {
            "event_id": ev.event_id,
            "shelf": ev.shelf,
            "action": ev.action,
            "t_start": float(ev.t_start),
            "t_end": float(ev.t_end),
            "lanes": [{"lane": ln.lane, "delta_g": float(ln.delta_g)} for ln in ev.lanes],
            "candidates": [{"sku": c.sku, "qty": c.qty, "p": float(c.p)} for c in ev.candidates],
            "weights": self._weights(ev.shelf, lanes, t0, t1),
            "tracks": self._track_window(t0, t1),
            "created_at": utcnow(),
        }

    def _weights(self, shelf: str, lanes: list[str], t0: float, t1: float) -> dict[str, Any]:
        """Per lane ``{t0, rate_hz, samples}`` (grams) over [t0, t1], from the shelf's buffered blocks."""
        out: dict[str, Any] = {}
        blocks = [b for b in self._cells.get(shelf, ()) if b.samples]
        for lane in lanes:
            ts: list[np.ndarray] = []
            vs: list[np.ndarray] = []
            for b in blocks:
                if lane not in b.lanes:
                    continue
                j = b.lanes.index(lane)
                n = len(b.samples)
                t = float(b.ts) + np.arange(n) / float(b.rate_hz)
                keep = (t >= t0) & (t <= t1)
                if keep.any():
                    ts.append(t[keep])
                    vs.append(np.asarray(b.samples, float)[keep, j])
            if not ts:
                continue
            t = np.concatenate(ts)
            v = np.concatenate(vs)
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
            rate = float(blocks[0].rate_hz)
            step = max(1, int(np.ceil(rate / self.settings.max_rate_hz)))
            if step > 1:  # mean of each group of ``step`` samples (an anti-aliased decimation)
                m = (len(v) // step) * step
                if m:
                    v = v[:m].reshape(-1, step).mean(axis=1)
                    t = t[:m:step]
                rate /= step
            out[lane] = {
                "t0": round(float(t[0]), 4),
                "rate_hz": rate,
                "t": [round(float(x - t[0]), 4) for x in t],
                "samples": [round(float(x), 2) for x in v],
            }
        return out

    def _track_window(self, t0: float, t1: float) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for cam, buf in sorted(self._tracks.items()):
            times = [float(m.ts) for m in buf]
            lo = bisect.bisect_left(times, t0)
            hi = bisect.bisect_right(times, t1)
            msgs = list(buf)[lo:hi]
            if not msgs:
                continue
            if len(msgs) > self.settings.max_frames:
                idx = np.linspace(0, len(msgs) - 1, self.settings.max_frames).round().astype(int)
                msgs = [msgs[i] for i in sorted(set(idx.tolist()))]
            out[cam] = [
                {"ts": float(m.ts), "frame": int(m.frame), "tracks": [compact_track(t) for t in m.tracks]}
                for m in msgs
            ]
        return out

    def _write(self, rows: list[dict[str, Any]]) -> int:
        written = 0
        for row in rows:
            try:
                with self.db.begin() as conn:
                    if Database.insert_if_absent(conn, ops_event_evidence, row):
                        written += 1
                    else:
                        self.counters["duplicates"] += 1
            except Exception:
                self.counters["failed"] += 1
                log.exception("evidence tap: event %s could not be stored", row["event_id"])
        self.counters["written"] += written
        return written


def nearest_tracks(evidence: dict[str, Any], camera: str, t: float) -> dict[str, Any] | None:
    """The stored track message of ``camera`` closest in time to ``t`` (None when there is none)."""
    msgs = (evidence.get("tracks") or {}).get(camera) or []
    if not msgs:
        return None
    return min(msgs, key=lambda m: abs(float(m["ts"]) - t))


def prune(conn: Connection, before_ts: float) -> int:
    """Delete the evidence of events that ended before event time ``before_ts``."""
    res = conn.execute(
        ops_event_evidence.delete().where(ops_event_evidence.c.t_end < before_ts),
        execution_options={"preserve_rowcount": True},
    )
    return max(res.rowcount, 0)
