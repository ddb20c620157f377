"""Load-cell readers: every source gives blocks of ``(lane, timestamp, grams)`` samples as numpy arrays.

A :class:`SampleBlock` holds three parallel arrays: ``lane`` (int32 index into the reader's ``channels``, the
ids of lanes or load cells), ``ts`` (float64 capture time, seconds since the epoch) and ``grams`` (float64;
NaN marks a reading that is known bad, e.g. saturated).  ``until`` says up to which capture time the source
has delivered; ``complete`` that nothing earlier than ``until`` can still come (recordings read in time order),
so the aligner hands out frames up to it without waiting.  A live source leaves ``complete`` false and moves
``until`` on with the wall clock while it is idle, so silence can be seen.

Readers
-------
* :class:`CsvFolderReader` — a folder of per-plate CSV files named ``gondola_G_shelf_S_plate_P.csv`` with rows
  ``unix_ts,grams`` (the AiFi recordings); channels ``G.S.P`` on shelves ``G.S``.
* :class:`McapReader` — the load-cell channels of a session MCAP: JSON :class:`wire.messages.LoadCellMsg`
  blocks on the topics of ``Kind.LOADCELLS`` (``samples[i][j]`` is lane ``lanes[j]`` at ``ts + i / rate_hz``).
* :class:`LineReader` — the line protocol of a microcontroller on a serial port or a TCP socket (any URL that
  pyserial's ``serial_for_url`` takes: ``/dev/ttyUSB0``, ``socket://host:port``, ``loop://``).
* :class:`ArrayReader` — frames already in memory (tests, the bench, the simulator).

Line protocol (``walkout-loadcells``, one record a line, UTF-8, ``\\n`` or ``\\r\\n``)::

    # walkout-loadcells 1                 optional; any line starting with '#' is a header or a comment
    # lanes 1.5.1 1.5.2 1.5.3             declares the channel order (index addressing and frame lines)
    <ts> <channel> <value>                one sample
    <ts> * <v0> <v1> ... <vN-1>           one frame: every declared channel at once

Fields are separated by blanks or commas.  ``ts`` is the capture time in seconds (the epoch, or the
microcontroller's own clock) or ``-`` for the time the line arrived; ``channel`` is an id or a 0-based index
into the declared lanes; values are raw readings, turned into grams by the per-channel calibration
(``grams = (raw - tare) * scale``; readings at or beyond ``min_raw``/``max_raw`` count as saturated).  Without a
calibration the values are grams.  A header may be sent again at any time; the latest ``lanes`` line wins.  A
microcontroller should repeat its header now and then: pyserial discards what arrives while it opens a socket,
and a gateway may connect at any moment (channels named by id need no header).

Bad input never raises out of a reader: garbled lines, unknown channels, non-finite values, saturated
readings, disconnects are counted in ``problems`` (a :class:`collections.Counter`) and logged.  Gaps,
silent channels and timestamps that jump back are found downstream by :class:`Aligner`.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from calibration.config import ConfigError, load_model

log = logging.getLogger(__name__)

ABS_MAX_G = 1e7  # readings beyond +-10 t are not a shelf: counted as garbled


# ------------------------------------------------------------------------------------------------ blocks
@dataclass
class SampleBlock:
    """Samples in arrival order: ``lane[i]`` (index into the reader's channels), ``ts[i]``, ``grams[i]``."""

    lane: np.ndarray
    ts: np.ndarray
    grams: np.ndarray
    until: float | None = None
    complete: bool = False

    def __len__(self) -> int:
        return int(self.ts.size)

    @classmethod
    def empty(cls, until: float | None = None) -> SampleBlock:
        return cls(np.zeros(0, np.int32), np.zeros(0), np.zeros(0), until)


# ------------------------------------------------------------------------------------------- calibration
class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelCalibration(_Cfg):
    tare: float = Field(0.0, title="Tare", description="Raw reading of the empty channel")
    scale: float = Field(1.0, title="Scale", description="Grams per raw unit", allow_inf_nan=False)
    min_raw: float | None = Field(None, title="Lowest valid raw", description="At or below: saturated")
    max_raw: float | None = Field(None, title="Highest valid raw", description="At or above: saturated")


class CalibrationFile(_Cfg):
    """Per-channel tare and scale (YAML or JSON): ``default`` applies to channels not listed."""

    default: ChannelCalibration = Field(default_factory=ChannelCalibration, title="Default calibration")
    lanes: dict[str, ChannelCalibration] = Field(default_factory=dict, title="Per-channel calibration",
                                                 description="Keyed by lane or load-cell id")


def load_calibration(path: str | Path) -> CalibrationFile:
    """Read a calibration file; :class:`ConfigError` names the file, the field and the reason."""
    return load_model(CalibrationFile, path)


class Calibrator:
    """Applies a :class:`CalibrationFile` to blocks, vectorised by channel index."""

    def __init__(self, cal: CalibrationFile | None = None):
        self.cal = cal or CalibrationFile()
        self._tare = np.zeros(0)
        self._scale = np.ones(0)
        self._lo = np.zeros(0)
        self._hi = np.zeros(0)

    @property
    def identity(self) -> bool:
        d = self.cal.default
        return (not self.cal.lanes and d.tare == 0 and d.scale == 1 and d.min_raw is None
                and d.max_raw is None)

    def _grow(self, channels: list[str]) -> None:
        n0 = self._tare.size
        if n0 >= len(channels):
            return
        new = [self.cal.lanes.get(c, self.cal.default) for c in channels[n0:]]
        self._tare = np.concatenate([self._tare, [c.tare for c in new]])
        self._scale = np.concatenate([self._scale, [c.scale for c in new]])
        self._lo = np.concatenate([self._lo, [-np.inf if c.min_raw is None else c.min_raw for c in new]])
        self._hi = np.concatenate([self._hi, [np.inf if c.max_raw is None else c.max_raw for c in new]])

    def apply(self, lane: np.ndarray, raw: np.ndarray, channels: list[str], problems: Counter) -> np.ndarray:
        """Grams from raw readings; saturated readings become NaN (counted under ``saturated``)."""
        g = raw.astype(np.float64, copy=True)
        bad = ~np.isfinite(g) | (np.abs(g) > ABS_MAX_G)
        if not self.identity:
            self._grow(channels)
            sat = (g <= self._lo[lane]) | (g >= self._hi[lane])
            sat &= ~bad
            if sat.any():
                problems["saturated"] += int(sat.sum())
            g = (g - self._tare[lane]) * self._scale[lane]
            bad |= sat
        nonfinite = int((~np.isfinite(raw)).sum())
        if nonfinite:
            problems["non_finite"] += nonfinite
        huge = int(bad.sum()) - nonfinite - (int(sat.sum()) if not self.identity else 0)
        if huge > 0:
            problems["out_of_range"] += huge
        g[bad] = np.nan
        return g


# ------------------------------------------------------------------------------------------------ readers
class Reader(ABC):
    """A source of :class:`SampleBlock`.  ``channels`` may grow while reading (new ids get new indexes)."""

    # the clock that stamps live samples (lines without a device time): the gateway process sets it to the
    # store clock's ``now`` (wire.clock)
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self, calibration: CalibrationFile | None = None):
        self.channels: list[str] = []
        self.shelf_hint: dict[str, str] = {}
        self.rate_hz: float | None = None
        self.problems: Counter = Counter()
        self._index: dict[str, int] = {}
        self._cal = Calibrator(calibration)
        self._stop = threading.Event()

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def blocks(self) -> Iterator[SampleBlock]:
        """Yield blocks until the source ends or :meth:`close` is called."""

    def close(self) -> None:
        self._stop.set()

    def channel_index(self, cid: str, shelf: str | None = None) -> int:
        i = self._index.get(cid)
        if i is None:
            i = self._index[cid] = len(self.channels)
            self.channels.append(cid)
            if shelf is not None:
                self.shelf_hint[cid] = shelf
        return i

    def _block(self, lane: np.ndarray, ts: np.ndarray, raw: np.ndarray, until: float | None = None,
               complete: bool = False) -> SampleBlock:
        lane = np.asarray(lane, np.int32)
        ts = np.asarray(ts, np.float64)
        ok = np.isfinite(ts)
        if not ok.all():
            self.problems["bad_timestamp"] += int((~ok).sum())
            lane, ts, raw = lane[ok], ts[ok], np.asarray(raw)[ok]
        grams = self._cal.apply(lane, np.asarray(raw, np.float64), self.channels, self.problems)
        return SampleBlock(lane, ts, grams, until, complete)


_AIFI_FILE = re.compile(r"^gondola_(\d+)_shelf_(\d+)_plate_(\d+)\.csv$")


class CsvFolderReader(Reader):
    """Per-plate CSV files ``gondola_G_shelf_S_plate_P.csv`` (rows ``unix_ts,grams``); channel ``G.S.P``.

    The files are read whole, then handed out in time order, ``block_s`` seconds of every plate at a time.
    Rows that do not parse are counted under ``garbled`` and skipped.
    """

    def __init__(self, folder: str | Path, block_s: float = 1.0, calibration: CalibrationFile | None = None):
        super().__init__(calibration)
        self.folder = Path(folder)
        self.block_s = block_s
        files = []
        for path in sorted(glob.glob(str(self.folder / "*.csv"))):
            m = _AIFI_FILE.match(os.path.basename(path))
            if m is None:
                self.problems["unknown_file"] += 1
                log.warning("%s: not named gondola_G_shelf_S_plate_P.csv; skipped", path)
                continue
            g, s, p = (int(x) for x in m.groups())
            files.append(((g, s, p), path))
        if not files:
            raise ConfigError(self.folder, "<folder>", "no gondola_G_shelf_S_plate_P.csv files")
        files.sort()
        self._data: list[tuple[int, np.ndarray, np.ndarray]] = []
        for (g, s, p), path in files:
            idx = self.channel_index(f"{g}.{s}.{p}", f"{g}.{s}")
            ts, grams = self._read(path)
            self._data.append((idx, ts, grams))
        dts = [np.median(np.diff(t)) for _, t, _ in self._data if t.size > 2]
        self.rate_hz = float(1.0 / np.median(dts)) if dts else None

    @property
    def description(self) -> str:
        return f"folder {self.folder} ({len(self.channels)} channels)"

    def _read(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.problems["unreadable_file"] += 1
            log.warning("%s: cannot read: %s", path, exc)
            return np.zeros(0), np.zeros(0)
        lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a partial parse is detected below
            try:
                flat = np.fromstring(text.replace(",", " "), sep=" ")
            except ValueError:
                flat = np.zeros(0)
        if flat.size == 2 * lines and text.count(",") == lines:
            a = flat.reshape(-1, 2)
            return a[:, 0].copy(), a[:, 1].copy()
        ts, grams = [], []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().split(",")
                try:
                    if len(parts) != 2:
                        raise ValueError
                    t, g = float(parts[0]), float(parts[1])
                except ValueError:
                    if line.strip():
                        self.problems["garbled"] += 1
                    continue
                ts.append(t)
                grams.append(g)
        if self.problems["garbled"]:
            log.warning("%s: %d garbled rows skipped so far", path, self.problems["garbled"])
        return np.asarray(ts, np.float64), np.asarray(grams, np.float64)

    def blocks(self) -> Iterator[SampleBlock]:
        starts = [t[0] for _, t, _ in self._data if t.size]
        ends = [t[-1] for _, t, _ in self._data if t.size]
        if not starts:
            return
        t = min(starts)
        t_last = max(ends)
        pos = [0] * len(self._data)
        while t <= t_last and not self._stop.is_set():
            t_next = t + self.block_s
            lanes, tss, gs = [], [], []
            for k, (idx, ts, grams) in enumerate(self._data):
                j = int(np.searchsorted(ts[pos[k]:], t_next, side="left")) + pos[k]
                if j > pos[k]:
                    lanes.append(np.full(j - pos[k], idx, np.int32))
                    tss.append(ts[pos[k]:j])
                    gs.append(grams[pos[k]:j])
                    pos[k] = j
            if lanes:
                yield self._block(np.concatenate(lanes), np.concatenate(tss), np.concatenate(gs), until=t_next,
                                  complete=True)
            t = t_next
        # rows whose timestamp jumped back past the last block boundary come out last
        rest = [(np.full(len(ts) - p, idx, np.int32), ts[p:], g[p:])
                for (idx, ts, g), p in zip(self._data, pos, strict=True) if p < len(ts)]
        if rest and not self._stop.is_set():
            yield self._block(*(np.concatenate(x) for x in zip(*rest, strict=True)))


class McapReader(Reader):
    """The load-cell channels (``Kind.LOADCELLS`` topics, JSON ``LoadCellMsg``) of a session MCAP.

    Messages are read in log-time order and handed out ``block_s`` seconds of capture time at a time.  A
    message that does not validate is counted under ``rejected`` and skipped.  ``store_yaml()`` returns the
    text of a store description attached to the file, if any.
    """

    def __init__(self, path: str | Path, block_s: float = 0.5, calibration: CalibrationFile | None = None):
        super().__init__(calibration)
        from mcap.reader import make_reader

        from wire.topics import Kind, TopicError, parse_topic

        self.path = Path(path)
        self.block_s = block_s
        self._make_reader = make_reader
        self._topics: list[str] = []
        try:
            with open(self.path, "rb") as f:
                summary = make_reader(f).get_summary()
        except FileNotFoundError:
            raise ConfigError(self.path, "<file>", "file not found") from None
        except Exception as exc:  # noqa: BLE001 - mcap raises many kinds on a broken file
            raise ConfigError(self.path, "<file>", f"not a readable MCAP file: {exc}") from None
        channels = summary.channels.values() if summary is not None else []
        for ch in channels:
            try:
                info = parse_topic(ch.topic)
            except TopicError:
                continue
            if info.kind == Kind.LOADCELLS and ch.topic not in self._topics:
                self._topics.append(ch.topic)
        if summary is None:
            log.warning("%s has no summary section; scanning it for load-cell topics", self.path)
        self._prescan()

    @property
    def description(self) -> str:
        return f"mcap {self.path} ({len(self._topics)} load-cell topics)"

    def _iter_msgs(self) -> Iterator[tuple[str, bytes, int]]:
        from wire.topics import Kind, TopicError, parse_topic

        with open(self.path, "rb") as f:
            reader = self._make_reader(f)
            try:
                it = reader.iter_messages(topics=self._topics or None, log_time_order=True)
                for _schema, channel, message in it:
                    if not self._topics:
                        try:
                            if parse_topic(channel.topic).kind != Kind.LOADCELLS:
                                continue
                        except TopicError:
                            continue
                    yield channel.topic, message.data, message.log_time
            except Exception as exc:  # noqa: BLE001 - a truncated file ends the stream, counted
                self.problems["truncated"] += 1
                log.warning("%s: stopped reading: %s", self.path, exc)

    def _decode(self, topic: str, data: bytes):
        from wire.codec import WireError, decode

        try:
            _, msg = decode(topic, data)
        except WireError as exc:
            self.problems["rejected"] += 1
            if self.problems["rejected"] <= 10:
                log.warning("%s: rejected message: %s", self.path, exc)
            return None
        return msg

    def _prescan(self, max_msgs: int = 10_000) -> None:
        """Learn the channels (and their shelves) from the first message of each topic."""
        seen: set[str] = set()
        for n, (topic, data, _) in enumerate(self._iter_msgs()):
            if topic not in seen:
                msg = self._decode(topic, data)
                if msg is not None:
                    seen.add(topic)
                    self.rate_hz = self.rate_hz or float(msg.rate_hz)
                    for lane in msg.lanes:
                        self.channel_index(lane, msg.shelf)
            if (self._topics and len(seen) == len(self._topics)) or n >= max_msgs:
                break
        self.problems.clear()  # the real pass counts again

    def store_yaml(self) -> str | None:
        with open(self.path, "rb") as f:
            try:
                for att in self._make_reader(f).iter_attachments():
                    name = att.name.lower()
                    if name.endswith((".yaml", ".yml")) and "store" in name:
                        return att.data.decode("utf-8", errors="replace")
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: cannot read attachments: %s", self.path, exc)
        return None

    def blocks(self) -> Iterator[SampleBlock]:
        lanes: list[np.ndarray] = []
        tss: list[np.ndarray] = []
        gs: list[np.ndarray] = []
        t_block = None
        span = 0.0  # the longest message so far: a message logged later may start this much earlier
        for topic, data, log_ns in self._iter_msgs():
            if self._stop.is_set():
                return
            msg = self._decode(topic, data)
            if msg is None or not msg.samples:
                continue
            span = max(span, len(msg.samples) / msg.rate_hz)
            idx = np.array([self.channel_index(c, msg.shelf) for c in msg.lanes], np.int32)
            values = np.asarray(msg.samples, np.float64)
            n = values.shape[0]
            t = msg.ts + np.arange(n) / msg.rate_hz
            lanes.append(np.broadcast_to(idx, values.shape).ravel())
            tss.append(np.repeat(t, idx.size))
            gs.append(values.ravel())
            if t_block is None:
                t_block = msg.ts
            if t[-1] - t_block >= self.block_s:
                # messages come in log-time order and each is logged at most ``span`` after its first
                # sample: nothing before (log time - span) can still come
                until = min(float(msg.ts), log_ns / 1e9 - span)
                yield self._block(np.concatenate(lanes), np.concatenate(tss), np.concatenate(gs),
                                  until=until, complete=True)
                lanes, tss, gs, t_block = [], [], [], None
        if lanes:
            yield self._block(np.concatenate(lanes), np.concatenate(tss), np.concatenate(gs))


class LineReader(Reader):
    """The ``walkout-loadcells`` line protocol (see the module docstring) from ``serial_for_url(url)``.

    Reconnects with backoff when the port or socket goes away (``reconnect=True``), else the stream ends.
    Blocks come every ``block_s`` seconds of wall time; ``until`` moves on with the wall clock while the
    line is quiet, so a silent channel is noticed.
    """

    MAX_LINE = 16_384

    def __init__(self, url: str, channels: list[str] | None = None, block_s: float = 0.1,
                 calibration: CalibrationFile | None = None, baudrate: int = 115_200,
                 reconnect: bool = True, shelf_hint: dict[str, str] | None = None):
        super().__init__(calibration)
        self.url = url
        self.block_s = block_s
        self.baudrate = baudrate
        self.reconnect = reconnect
        self.declared: list[int] = []
        for c in channels or []:
            self.declared.append(self.channel_index(c, (shelf_hint or {}).get(c)))
        self._port = None
        self._clock: tuple[float, float] | None = None  # (latest data ts, wall time it was seen)

    @property
    def description(self) -> str:
        return f"line protocol at {self.url}"

    def _open(self):
        import serial

        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.problems["connect_failed"] += 1
            log.warning("cannot open %s: %s", self.url, exc)
            return None
        log.info("opened %s", self.url)
        return port

    def parse_line(self, line: str, now: float, out: tuple[list, list, list]) -> None:
        """Parse one line into ``out`` (lanes, ts, raw); count what is wrong with it."""
        text = line.strip()
        if not text:
            return
        if text.startswith("#"):
            parts = text[1:].replace(",", " ").split()
            if parts and parts[0] == "lanes":
                self.declared = [self.channel_index(c) for c in parts[1:]]
            return
        parts = text.replace(",", " ").split()
        try:
            if len(parts) < 3:
                raise ValueError("too few fields")
            ts = now if parts[0] == "-" else float(parts[0])
            if parts[1] == "*":
                vals = [float(v) for v in parts[2:]]
                if len(vals) != len(self.declared):
                    raise ValueError(f"frame has {len(vals)} values for {len(self.declared)} declared lanes")
                out[0].extend(self.declared)
                out[1].extend([ts] * len(vals))
                out[2].extend(vals)
                return
            if len(parts) != 3:
                raise ValueError("expected 'ts channel value'")
            value = float(parts[2])
            ch = parts[1]
            if ch.isdigit():
                k = int(ch)
                if k >= len(self.declared):
                    raise ValueError(f"channel index {k} but {len(self.declared)} lanes declared")
                idx = self.declared[k]
            elif re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}", ch):
                idx = self.channel_index(ch)
            else:
                raise ValueError(f"bad channel {ch[:40]!r}")
        except ValueError as exc:
            self.problems["garbled"] += 1
            if self.problems["garbled"] <= 20 or self.problems["garbled"] % 1000 == 0:
                log.warning("%s: garbled line %r (%s); %d so far", self.url, text[:80], exc,
                            self.problems["garbled"])
            return
        out[0].append(idx)
        out[1].append(ts)
        out[2].append(value)

    def feed_text(self, text: str, now: float | None = None) -> SampleBlock:
        """Parse complete lines (for tests and replays of captured streams)."""
        now = self.clock() if now is None else now
        out: tuple[list, list, list] = ([], [], [])
        for line in text.splitlines():
            self.parse_line(line, now, out)
        return self._block(np.asarray(out[0], np.int32), np.asarray(out[1]), np.asarray(out[2]))

    def _until(self, ts_max: float | None, wall: float) -> float | None:
        if ts_max is not None and np.isfinite(ts_max) and (self._clock is None or ts_max >= self._clock[0]):
            self._clock = (ts_max, wall)
        if self._clock is None:
            return None
        return self._clock[0] + (wall - self._clock[1])

    def blocks(self) -> Iterator[SampleBlock]:
        import serial

        buf = b""
        out: tuple[list, list, list] = ([], [], [])
        backoff = 0.2
        last_yield = time.monotonic()
        while not self._stop.is_set():
            if self._port is None:
                self._port = self._open()
                if self._port is None:
                    if not self.reconnect:
                        break
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                buf = b""
            try:
                data = self._port.read(65536)
            except (serial.SerialException, OSError) as exc:
                self.problems["disconnects"] += 1
                log.warning("%s: connection lost: %s", self.url, exc)
                self._close_port()
                if buf.strip():
                    self.problems["garbled"] += 1  # a cut-off last line
                buf = b""
                if not self.reconnect:
                    break
                continue
            wall = self.clock()
            if data:
                buf += data
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    self.parse_line(raw.decode("utf-8", errors="replace"), wall, out)
                if len(buf) > self.MAX_LINE:
                    self.problems["garbled"] += 1
                    log.warning("%s: line longer than %d bytes dropped", self.url, self.MAX_LINE)
                    buf = b""
            else:
                self._stop.wait(0.005)
            if time.monotonic() - last_yield >= self.block_s:
                last_yield = time.monotonic()
                yield self._flush(out, wall)
                out = ([], [], [])
        if buf.strip():
            self.parse_line(buf.decode("utf-8", errors="replace"), self.clock(), out)
        if out[0]:
            yield self._flush(out, self.clock())
        self._close_port()

    def _flush(self, out: tuple[list, list, list], wall: float) -> SampleBlock:
        ts = np.asarray(out[1], np.float64)
        until = self._until(float(ts.max()) if ts.size else None, wall)
        return self._block(np.asarray(out[0], np.int32), ts, np.asarray(out[2], np.float64), until)

    def _close_port(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead port may fail in many ways
                log.debug("closing %s: %s", self.url, exc)
            self._port = None

    def close(self) -> None:
        super().close()


class ArrayReader(Reader):
    """Frames in memory: ``grams[i, j]`` is channel ``channels[j]`` at ``ts[i]``; handed out ``block_s`` seconds
    at a time.  NaN in ``grams`` means no sample (it is left out of the block)."""

    def __init__(self, channels: list[str], ts: np.ndarray, grams: np.ndarray, block_s: float = 0.5,
                 shelf_hint: dict[str, str] | None = None, calibration: CalibrationFile | None = None):
        super().__init__(calibration)
        for c in channels:
            self.channel_index(c, (shelf_hint or {}).get(c))
        self.ts = np.asarray(ts, np.float64)
        self.grams = np.asarray(grams, np.float64)
        if self.grams.shape != (self.ts.size, len(channels)):
            raise ValueError(f"grams has shape {self.grams.shape}, expected {(self.ts.size, len(channels))}")
        self.block_s = block_s
        if self.ts.size > 1:
            self.rate_hz = float(1.0 / np.median(np.diff(self.ts)))

    @property
    def description(self) -> str:
        return f"arrays ({len(self.channels)} channels, {self.ts.size} frames)"

    def blocks(self) -> Iterator[SampleBlock]:
        if not self.ts.size:
            return
        n = self.ts.size
        per = max(1, round(self.block_s * (self.rate_hz or 60.0)))
        lane_row = np.arange(len(self.channels), dtype=np.int32)
        for i in range(0, n, per):
            if self._stop.is_set():
                return
            g = self.grams[i:i + per]
            t = self.ts[i:i + per]
            ok = ~np.isnan(g)
            lanes = np.broadcast_to(lane_row, g.shape)[ok]
            tt = np.broadcast_to(t[:, None], g.shape)[ok]
            yield self._block(lanes, tt, g[ok], until=float(t[-1]), complete=True)


# --------------------------------------------------------------------------------------------- aligner
class Aligner:
    """Turns samples of ``n`` channels into frames on a regular grid of ``rate_hz``.

    Each frame's value of a channel is the mean of its samples in the frame's bin; a channel without a sample
    holds its last value for up to ``silent_s``, after which it is NaN (counted once per silence under
    ``silent``, ``recovered`` when it speaks again).  A frame is handed out once every channel that is alive
    has delivered past it, or ``max_wait_s`` after the newest sample.  Samples whose time jumps back more than
    ``back_tolerance_s`` behind the channel's newest are dropped (``ts_back``), so are samples for frames
    already handed out (``late``); holes longer than ``gap_s`` are counted (``gap``).  A few samples whose
    time leaps more than ``jump_s`` ahead of all others are dropped (``ts_jump``); when the whole stream
    resumes after a pause, the silent stretch is skipped (``time_skip``) instead of filled frame by frame.
    """

    def __init__(self, n: int, rate_hz: float = 60.0, silent_s: float = 0.5, max_wait_s: float = 0.25,
                 back_tolerance_s: float | None = None, gap_s: float | None = None, jump_s: float = 2.0):
        self.n = n
        self.jump_s = jump_s
        self.max_rows = int(120 * rate_hz)  # frames the aligner buffers at most (bounds memory)
        self.rate = float(rate_hz)
        self.silent_s = silent_s
        self.max_wait_s = max_wait_s
        self.back_tol = 1.5 / self.rate if back_tolerance_s is None else back_tolerance_s
        self.gap_s = 3.5 / self.rate if gap_s is None else gap_s
        self.problems: Counter = Counter()
        self.t0: float | None = None
        self.next_tick = 0
        self._sum = np.zeros((0, n))
        self._cnt = np.zeros((0, n), np.int32)
        self.last_ts = np.full(n, -np.inf)  # newest sample time per channel (relative to t0)
        self.last_val = np.full(n, np.nan)  # value of the last frame handed out
        self.last_real = np.full(n, -np.inf)  # time (rel) of the last frame with a real sample
        self.silent = np.zeros(n, bool)
        self.max_ts = -np.inf

    def _tick_time(self, k: np.ndarray | int) -> np.ndarray | float:
        return np.asarray(k) / self.rate

    def push(self, lane: np.ndarray, ts: np.ndarray, grams: np.ndarray, until: float | None = None,
             complete: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Add samples (channel index, capture time, grams); return the frames now complete:
        ``(times (K,), values (K, n))``.  With ``complete``, everything before ``until`` has arrived."""
        if ts.size and self.t0 is None:
            self.t0 = float(np.min(ts))
        if self.t0 is None:
            return np.zeros(0), np.zeros((0, self.n))
        rel = ts - self.t0
        if rel.size:
            rel, lane, grams = self._check_order(lane, rel, grams)
        if rel.size:
            self.max_ts = max(self.max_ts, float(rel.max()))
            k = np.rint(rel * self.rate).astype(np.int64) - self.next_tick
            late = k < 0
            if late.any():
                self.problems["late"] += int(late.sum())
                k, lane, grams = k[~late], lane[~late], grams[~late]
            finite = ~np.isnan(grams)
            k, lane, grams = k[finite], lane[finite], grams[finite]
            early: list[tuple[np.ndarray, np.ndarray]] = []
            keep = int(np.ceil(self.silent_s * self.rate)) + 2
            if k.size and int(k.min()) > 4 * keep:  # the stream resumes after a pause: close the gap first
                before = self.next_tick
                early.append(self._emit(self.next_tick + int(k.min()) - 1))
                k = k - (self.next_tick - before)
            too_far = k >= self.max_rows
            if too_far.any():  # never allocate for a wild timestamp
                self.problems["ts_jump"] += int(too_far.sum())
                k, lane, grams = k[~too_far], lane[~too_far], grams[~too_far]
            if k.size:
                need = int(k.max()) + 1
                if need > self._sum.shape[0]:
                    grow = need - self._sum.shape[0]
                    self._sum = np.vstack([self._sum, np.zeros((grow, self.n))])
                    self._cnt = np.vstack([self._cnt, np.zeros((grow, self.n), np.int32)])
                flat = k * self.n + lane
                size = self._sum.size
                self._sum += np.bincount(flat, grams, minlength=size).reshape(self._sum.shape)
                self._cnt += np.bincount(flat, minlength=size).reshape(self._cnt.shape).astype(np.int32)
        else:
            early = []
        if complete and until is not None:
            horizon = until - self.t0
        else:
            horizon = self._horizon(None if until is None else until - self.t0)
        t, f = self._emit(int(np.floor(horizon * self.rate - 0.5)))
        if early:
            t = np.concatenate([*(e[0] for e in early), t])
            f = np.vstack([*(e[1] for e in early), f])
        return t, f

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """Hand out every frame up to the newest sample (end of stream)."""
        if self.t0 is None:
            return np.zeros(0), np.zeros((0, self.n))
        return self._emit(self.next_tick + self._sum.shape[0] - 1)

    def _check_order(self, lane: np.ndarray, rel: np.ndarray, grams: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Drop samples whose time jumps back (behind the channel's newest by more than the tolerance) or
        leaps ahead of everything else alone; count gaps.  Vectorised: stable sort by channel, running max."""
        ahead = rel > self.max_ts + self.jump_s if np.isfinite(self.max_ts) else np.zeros(rel.size, bool)
        if ahead.any() and int(ahead.sum()) < max(3, ahead.size // 10):
            self.problems["ts_jump"] += int(ahead.sum())
            log.warning("%d samples with timestamps leaping ahead dropped", int(ahead.sum()))
            lane, rel, grams = lane[~ahead], rel[~ahead], grams[~ahead]
        order = np.argsort(lane.astype(np.int16 if self.n < 32768 else np.int32), kind="stable")
        ls, ts = lane[order], rel[order]
        first = np.r_[True, ls[1:] != ls[:-1]] if ls.size else np.zeros(0, bool)
        inner_ok = bool(np.all((ts[1:] >= ts[:-1]) | first[1:]))
        prev_first = self.last_ts[ls[first]]
        if inner_ok and bool(np.all(~(ts[first] < prev_first - self.back_tol))):
            back = np.zeros(ts.size, bool)  # the common case: every channel in order
        else:
            back = self._back(ls, ts, first)
        if back.any():
            nb = int(back.sum())
            self.problems["ts_back"] += nb
            log.warning("%d samples with timestamps jumping back dropped (%d so far)", nb,
                        self.problems["ts_back"])
        keep = ~back
        ls_k, ts_k = ls[keep], ts[keep]
        if ts_k.size:
            first_k = np.r_[True, ls_k[1:] != ls_k[:-1]]
            prev_k = np.where(first_k, self.last_ts[ls_k], np.r_[ts_k[:1], ts_k[:-1]])
            gap = np.isfinite(prev_k) & (ts_k - prev_k > self.gap_s)
            if gap.any():
                self.problems["gap"] += int(gap.sum())
            last = np.r_[ls_k[1:] != ls_k[:-1], True]
            if inner_ok:
                self.last_ts[ls_k[last]] = np.maximum(self.last_ts[ls_k[last]], ts_k[last])
            else:
                np.maximum.at(self.last_ts, ls_k, ts_k)
        return ts_k, ls_k, grams[order[keep]]  # grouped by channel now: binning does not care

    def _back(self, ls: np.ndarray, ts: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Samples behind the running newest of their channel by more than the tolerance (sorted by channel,
        arrival order within)."""
        known = np.isfinite(self.last_ts)
        span = 1.0 + max(float(np.abs(ts).max(initial=0.0)), float(np.abs(self.last_ts[known]).max(initial=0.0)))
        big = 4.0 * span  # keys of one channel never reach the next channel's
        seed = np.where(known, self.last_ts, -2.0 * span)[ls] + ls * big
        keyed = ts + ls * big
        run = np.maximum.accumulate(np.where(first, np.maximum(seed, keyed), keyed))
        before = np.where(first, seed, np.r_[seed[:1], run[:-1]])
        return keyed < before - self.back_tol

    def _horizon(self, until_rel: float | None) -> float:
        newest = self.max_ts if until_rel is None else max(self.max_ts, until_rel)
        if not np.isfinite(newest):
            return -np.inf
        alive = self.last_ts >= newest - self.silent_s
        complete = float(self.last_ts[alive].min()) if alive.any() else newest
        return max(complete, newest - self.max_wait_s)

    def _emit(self, last_tick: int) -> tuple[np.ndarray, np.ndarray]:
        k_n = last_tick - self.next_tick + 1
        if k_n <= 0:
            return np.zeros(0), np.zeros((0, self.n))
        keep = int(np.ceil(self.silent_s * self.rate)) + 2
        if k_n > 4 * keep:  # a long stretch without samples: hand out enough to see the silence, skip the rest
            rows = min(k_n, self._cnt.shape[0])
            has = np.flatnonzero(self._cnt[:rows].any(axis=1))
            pts = np.r_[-1, has, k_n]
            empty = np.diff(pts) - 1
            long = np.flatnonzero(empty > 2 * keep)
            if long.size:
                start = int(pts[long[0]]) + 1
                t_a, v_a = self._emit(self.next_tick + start + keep - 1)
                skip = int(empty[long[0]]) - keep
                self._sum, self._cnt = self._sum[skip:], self._cnt[skip:]
                self.next_tick += skip
                self.problems["time_skip"] += 1
                log.warning("no samples for %.1f s: skipped ahead", skip / self.rate)
                t_b, v_b = self._emit(last_tick)
                return np.concatenate([t_a, t_b]), np.vstack([v_a, v_b])
        if k_n > self._sum.shape[0]:
            grow = k_n - self._sum.shape[0]
            self._sum = np.vstack([self._sum, np.zeros((grow, self.n))])
            self._cnt = np.vstack([self._cnt, np.zeros((grow, self.n), np.int32)])
        s, c = self._sum[:k_n], self._cnt[:k_n]
        ticks = np.arange(self.next_tick, self.next_tick + k_n)
        t_rel = ticks / self.rate
        has = c > 0
        vals = np.where(has, s / np.maximum(c, 1), np.nan)
        rows = np.where(has, np.arange(k_n)[:, None], -1)
        src = np.maximum.accumulate(rows, axis=0)
        filled = np.where(src >= 0, vals[np.maximum(src, 0), np.arange(self.n)], self.last_val[None, :])
        real_t = np.where(src >= 0, t_rel[np.maximum(src, 0)], self.last_real[None, :])
        dead = (t_rel[:, None] - real_t) > self.silent_s
        filled[dead] = np.nan
        # silence episodes: count transitions
        now_dead = dead[-1]
        went = now_dead & ~self.silent
        back = ~now_dead & self.silent
        if went.any():
            self.problems["silent"] += int(went.sum())
            log.warning("channels went silent: %s", np.flatnonzero(went).tolist()[:20])
        if back.any():
            self.problems["recovered"] += int(back.sum())
            log.info("channels speak again: %s", np.flatnonzero(back).tolist()[:20])
        self.silent = now_dead
        self.last_val = filled[-1].copy()
        self.last_real = real_t[-1].copy()
        self._sum = self._sum[k_n:]
        self._cnt = self._cnt[k_n:]
        self.next_tick += k_n
        return t_rel + self.t0, filled
