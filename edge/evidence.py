"""Evidence frames: low-rate whole JPEG frames per camera, kept for a bounded retention, for the ops app.

Layout (one folder, no database to fall out of step with the files)::

    ROOT/{camera}/{YYYY-MM-DD}/{HH}/{ts_us}.jpg        ts_us: capture time in integer microseconds (UTC)

:class:`EvidenceStore` writes frames (:meth:`~EvidenceStore.put`, atomically: a temporary file renamed into
place), lists them by camera and time (:meth:`~EvidenceStore.frames`, :meth:`~EvidenceStore.nearest`) and
deletes everything older than the retention (:meth:`~EvidenceStore.purge`).  :class:`EvidenceRecorder` sits
in the camera process: it keeps at most ``fps`` frames per second per camera, downscaled, and writes and
purges in a background thread so the frame loop never waits for the disk.

Privacy: whole frames only, downscaled, at a low rate; nothing here (or anywhere in walkout) detects, crops or
recognises faces, and nothing is kept past the retention.  This module imports nothing of walkout's, so the
ops app can read the same folder through it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

DAY_S = 86400.0
_CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOUR_RE = re.compile(r"^\d{2}$")
_FILE_RE = re.compile(r"^(\d{1,20})\.jpg$")


@dataclass(frozen=True)
class EvidenceFrame:
    """One stored frame: camera id, capture time (seconds since the epoch) and its file."""

    camera: str
    ts: float
    path: Path

    def read(self) -> bytes:
        """The JPEG bytes."""
        return self.path.read_bytes()


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _day_start(day: str) -> float:
    return dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()


class EvidenceStore:
    """A folder of evidence frames (see the module docstring).

    ``retention_s``: how long frames are kept (by capture time); ``max_width``: frames wider than this are
    downscaled before they are stored; ``quality``: JPEG quality.
    """

    def __init__(self, root: str | Path, retention_s: float = 7 * DAY_S, max_width: int = 640,
                 quality: int = 80):
        if retention_s <= 0:
            raise ValueError(f"retention must be positive, got {retention_s} s")
        if not 16 <= max_width <= 10_000:
            raise ValueError(f"max_width must be within 16..10000, got {max_width}")
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be within 1..100, got {quality}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.retention_s = float(retention_s)
        self.max_width = int(max_width)
        self.quality = int(quality)

    # ---- paths
    @staticmethod
    def _check_camera(camera: str) -> str:
        if not _CAMERA_RE.match(camera):
            raise ValueError(f"camera id {camera!r} cannot name a folder")
        return camera

    def path_of(self, camera: str, ts: float) -> Path:
        t = _utc(ts)
        us = round(ts * 1e6)
        day, hour = t.strftime("%Y-%m-%d"), t.strftime("%H")
        return self.root / self._check_camera(camera) / day / hour / f"{us}.jpg"

    def cameras(self) -> list[str]:
        """Cameras with a folder in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _CAMERA_RE.match(p.name))

    # ---- writing
    def encode(self, image: np.ndarray) -> bytes:
        """A BGR frame -> JPEG bytes, downscaled to ``max_width`` (aspect kept)."""
        h, w = image.shape[:2]
        if w > self.max_width:
            image = cv2.resize(image, (self.max_width, max(1, round(h * self.max_width / w))),
                               interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("the frame could not be JPEG-encoded")
        return buf.tobytes()

    def put(self, camera: str, ts: float, image: np.ndarray) -> Path:
        """Store one frame (downscaled JPEG) captured at ``ts``; returns its path."""
        return self.put_jpeg(camera, ts, self.encode(image))

    def put_jpeg(self, camera: str, ts: float, jpeg: bytes) -> Path:
        """Store JPEG bytes as the frame of ``camera`` at ``ts`` (replacing one at the same microsecond)."""
        if not (np.isfinite(ts) and 0 <= ts < 1e10):
            raise ValueError(f"ts {ts} is not seconds since the epoch")
        path = self.path_of(camera, ts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)
        return path

    # ---- reading
    def _days(self, camera: str) -> list[str]:
        base = self.root / self._check_camera(camera)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _DAY_RE.match(p.name))

    def frames(self, camera: str, t0: float, t1: float) -> list[EvidenceFrame]:
        """Frames of ``camera`` captured in ``[t0, t1]``, oldest first."""
        if t1 < t0:
            return []
        out: list[EvidenceFrame] = []
        base = self.root / self._check_camera(camera)
        first_day = _utc(max(t0, 0.0)).strftime("%Y-%m-%d")
        last_day = _utc(min(max(t1, 0.0), 1e10 - 1)).strftime("%Y-%m-%d")
        for day in self._days(camera):
            if not first_day <= day <= last_day:
                continue
            d0 = _day_start(day)
            for hour_dir in sorted((base / day).iterdir()):
                if not (hour_dir.is_dir() and _HOUR_RE.match(hour_dir.name)):
                    continue
                h0 = d0 + int(hour_dir.name) * 3600.0
                if h0 > t1 or h0 + 3600.0 <= t0:
                    continue
                for name in os.listdir(hour_dir):
                    m = _FILE_RE.match(name)
                    if not m:
                        continue
                    ts = int(m.group(1)) / 1e6
                    if t0 <= ts <= t1:
                        out.append(EvidenceFrame(camera, ts, hour_dir / name))
        out.sort(key=lambda f: f.ts)
        return out

    def nearest(self, camera: str, t: float, max_dt: float = 3600.0) -> EvidenceFrame | None:
        """The frame of ``camera`` captured closest to ``t`` (within ``max_dt`` seconds), or ``None``."""
        span = min(60.0, max_dt)
        while True:
            found = self.frames(camera, t - span, t + span)
            if found:
                return min(found, key=lambda f: (abs(f.ts - t), f.ts))
            if span >= max_dt:
                return None
            span = min(span * 8, max_dt)

    # ---- retention
    def purge(self, now: float | None = None) -> int:
        """Delete every frame captured before ``now - retention`` (``now``: the wall clock by default) and
        the folders left empty; returns the number of frames deleted."""
        now = time.time() if now is None else float(now)
        cutoff = now - self.retention_s
        removed = 0
        for camera in self.cameras():
            base = self.root / camera
            for day in self._days(camera):
                d0 = _day_start(day)
                day_dir = base / day
                if d0 + DAY_S <= cutoff:
                    removed += sum(1 for _ in day_dir.rglob("*.jpg"))
                    shutil.rmtree(day_dir, ignore_errors=True)
                    continue
                if d0 >= cutoff:
                    continue
                for hour_dir in list(day_dir.iterdir()):
                    if not (hour_dir.is_dir() and _HOUR_RE.match(hour_dir.name)):
                        continue
                    h0 = d0 + int(hour_dir.name) * 3600.0
                    if h0 >= cutoff:
                        continue
                    for name in os.listdir(hour_dir):
                        m = _FILE_RE.match(name)
                        if m and int(m.group(1)) / 1e6 < cutoff:
                            try:
                                (hour_dir / name).unlink()
                                removed += 1
                            except FileNotFoundError:
                                pass
                    _rmdir_if_empty(hour_dir)
                _rmdir_if_empty(day_dir)
        if removed:
            log.info("evidence %s: purged %d frames captured before %s", self.root, removed,
                     _utc(max(cutoff, 0.0)).isoformat(timespec="seconds"))
        return removed


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


class EvidenceRecorder:
    """Keeps every camera's frames at ``fps`` (at most) in an :class:`EvidenceStore`, written in a
    background thread; purges at start and every ``purge_every_s`` seconds.

    ``clock`` gives "now" for retention (default the wall clock; a replay of an old recording may pass the
    capture-time clock instead, :meth:`capture_clock`).  A frame already older than the retention is not
    written.  When the disk is slower than the frames, frames are dropped (``counters['skipped_busy']``),
    never queued without bound.  Counters: ``offered``, ``stored``, ``skipped_rate``, ``skipped_busy``,
    ``skipped_expired``, ``failed``, ``purged``.
    """

    def __init__(self, store: EvidenceStore, fps: float = 2.0, purge_every_s: float = 600.0,
                 clock: Callable[[], float] | None = None, queue_size: int = 16):
        if not 0 < fps <= 100:
            raise ValueError(f"evidence fps must be within (0, 100], got {fps}")
        self.store = store
        self.fps = float(fps)
        self.purge_every_s = float(purge_every_s)
        self.clock = clock or time.time
        self.counters = {k: 0 for k in ("offered", "stored", "skipped_rate", "skipped_busy",
                                        "skipped_expired", "failed", "purged")}
        self._last: dict[str, float] = {}
        self._latest_ts = 0.0
        self._queue: queue.Queue[tuple[str, float, np.ndarray] | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._next_purge = 0.0
        self._thread = threading.Thread(target=self._run, name="evidence", daemon=True)
        self._thread.start()

    def capture_clock(self) -> float:
        """The latest capture time offered so far (a clock for replays of old recordings)."""
        return self._latest_ts

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def offer(self, camera: str, ts: float, image: np.ndarray) -> bool:
        """Consider one frame; True when it was queued for storing.  Never blocks."""
        self._count("offered")
        self._latest_ts = max(self._latest_ts, ts)
        last = self._last.get(camera)
        if last is not None and ts - last < 1.0 / self.fps - 1e-6 and ts >= last:
            self._count("skipped_rate")
            return False
        try:
            self._queue.put_nowait((camera, ts, image))
        except queue.Full:
            self._count("skipped_busy")
            return False
        self._last[camera] = ts
        return True

    def _run(self) -> None:
        self._purge()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if item:
                self._write(*item)
            if time.monotonic() >= self._next_purge:
                self._purge()

    def _write(self, camera: str, ts: float, image: np.ndarray) -> None:
        if ts < self.clock() - self.store.retention_s:
            self._count("skipped_expired")
            return
        try:
            self.store.put(camera, ts, image)
        except (OSError, ValueError, cv2.error) as exc:
            self._count("failed")
            log.warning("evidence: cannot store %s at %.3f: %s", camera, ts, exc)
            return
        self._count("stored")

    def _purge(self) -> None:
        self._next_purge = time.monotonic() + self.purge_every_s
        try:
            self._count("purged", self.store.purge(self.clock()))
        except OSError as exc:
            log.warning("evidence: purge of %s failed: %s", self.store.root, exc)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join(timeout)
