"""Camera frame sources: every source yields :class:`SourceFrame` ``(ts, index, image, camera)``.

``ts`` is the capture time (seconds since the epoch, UTC), ``index`` the source's frame number (increasing;
a jump means frames were lost), ``image`` a BGR ``uint8`` array or ``None`` for a frame that arrived but could
not be used (unreadable file, corrupt JPEG, failed read), and ``camera`` the camera id it belongs to.

Sources
-------
* :class:`VideoFileSource` — a video file through ``cv2.VideoCapture``; ``ts = start + n / fps`` (the file's
  frame rate unless one is given; ``start`` defaults to the time the file is opened).
* :class:`StreamSource` — an RTSP/HTTP(S)/UDP URL or a local device through ``cv2.VideoCapture``; ``ts`` is
  the time a frame is read.  It keeps running through hiccups: a failed read is retried, a stream that stops
  delivering is reopened with exponential backoff (``reconnects`` counts them), and the frames lost meanwhile
  are estimated from the outage and the frame rate and show up as a jump in ``index`` (and in ``dropped``).
* :class:`ImageFolderSource` — a folder of images in natural sort order; ``ts`` from a sidecar
  ``timestamps.csv`` (lines ``name,ts``) when present, else ``start + n / fps``.
* :class:`McapSource` — the camera channels of a session MCAP (``walkout/v1/{store}/camera/{camera}/image``,
  ``foxglove.CompressedImage`` in JSON, base64 JPEG); ``ts`` is the message's log time, ``index`` its
  sequence number (the simulator's 1-based frame number, so a dropped frame is a gap).

Bad input never raises out of iteration: unreadable frames, corrupt images, failed reads, a dying stream are
counted in :class:`SourceStats` (``errors``, ``dropped``, ``reconnects``) and logged (rate-limited).
Opening a source that cannot work at all (missing file, empty folder, a bad sidecar, an MCAP without the
camera) raises :class:`SourceError` naming the input and the reason.

Live sources (``live = True``) are meant to be read in a thread (:class:`LatestFrame`) so a slow consumer
gets the newest frame instead of an ever-growing backlog; frames it never took appear as index jumps.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SIDECARS = ("timestamps.csv", "timestamps.txt")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
IMAGE_TOPIC_RE = re.compile(r"^walkout/v1/(?P<store>[^/]+)/camera/(?P<camera>[^/]+)/image$")
DEFAULT_FPS = 10.0


class SourceError(ValueError):
    """A source that cannot be opened or read at all: ``source`` (path or URL) and ``reason``."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class SourceFrame(NamedTuple):
    """One frame: capture time, frame number, BGR image (``None``: arrived but unusable), camera id."""

    ts: float
    index: int
    image: np.ndarray | None
    camera: str = ""


@dataclass
class SourceStats:
    """Counters of one source.  ``frames``: delivered with an image; ``dropped``: lost (unusable frames
    yielded as ``None`` plus frames never delivered, e.g. during an outage); ``errors``: failed reads, corrupt
    images, failed opens; ``reconnects``: streams reopened after they stopped."""

    frames: int = 0
    dropped: int = 0
    errors: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RateLimitedWarning:
    """``warning(key, fmt, *args)`` logs at most once per ``interval`` seconds per key, with a count of the
    suppressed ones."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0):
        self.logger, self.interval = logger, interval
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, fmt: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e18, 0))
        if now - last < self.interval:
            self._last[key] = (last, suppressed + 1)
            return
        self._last[key] = (now, 0)
        if suppressed:
            fmt, args = fmt + " (%d similar suppressed)", (*args, suppressed)
        self.logger.warning(fmt, *args)


def valid_image(img: object) -> bool:
    """A non-empty BGR ``uint8`` ``(H, W, 3)`` array."""
    return (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            and img.shape[0] > 0 and img.shape[1] > 0)


def decode_image(data: bytes) -> np.ndarray | None:
    """Compressed image bytes -> BGR array, or ``None`` when they do not decode."""
    if not data:
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img if valid_image(img) else None


class FrameSource(ABC):
    """A camera frame source (see the module docstring).  Iterate it once; ``close()`` ends the iteration
    (also from another thread) and releases the device or file."""

    live: bool = False
    description: str = ""
    cameras: tuple[str, ...] = ()
    fps: float = DEFAULT_FPS
    # capture clock of live stamps (stream frames; the start of files and folders without times): the
    # camera process sets it to the store clock's ``now`` (wire.clock) before iterating
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self) -> None:
        self.stats = SourceStats()
        self._closed = threading.Event()
        self._warn = RateLimitedWarning(log)

    @abstractmethod
    def __iter__(self) -> Iterator[SourceFrame]: ...

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _unusable(self, ts: float, index: int, camera: str, fmt: str, *args: object) -> SourceFrame:
        """Count and log an unusable frame and return it as a dropped frame (``image=None``)."""
        self.stats.errors += 1
        self.stats.dropped += 1
        self._warn.warning(f"bad:{camera}", "%s: " + fmt, self.description, *args)
        return SourceFrame(ts, index, None, camera)


# ---------------------------------------------------------------------------------------------- video file
class VideoFileSource(FrameSource):
    """A video file (any container and codec OpenCV's FFmpeg reads).  ``fps``: override the file's rate;
    ``start``: capture time of the first frame (default: when the file is opened)."""

    def __init__(self, path: str | Path, camera: str, fps: float | None = None, start: float | None = None,
                 max_bad_reads: int = 25):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(self.path, "video file not found")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(self.path, "OpenCV cannot open it as a video")
        file_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = float(fps) if fps else (file_fps if 0 < file_fps < 1000 else DEFAULT_FPS)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.start = None if start is None else float(start)  # None: the clock's time at the first frame
        self.cameras = (camera,)
        self.max_bad_reads = max_bad_reads
        self.description = f"video {self.path} ({self.fps:g} fps, {self.frame_count or '?'} frames)"

    def __iter__(self) -> Iterator[SourceFrame]:
        cam = self.cameras[0]
        index, bad = 0, 0
        start = self.start = self.clock() if self.start is None else self.start
        try:
            while not self.closed:
                ts = start + index / self.fps
                try:
                    ok, img = self._cap.read()
                except cv2.error as exc:
                    ok, img = False, None
                    log.debug("%s: read raised %s", self.path, exc)
                if ok and valid_image(img):
                    bad = 0
                    self.stats.frames += 1
                    yield SourceFrame(ts, index, img, cam)
                elif self.frame_count and index < self.frame_count - 1 and bad < self.max_bad_reads:
                    bad += 1  # a frame in the middle that does not decode: skip it
                    yield self._unusable(ts, index, cam, "frame %d does not decode", index)
                else:
                    return
                index += 1
        finally:
            self._cap.release()


# ---------------------------------------------------------------------------------------------- streams
def open_capture(url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> Any:
    """``cv2.VideoCapture`` of a stream URL (or a device) with open and read timeouts."""
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
    if url.isdigit():
        return cv2.VideoCapture(int(url))
    backend = cv2.CAP_ANY if url.startswith("/dev/") else cv2.CAP_FFMPEG
    return cv2.VideoCapture(url, backend, params)


class StreamSource(FrameSource):
    """A live stream (RTSP, HTTP MJPEG, UDP, a V4L2 device ...) that survives hiccups.

    ``opener(url)`` returns a capture object with OpenCV's ``isOpened() / read() / get() / release()``
    (default :func:`open_capture`).  ``max_read_failures`` consecutive failed reads end the connection; it is
    reopened after ``backoff[0]`` seconds, doubling up to ``backoff[1]`` while opens keep failing.  Frames
    lost in a gap are estimated as ``max(failed reads, round(gap * fps) - 1)`` and skipped in ``index``.
    ``fps``: the stream's rate when it does not report one (it is used to estimate losses).  Iteration ends
    only on :meth:`close` (or after ``max_reconnects`` reconnects, for tests and batch jobs).
    """

    live = True

    def __init__(self, url: str, camera: str, fps: float | None = None,
                 opener: Callable[[str], Any] | None = None, backoff: tuple[float, float] = (0.5, 30.0),
                 max_read_failures: int = 3, max_reconnects: int | None = None):
        super().__init__()
        self.url = url
        self.cameras = (camera,)
        self.fps_hint = fps
        self.fps = float(fps or DEFAULT_FPS)
        self.opener = opener or open_capture
        self.backoff = backoff
        self.max_read_failures = max(1, max_read_failures)
        self.max_reconnects = max_reconnects
        self._cap: Any = None
        self._lock = threading.Lock()
        self.description = f"stream {redact_url(url)}"

    def close(self) -> None:
        super().close()
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            _release(cap)

    def _open(self) -> Any | None:
        """Open the stream, retrying with backoff until it opens or the source is closed."""
        delay = self.backoff[0]
        while not self.closed:
            try:
                cap = self.opener(self.url)
                ok = bool(cap is not None and cap.isOpened())
            except Exception as exc:  # noqa: BLE001 - any failure of a capture backend is a failed open
                cap, ok = None, False
                log.debug("%s: open raised %r", self.description, exc)
            if ok:
                fps = _safe_get(cap, cv2.CAP_PROP_FPS)
                self.fps = float(self.fps_hint or (fps if 0 < fps < 1000 else DEFAULT_FPS))
                with self._lock:
                    if self.closed:
                        _release(cap)
                        return None
                    self._cap = cap
                return cap
            if cap is not None:
                _release(cap)
            self.stats.errors += 1
            self._warn.warning("open", "%s: cannot open the stream; retrying in %.1f s", self.description,
                               delay)
            if self._closed.wait(delay):
                return None
            delay = min(delay * 2, self.backoff[1])
        return None

    def __iter__(self) -> Iterator[SourceFrame]:
        cam = self.cameras[0]
        index = -1
        last_good: float | None = None  # time of the last good frame
        failed = 0  # failed reads since the last good frame
        connections = 0
        while not self.closed:
            cap = self._open()
            if cap is None:
                return
            connections += 1
            if connections > 1:
                self.stats.reconnects += 1
                log.info("%s: reconnected (%d reconnects)", self.description, self.stats.reconnects)
            streak = 0
            while not self.closed:
                try:
                    ok, img = cap.read()
                except Exception as exc:  # noqa: BLE001 - a backend error is a failed read
                    ok, img = False, None
                    log.debug("%s: read raised %r", self.description, exc)
                now = self.clock()
                if ok and valid_image(img):
                    lost = 0
                    if last_good is not None and failed:
                        lost = max(failed, round((now - last_good) * self.fps) - 1)
                    index += 1 + lost
                    self.stats.dropped += lost
                    self.stats.frames += 1
                    last_good, failed, streak = now, 0, 0
                    yield SourceFrame(now, index, img, cam)
                    continue
                failed += 1
                streak += 1
                self.stats.errors += 1
                if streak >= self.max_read_failures:
                    self._warn.warning("dead", "%s: %d failed reads; reconnecting", self.description, streak)
                    break
            with self._lock:
                if self._cap is cap:
                    self._cap = None
            _release(cap)
            if self.max_reconnects is not None and self.stats.reconnects >= self.max_reconnects:
                log.info("%s: giving up after %d reconnects", self.description, self.stats.reconnects)
                return
            if self._closed.wait(self.backoff[0]):
                return


def _safe_get(cap: Any, prop: int) -> float:
    try:
        return float(cap.get(prop) or 0.0)
    except Exception:  # noqa: BLE001 - a capture that cannot report a property
        return 0.0


def _release(cap: Any) -> None:
    try:
        cap.release()
    except Exception:
        log.debug("release of a capture raised", exc_info=True)


def redact_url(url: str) -> str:
    """The URL without a password (``rtsp://user:secret@host`` -> ``rtsp://user:***@host``)."""
    return re.sub(r"(//[^/:@]+:)[^/@]*@", r"\1***@", url)


# ---------------------------------------------------------------------------------------------- image folder
def natural_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def read_sidecar(path: Path) -> dict[str, float]:
    """``name,ts`` (or ``name ts``) lines; ``#`` comments and a ``name,ts`` header allowed."""
    out: dict[str, float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"cannot read the timestamps: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in re.split(r"[,\s]+", line) if p.strip()]
        if len(parts) != 2:
            raise SourceError(path, f"line {n}: expected 'name,ts', got {line[:80]!r}")
        try:
            ts = float(parts[1])
        except ValueError:
            if n == 1 or not out:
                continue  # a header line
            raise SourceError(path, f"line {n}: ts {parts[1][:40]!r} is not a number") from None
        if not np.isfinite(ts) or not 0 <= ts < 1e10:
            raise SourceError(path, f"line {n}: ts {ts} is not seconds since the epoch")
        out[parts[0]] = ts
    return out


class ImageFolderSource(FrameSource):
    """A folder of images (``.jpg .png .bmp .tif .webp``) in natural sort order.  Timestamps come from a
    sidecar ``timestamps.csv`` / ``timestamps.txt`` in the folder (``name,ts`` lines; every image must be
    listed) or, without one, ``start + n / fps``."""

    def __init__(self, folder: str | Path, camera: str, fps: float | None = None, start: float | None = None):
        super().__init__()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(self.folder, "image folder not found")
        self.files = sorted((p for p in self.folder.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                            key=lambda p: natural_key(p.name))
        if not self.files:
            raise SourceError(self.folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        self.fps = float(fps or DEFAULT_FPS)
        self.start = None if start is None else float(start)  # None: the clock's time at the first frame
        self.times: list[float] | None = None
        sidecar = next((self.folder / s for s in SIDECARS if (self.folder / s).is_file()), None)
        if sidecar is not None:
            table = read_sidecar(sidecar)
            missing = [p.name for p in self.files if p.name not in table]
            if missing:
                raise SourceError(sidecar, f"no timestamp for {len(missing)} images, e.g. {missing[0]!r}")
            self.times = [table[p.name] for p in self.files]
        self.cameras = (camera,)
        where = f"times from {sidecar.name}" if sidecar else f"{self.fps:g} fps"
        self.description = f"images {self.folder} ({len(self.files)} files, {where})"

    def __iter__(self) -> Iterator[SourceFrame]:
        cam = self.cameras[0]
        start = self.start = self.clock() if self.start is None else self.start
        for i, path in enumerate(self.files):
            if self.closed:
                return
            ts = self.times[i] if self.times is not None else start + i / self.fps
            try:
                data = path.read_bytes()
            except OSError as exc:
                yield self._unusable(ts, i, cam, "cannot read %s: %s", path.name, exc)
                continue
            img = decode_image(data)
            if img is None:
                yield self._unusable(ts, i, cam, "%s is not a decodable image", path.name)
                continue
            self.stats.frames += 1
            yield SourceFrame(ts, i, img, cam)


# ---------------------------------------------------------------------------------------------- session MCAP
class McapSource(FrameSource):
    """The camera channels of a session MCAP, in log-time order.  ``cameras``: the ids to read (default:
    every camera channel in the file); each must have a channel."""

    def __init__(self, path: str | Path, cameras: Sequence[str] | None = None):
        super().__init__()
        from mcap.exceptions import McapError
        from mcap.reader import make_reader

        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(self.path, "MCAP file not found")
        try:
            with open(self.path, "rb") as f:
                summary = make_reader(f).get_summary()
        except (McapError, OSError, ValueError, EOFError) as exc:
            raise SourceError(self.path, f"not a readable MCAP file: {exc}") from None
        channels = {}
        if summary is not None:
            for ch in summary.channels.values():
                m = IMAGE_TOPIC_RE.match(ch.topic)
                if m:
                    channels[m.group("camera")] = ch.topic
        if not channels:
            raise SourceError(self.path, "no camera image channels "
                                         "(walkout/v1/{store}/camera/{camera}/image)")
        wanted = list(cameras) if cameras else sorted(channels)
        missing = [c for c in wanted if c not in channels]
        if missing:
            raise SourceError(self.path, f"no image channel for camera(s) {missing}; "
                                         f"it has {sorted(channels)}")
        self.cameras = tuple(wanted)
        self.topics = {channels[c]: c for c in wanted}
        self.store_id = IMAGE_TOPIC_RE.match(channels[wanted[0]]).group("store")  # type: ignore[union-attr]
        self.fps = _fps_of(summary, list(self.topics)) or DEFAULT_FPS
        self.description = f"session {self.path} (cameras {', '.join(self.cameras)})"

    def attachments(self) -> dict[str, bytes]:
        """The file's attachments by name (a session carries ``store.yaml`` and the camera files)."""
        from mcap.reader import make_reader

        with open(self.path, "rb") as f:
            return {a.name: bytes(a.data) for a in make_reader(f).iter_attachments()}

    def __iter__(self) -> Iterator[SourceFrame]:
        from mcap.exceptions import McapError
        from mcap.reader import make_reader

        last: dict[str, int] = {}
        with open(self.path, "rb") as f:
            reader = make_reader(f)
            try:
                messages = reader.iter_messages(topics=list(self.topics), log_time_order=True)
                for _schema, channel, msg in messages:
                    if self.closed:
                        return
                    cam = self.topics[channel.topic]
                    prev = last.get(cam)
                    index = msg.sequence if (msg.sequence > 0 and (prev is None or msg.sequence > prev)) \
                        else (prev + 1 if prev is not None else 0)
                    if prev is not None and index > prev + 1:
                        self.stats.dropped += index - prev - 1
                    last[cam] = index
                    ts = msg.log_time / 1e9
                    img, why = _decode_compressed_image(msg.data, channel.message_encoding)
                    if img is None:
                        yield self._unusable(ts, index, cam, "camera %s frame %d: %s", cam, index, why)
                        continue
                    self.stats.frames += 1
                    yield SourceFrame(ts, index, img, cam)
            except (McapError, OSError, ValueError, EOFError) as exc:
                # a truncated or damaged file: what was read stands, the rest is lost
                self.stats.errors += 1
                log.warning("%s: stopped reading at a damaged part: %s", self.description, exc)


def _fps_of(summary: Any, topics: list[str]) -> float | None:
    """Frame rate of the first camera channel from the summary's statistics (messages over duration)."""
    try:
        stats = summary.statistics
        by_id = {ch.id: ch.topic for ch in summary.channels.values()}
        cid = next(i for i, t in by_id.items() if t == topics[0])
        n = stats.channel_message_counts.get(cid, 0)
        span = (stats.message_end_time - stats.message_start_time) / 1e9
        return n / span if n > 1 and span > 0 else None
    except (AttributeError, StopIteration, ZeroDivisionError):
        return None


def _decode_compressed_image(data: bytes, encoding: str) -> tuple[np.ndarray | None, str]:
    """A ``foxglove.CompressedImage`` JSON payload -> (image, '') or (None, why)."""
    if encoding != "json":
        return None, f"message encoding {encoding!r} is not supported (json)"
    try:
        payload = json.loads(data)
        fmt = str(payload.get("format", "jpeg")).lower()
        raw = base64.b64decode(payload["data"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        return None, f"not a CompressedImage payload ({type(exc).__name__})"
    if fmt not in ("jpeg", "jpg", "png", "webp", "bmp"):
        return None, f"image format {fmt!r} is not supported"
    img = decode_image(raw)
    return (img, "") if img is not None else (None, f"corrupt {fmt} data ({len(raw)} bytes)")


# ---------------------------------------------------------------------------------------------- opening
def source_kind(spec: str) -> str:
    """``stream``, ``folder``, ``mcap`` or ``video`` for a ``--source`` value."""
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in STREAM_SCHEMES or spec.startswith("/dev/video") or spec.isdigit():
        return "stream"
    if scheme:
        raise SourceError(spec, f"unsupported URL scheme {scheme!r} (use one of {', '.join(STREAM_SCHEMES)})")
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if p.suffix.lower() == ".mcap":
        return "mcap"
    return "video"


def open_sources(specs: Sequence[str], cameras: Sequence[str], fps: float | None = None,
                 start: float | None = None, **stream_options: Any) -> list[FrameSource]:
    """Sources for the cameras: one session MCAP for all of them, or one source per camera (same order)."""
    if not specs:
        raise SourceError("<source>", "no source given")
    if len(specs) == 1 and source_kind(specs[0]) == "mcap":
        return [McapSource(specs[0], cameras)]
    if len(specs) != len(cameras):
        raise SourceError(", ".join(specs), f"{len(specs)} sources for {len(cameras)} cameras: give one "
                          "source per camera (in --camera order), or one session MCAP for all")
    out: list[FrameSource] = []
    for spec, cam in zip(specs, cameras, strict=True):
        kind = source_kind(spec)
        if kind == "stream":
            out.append(StreamSource(spec, cam, fps=fps, **stream_options))
        elif kind == "folder":
            out.append(ImageFolderSource(spec, cam, fps=fps, start=start))
        elif kind == "mcap":
            out.append(McapSource(spec, [cam]))
        else:
            out.append(VideoFileSource(spec, cam, fps=fps, start=start))
    return out


# ---------------------------------------------------------------------------------------------- feeding
def paced(frames: Iterable[SourceFrame], speed: float, stop: threading.Event | None = None,
          clock: Callable[[], float] = time.monotonic) -> Iterator[SourceFrame]:
    """Frames of a recording released at ``speed`` times real time (by their ``ts``); ``speed <= 0`` or
    infinite: as fast as they come."""
    if not speed or speed <= 0 or speed == float("inf"):
        yield from frames
        return
    stop = stop or threading.Event()
    t0 = w0 = None
    for f in frames:
        if t0 is None:
            t0, w0 = f.ts, clock()
        wait = w0 + (f.ts - t0) / speed - clock()
        if wait > 0 and stop.wait(wait):
            return
        yield f


def merged(sources: Sequence[FrameSource]) -> Iterator[SourceFrame]:
    """Frames of several recorded sources merged by capture time."""
    if len(sources) == 1:
        return iter(sources[0])
    return heapq.merge(*sources, key=lambda f: f.ts)


def grouped(frames: Iterable[SourceFrame], window_s: float) -> Iterator[list[SourceFrame]]:
    """Batches of frames of different cameras captured within ``window_s`` of the batch's first frame (the
    cameras of one process go through the detector together)."""
    batch: list[SourceFrame] = []
    seen: set[str] = set()
    for f in frames:
        if batch and (f.camera in seen or f.ts - batch[0].ts > window_s):
            yield batch
            batch, seen = [], set()
        batch.append(f)
        seen.add(f.camera)
    if batch:
        yield batch


class LatestFrame:
    """Reads a live source in a thread and keeps only its newest frame.  :meth:`take` returns the newest
    frame not taken yet (frames replaced before they were taken are gone: their index is skipped).
    ``done`` is set when the source's iteration ends."""

    def __init__(self, source: FrameSource, on_new: threading.Event | None = None):
        self.source = source
        self.on_new = on_new or threading.Event()
        self.done = threading.Event()
        self.replaced = 0
        self._frame: SourceFrame | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"source-{source.cameras[0]}", daemon=True)

    def start(self) -> LatestFrame:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for f in self.source:
                with self._lock:
                    if self._frame is not None:
                        self.replaced += 1
                    self._frame = f
                self.on_new.set()
        except Exception:
            log.exception("%s: the source failed", self.source.description)
            self.source.stats.errors += 1
        finally:
            self.done.set()
            self.on_new.set()

    def take(self) -> SourceFrame | None:
        with self._lock:
            f, self._frame = self._frame, None
        return f

    def stop(self, timeout: float = 5.0) -> None:
        self.source.close()
        self._thread.join(timeout)


def live_batches(sources: Sequence[FrameSource], stop: threading.Event,
                 poll_s: float = 0.5) -> Iterator[list[SourceFrame]]:
    """Batches of the newest frame of every live source that has one, as they come; ends when ``stop`` is
    set or every source has ended."""
    new = threading.Event()
    readers = [LatestFrame(s, new).start() for s in sources]
    try:
        while not stop.is_set():
            new.wait(poll_s)
            new.clear()
            batch = [f for f in (r.take() for r in readers) if f is not None]
            if batch:
                yield batch
            elif all(r.done.is_set() for r in readers):
                return
    finally:
        for r in readers:
            r.stop()


def frame_batches(sources: Sequence[FrameSource], stop: threading.Event, speed: float = 0.0,
                  window_s: float | None = None) -> Iterator[list[SourceFrame]]:
    """The batches a camera process works on: live sources as they come (newest frames), recordings
    merged by time, paced at ``speed`` and grouped across cameras within ``window_s`` (default: half a
    frame period)."""
    if any(s.live for s in sources):
        yield from live_batches(sources, stop)
        return
    fps = max(s.fps for s in sources)
    window = window_s if window_s is not None else 0.5 / fps
    for batch in grouped(paced(merged(sources), speed, stop), window):
        if stop.is_set():
            return
        yield batch
