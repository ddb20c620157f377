"""The shelf gateway process: reader -> aligner -> detector -> identifier -> ``ShelfEventMsg``.

:class:`Layout` says which channels the gateway reads and how they make lanes and shelves (from a store
description, or from the channel ids a reader found).  :class:`ShelfGateway` turns sample blocks into wire
messages; :func:`run` drives a reader through it and hands each message to a sink (a transport's
``publish``, or a printer for ``--dry-run``).  Everything runs on capture time, so a recording gives the same
events however fast it is fed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from calibration.store import Store
from edge.shelf.detector import ACTIVE, DetectorConfig, ShelfChange, ShelfDetector
from edge.shelf.identify import Identified, Identifier, IdentifyConfig
from edge.shelf.planogram import Planogram
from edge.shelf.readers import Aligner, Reader, SampleBlock
from wire.messages import Candidate as WireCandidate
from wire.messages import LaneDelta, ShelfEventMsg

log = logging.getLogger(__name__)

MAX_LANES_PER_MSG = 64
MAX_CANDIDATES_PER_MSG = 32
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


# ---------------------------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """Shelves (lanes left to right) and the channels the gateway reads, grouped by lane: lane ``k`` is the
    sum of channels ``cell_start[k] .. cell_start[k+1]-1``."""

    shelves: list[tuple[str, list[str]]]
    cells: list[str]
    cell_start: np.ndarray

    @property
    def lanes(self) -> list[str]:
        return [ln for _, lanes in self.shelves for ln in lanes]

    @property
    def summed(self) -> bool:
        """Whether some lane sums several channels."""
        return len(self.cells) != len(self.cell_start)

    @classmethod
    def from_store(cls, store: Store, channels: list[str] | None = None) -> Layout:
        """Every lane of the store; with ``channels`` (what the source offers) shelves with none of their
        cells in it are left out."""
        have = set(channels) if channels is not None else None
        shelves, cells, starts = [], [], []
        for sid, shelf in store.shelves.items():
            lane_ids = []
            lane_cells = []
            for ln in shelf.lanes:
                lane_ids.append(ln.id)
                lane_cells.append(ln.cells)
            if have is not None and not any(c in have for cs in lane_cells for c in cs):
                continue
            if have is not None:
                missing = [c for cs in lane_cells for c in cs if c not in have]
                if missing:
                    log.warning("shelf %s: the source has no channel %s; those lanes read as silent", sid,
                                ", ".join(missing[:5]))
            shelves.append((sid, lane_ids))
            for cs in lane_cells:
                starts.append(len(cells))
                cells.extend(cs)
        return cls(shelves, cells, np.array(starts, np.intp))

    @classmethod
    def from_channels(cls, channels: list[str], shelf_hint: dict[str, str]) -> Layout:
        """One lane per channel, grouped by the reader's shelf hints (ids ``G.S.P`` ordered by plate)."""
        by_shelf: dict[str, list[str]] = {}
        for c in channels:
            by_shelf.setdefault(shelf_hint.get(c) or _shelf_of(c), []).append(c)
        shelves = []
        for sid in sorted(by_shelf, key=_natural):
            shelves.append((sid, sorted(by_shelf[sid], key=_natural)))
        lanes = [ln for _, ls in shelves for ln in ls]
        return cls(shelves, lanes, np.arange(len(lanes), dtype=np.intp))


def _shelf_of(channel: str) -> str:
    return channel.rsplit(".", 1)[0] if "." in channel else "shelf"


def _natural(s: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


# ---------------------------------------------------------------------------------------------- gateway
@dataclass
class GatewayStats:
    samples: int = 0
    frames: int = 0
    changes: int = 0
    events: int = 0
    sub_events: int = 0
    picks: int = 0
    puts: int = 0
    foreign_puts: int = 0
    unexplained: int = 0
    unknown_channel: int = 0
    invalid_event: int = 0
    latency_s: list[float] = field(default_factory=list)  # t_emit - t_end, capture time


class ShelfGateway:
    """Sample blocks in, :class:`ShelfEventMsg` out (see the module docstring)."""

    def __init__(self, layout: Layout, planogram: Planogram, device: str, seq: Callable[[], int],
                 rate_hz: float = 60.0, detector: DetectorConfig | None = None,
                 identify: IdentifyConfig | None = None, silent_s: float = 0.5, max_wait_s: float = 0.25):
        self.layout = layout
        self.device = device
        self.seq = seq
        det_cfg = detector or DetectorConfig(rate_hz=rate_hz)
        if det_cfg.rate_hz != rate_hz:
            det_cfg = DetectorConfig(**{**det_cfg.__dict__, "rate_hz": rate_hz})
        self.identifier = Identifier(planogram, identify or IdentifyConfig(
            event_min_g=det_cfg.event_min_g, hidden_spill_k=det_cfg.k_lane, hidden_spill_min_g=det_cfg.lane_min_g))
        self.detector = ShelfDetector(layout.shelves, det_cfg, explain=self.identifier.explained_lanes)
        self.aligner = Aligner(len(layout.cells), rate_hz, silent_s=silent_s, max_wait_s=max_wait_s)
        self._cell_index = {c: i for i, c in enumerate(layout.cells)}
        self._map = np.zeros(0, np.intp)  # reader channel index -> cell index (-1: not ours)
        self._warned: set[str] = set()
        self.stats = GatewayStats()
        self.emit_times: dict[str, float] | None = None  # event id -> capture time it was emitted at (if set)
        self.processed_until: float | None = None  # capture time of the newest frame the detector has seen

    # ------------------------------------------------------------------------------------- feeding
    def _channel_map(self, channels: list[str]) -> np.ndarray:
        n0 = self._map.size
        if n0 < len(channels):
            new = np.array([self._cell_index.get(c, -1) for c in channels[n0:]], np.intp)
            for c, k in zip(channels[n0:], new, strict=True):
                if k < 0 and c not in self._warned:
                    self._warned.add(c)
                    log.warning("channel %s is not in the layout; its samples are dropped", c)
            self._map = np.concatenate([self._map, new])
        return self._map

    def feed(self, block: SampleBlock, channels: list[str]) -> list[ShelfEventMsg]:
        """One reader block (its lane indexes refer to ``channels``) -> the events it completes."""
        mp = self._channel_map(channels)
        if len(block):
            cells = mp[block.lane]
            ours = cells >= 0
            if not ours.all():
                self.stats.unknown_channel += int((~ours).sum())
            self.stats.samples += int(ours.sum())
            t, frames = self.aligner.push(cells[ours], block.ts[ours], block.grams[ours], block.until,
                                          block.complete)
        else:
            t, frames = self.aligner.push(np.zeros(0, np.intp), np.zeros(0), np.zeros(0), block.until,
                                          block.complete)
        return self._frames(t, frames)

    def finish(self) -> list[ShelfEventMsg]:
        """End of stream: flush the aligner and the detector."""
        t, frames = self.aligner.flush()
        msgs = self._frames(t, frames)
        return msgs + self._messages(self.detector.finish())

    def _frames(self, t: np.ndarray, frames: np.ndarray) -> list[ShelfEventMsg]:
        if t.size == 0:
            return []
        if self.layout.summed:
            frames = np.add.reduceat(frames, self.layout.cell_start, axis=1)
        self.stats.frames += int(t.size)
        msgs = self._messages(self.detector.push(t, frames))
        self.processed_until = max(float(t[-1]), self.processed_until or float(t[-1]))
        return msgs

    def watermark(self) -> float | None:
        """The gateway's event-time low watermark: every event whose ``t_start`` is before it has been returned
        by :meth:`feed`/:meth:`finish`.  The capture time of the newest frame processed, or earlier: the start
        of any shelf activity not yet emitted (a shelf still moving, a residue held until it is explained or
        given up).  None before the first frame."""
        marks = self.watermarks()
        if marks is None:
            return None
        return min(marks.values(), default=self.processed_until)

    def watermarks(self) -> dict[str, float] | None:
        """Each shelf's own low watermark (see :meth:`watermark`, their minimum).  None before the first
        frame."""
        if self.processed_until is None:
            return None
        out = {}
        for s in self.detector.shelves:
            t = self.processed_until
            if s.state == ACTIVE:
                t = min(t, s.t_start)
            if s.residue_since is not None:
                t = min(t, s.residue_since)
            out[s.id] = t
        return out

    # ------------------------------------------------------------------------------------- messages
    def _messages(self, changes: list[ShelfChange]) -> list[ShelfEventMsg]:
        out = []
        for ch in changes:
            self.stats.changes += 1
            self.stats.latency_s.append(ch.t_emit - ch.t_end)
            if not ch.explained:
                self.stats.unexplained += 1
            parts = self.identifier.identify(ch, learn=True)
            base = event_id(ch.shelf, ch.t_start)
            for r in parts:
                msg = self._message(r, base)
                if msg is not None:
                    out.append(msg)
        return out

    def _message(self, r: Identified, base: str) -> ShelfEventMsg | None:
        lanes = sorted(r.lanes, key=lambda kv: -abs(kv[1]))[:MAX_LANES_PER_MSG]
        if len(r.lanes) > MAX_LANES_PER_MSG:
            log.warning("event %s spans %d lanes; the %d that moved most are sent", base, len(r.lanes),
                        MAX_LANES_PER_MSG)
        ch = r.change
        eid = base if r.parts == 1 else f"{base}.{r.part + 1}"
        try:
            msg = ShelfEventMsg(
                source=self.device, seq=self.seq(), ts=ch.t_end, shelf=ch.shelf, event_id=eid,
                parent_id=base if r.parts > 1 else None, action=r.action, t_start=ch.t_start, t_end=ch.t_end,
                t_step=step_time(r, self.detector.cfg.smooth_s),
                lanes=[LaneDelta(lane=ln, delta_g=round(dg, 2)) for ln, dg in lanes],
                delta_g=round(r.total_g, 2),
                candidates=[WireCandidate(sku=c.sku, qty=c.qty, p=round(min(1.0, c.p), 4), foreign=c.foreign)
                            for c in r.candidates[:MAX_CANDIDATES_PER_MSG]],
            )
        except ValidationError as exc:
            self.stats.invalid_event += 1
            log.error("event %s does not fit the wire contract, not sent: %s", eid, exc.errors()[0])
            return None
        if self.emit_times is not None:
            self.emit_times[eid] = ch.t_emit
        self.stats.events += 1
        self.stats.sub_events += int(r.parts > 1)
        if r.action == "pick":
            self.stats.picks += 1
        else:
            self.stats.puts += 1
            if r.best is not None and r.best.foreign:
                self.stats.foreign_puts += 1
        return msg

    # ------------------------------------------------------------------------------------- status
    def counters(self, reader: Reader | None = None) -> dict[str, int]:
        """Counters for the status message and the summary (each capped at 10**6 as the wire allows)."""
        s = self.stats
        out: Counter = Counter({
            "samples_k": s.samples // 1000, "frames": s.frames, "changes": s.changes, "events": s.events,
            "sub_events": s.sub_events, "picks": s.picks, "puts": s.puts, "foreign_puts": s.foreign_puts,
            "unexplained": s.unexplained, "unknown_channel": s.unknown_channel,
            "invalid_event": s.invalid_event,
        })
        out.update(self.aligner.problems)
        out.update({k: v for k, v in self.detector.counters.items() if k != "changes"})
        if reader is not None:
            out.update(reader.problems)
        return {k: int(min(v, 10**6)) for k, v in sorted(out.items()) if _ID_OK.match(k)}


def step_time(r: Identified, smooth_s: float) -> float | None:
    """When the goods of the (sub-)event ``r`` left or reached the plates: the first time the smoothed level of
    its lane that moved most lay past half of its change, less half the smoothing (the boxcar's lag), kept
    within the change's start and end.  None when the detector has no step time for those lanes."""
    ch = r.change
    if ch.t_step is None:
        return None
    index = {lane: j for j, lane in enumerate(ch.lanes)}
    for lane, _ in sorted(r.lanes, key=lambda kv: -abs(kv[1])):
        j = index.get(lane)
        if j is not None and np.isfinite(ch.t_step[j, 0]):
            return min(max(round(float(ch.t_step[j, 0]) - smooth_s / 2, 3), ch.t_start), ch.t_end)
    return None


def event_id(shelf: str, t_start: float) -> str:
    """A deterministic event id (the same on every replay): ``{shelf}-{t_start in ms}``."""
    eid = f"{shelf}-{round(t_start * 1000)}"
    if len(eid) > 58:
        eid = hashlib.sha1(eid.encode()).hexdigest()[:16]
    return eid


# ---------------------------------------------------------------------------------------------- driving
def run(reader: Reader, gateway: ShelfGateway, sink: Callable[[ShelfEventMsg], None],
        stop: threading.Event | None = None, speed: float = 0.0,
        tick: Callable[[], None] | None = None) -> GatewayStats:
    """Feed every block of ``reader`` through ``gateway`` and hand each message to ``sink``.

    ``speed`` > 0 paces a recording at that multiple of real time (0: as fast as possible); ``tick`` is
    called after every block (status publishing).  Returns the gateway's stats.
    """
    stop = stop or threading.Event()
    t_wall0 = time.monotonic()
    t_data0: float | None = None
    for block in reader.blocks():
        if stop.is_set():
            break
        if speed > 0 and len(block):
            t_first = float(block.ts.min())
            t_data0 = t_first if t_data0 is None else t_data0
            ahead = (t_first - t_data0) / speed - (time.monotonic() - t_wall0)
            if ahead > 0 and stop.wait(ahead):
                break
        for msg in gateway.feed(block, reader.channels):
            sink(msg)
        if tick is not None:
            tick()
    for msg in gateway.finish():
        sink(msg)
    return gateway.stats
