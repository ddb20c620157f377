"""The fusion engine: tracks, gate scans, shelf events and device status in; cart changes and settled visits
out.  Pure and deterministic: no I/O, no wall clock.

Time is event time.  Messages wait in a reorder buffer and are processed in (ts, source, seq) order once the
clock (the newest capture time seen) is ``lateness_s`` past them, so the order in which the broker delivers
them does not change the result and a replay gives the same carts as the live run.  A shelf event is associated
once the clock passes its end by ``association.delay_s``; a visit is settled once the clock passes its last
exit by ``checkout.settle_delay_s`` and no earlier shelf event is still waiting.

Shoppers are bound to visits at the gate (:mod:`fusion.visits`).  One the floor tracker starts away from the
gate (someone lost in a crowd and found again under a new id) is bound to no visit, and so are their picks;
when their colour matches the colour at the gate of one open visit's shoppers and no other's, that visit
adopts them (``floor.adopt_*``), and their lines go into its cart as uncertain: held for review, not lost.

The whole engine pickles (``snapshot``/``restore``): the service stores snapshots in the database and replays
the messages committed after the last one, which gives the same state after a crash.  Memory and snapshots stay
flat over a long day: :meth:`FusionEngine.forget` drops settled visits, their carts and the shoppers who left
``checkout.forget_after_s`` after their exit (their receipts are in the database).
"""

from __future__ import annotations

import heapq
import logging
import math
import pickle
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
from pydantic import BaseModel

from calibration.store import Box, Shelf, Store
from fusion.association import (
    Association,
    EventEvidence,
    busy,
    gather,
    too_close_to_call,
    weigh_among,
    weigh_siblings,
)
from fusion.carts import (
    Cart,
    Line,
    choose_put_back,
    item_weight_factors,
    match_by_weight,
    weighed_items,
    weight_z,
)
from fusion.config import FusionConfig
from fusion.floor import LOST, FloorTracker, TrackObs
from fusion.visits import Visit, Visits
from wire.messages import GateEntryMsg, ShelfEventMsg, StatusMsg, TracksMsg

log = logging.getLogger(__name__)

_RANK = {GateEntryMsg: 0, StatusMsg: 1, TracksMsg: 2, ShelfEventMsg: 3}
# buffer entries are (ts, rank, source, seq, arrival, msg): an instant's frames go in this order
_SOURCE_SEQ_ARRIVAL = itemgetter(2, 3, 4)


@dataclass
class EvidenceRecord:
    """A shelf event's association evidence as the engine gathered it, and what it decided."""

    event: ShelfEventMsg
    evidence: EventEvidence
    eligible: set[str] | None  # who might have done it (None: everyone)
    siblings: list[str] = field(default_factory=list)  # the events weighed together with it, itself included
    decided: Association | None = None
    # the events of other shelf changes decided by then whose steps were within the busy window of its own
    busy: list[str] = field(default_factory=list)
    seq: int = -1  # the order of its decision among the engine's


# ------------------------------------------------------------------------------------------------ effects
@dataclass(frozen=True)
class CartChanged:
    visit: str
    account: str
    lines: tuple[Line, ...]
    total: int
    state: str  # open | settling | closed


@dataclass(frozen=True)
class VisitOpened:
    visit: str
    account: str
    gate: str
    party_size: int
    ts: float


@dataclass(frozen=True)
class VisitSettled:
    visit: str
    account: str
    decision: str  # charge | no_charge | hold
    lines: tuple[dict, ...]  # receipt lines
    total: int
    reasons: tuple[str, ...]
    entered_at: float
    exited_at: float
    settled_at: float
    shoppers: tuple[str, ...]


@dataclass(frozen=True)
class Unassigned:
    """A shelf event that could not be put in any visit's cart (held for ops review)."""

    event_id: str
    reason: str
    shelf: str
    ts: float
    candidates: tuple[tuple[str, int, float], ...]
    shopper: str | None


Effect = CartChanged | VisitOpened | VisitSettled | Unassigned


@dataclass
class _Pending:
    due: float
    msg: ShelfEventMsg
    held: Association | None = None  # too close to call: weighed against the events around it when due


@dataclass
class _Decided:
    """A shelf event's decision, kept a while for the events too close to call around it."""

    t: float  # its step (its start without one)
    event_id: str
    parent_id: str | None
    lanes: frozenset[str]
    a: Association


@dataclass
class _Misplaced:
    """Goods a shopper put back on another product's lane, as fusion resolved them from the cart: what they
    are and what one of them weighed on the shelf, so that whoever takes them from there later is charged for
    them, not for what the shelf guessed."""

    lane: str
    sku: str
    unit_g: float  # measured: the put-back's weight change over its quantity
    count: int
    t: float
    p: float  # how sure the cart was of the product (0: a weight match too far off to be sure)


@dataclass
class EngineStats:
    processed: Counter = field(default_factory=Counter)
    late: int = 0


class FusionEngine:
    def __init__(self, store: Store, config: FusionConfig | None = None):
        self.store = store
        self.cfg = config or FusionConfig()
        self.floor = FloorTracker(store, self.cfg.floor)
        self.visits = Visits(store)
        self.carts: dict[str, Cart] = {}
        self.clock = 0.0  # newest capture time seen
        self.processed_until = 0.0
        self._buffer: list[tuple[float, int, str, int, int, BaseModel]] = []
        self._tiebreak = 0
        self._events: list[_Pending] = []
        self._decided: list[_Decided] = []  # the last minute's decisions (:meth:`_busy`)
        self._decided_n = 0
        # shelf change (parent_id) -> (t_end, lanes) of each of its events: the lanes of an event's siblings
        self._changes: dict[str, list[tuple[float, tuple[str, ...]]]] = {}
        self._misplaced: list[_Misplaced] = []  # goods put back on other products' lanes, still there
        self._parties_leaving: set[str] = set()  # open visits some of whose shoppers have left
        self._party_checked: float | None = None  # the instant they were last checked
        self._settle: dict[str, float] = {}  # visit -> due time
        self.offline: dict[str, list[list[float]]] = {}  # device -> [[from, to or inf], ...]
        self.camera_seen: dict[str, float] = {}
        self.camera_clock: dict[str, float] = {}  # newest capture time delivered per camera device (source)
        # shelf device -> (newest low watermark it sent, ts of that status): every shelf event starting before
        # the watermark was published.  Devices that never sent one (older gateways) are not in it
        self.shelf_marks: dict[str, tuple[float, float]] = {}
        # ... and each of its shelves' own watermark, from gateways that send them: a visit waits only for the
        # shelves its shoppers came near (activity on a shelf across the store cannot be theirs)
        self.shelf_marks_by_shelf: dict[str, dict[str, float]] = {}
        self.stats = EngineStats()
        self.forgotten: list[Visit] | None = None  # a list: :meth:`forget` keeps what it drops there (replays)
        # a dict: each shelf event's association evidence and decision is kept there (``walkout.association_study``)
        self.evidence_log: dict[str, EvidenceRecord] | None = None
        self.lane_boxes = {lid: ln.box for lid, ln in store.lanes.items()}
        self.unit_weights = {sku: (pr.weight_g, pr.weight_sd_g) for sku, pr in store.products.items()}
        # shelf -> floor rectangle (lo, hi) around its lanes' footprints
        self.shelf_extent = {sid: _extent(sh) for sid, sh in store.shelves.items()}

    # ------------------------------------------------------------------------------------------ input
    def offer(self, msg: BaseModel) -> list[Effect]:
        """Add one validated message; returns the effects of everything that became due."""
        ts = float(msg.ts)
        if ts < self.processed_until:
            self.stats.late += 1
            log.debug("late message from %s seq %s (%.3f < %.3f)", msg.source, msg.seq, ts, self.processed_until)
        self._tiebreak += 1
        heapq.heappush(self._buffer, (ts, _RANK.get(type(msg), 9), msg.source, msg.seq, self._tiebreak, msg))
        self.clock = max(self.clock, ts)
        if isinstance(msg, TracksMsg):
            self.camera_clock[msg.source] = max(self.camera_clock.get(msg.source, ts), ts)
        return self.advance(self.watermark() - self.cfg.lateness_s)

    def watermark(self) -> float:
        """Event time up to which every camera that is still streaming has delivered: the newest capture time
        of the slowest camera less than ``camera_stall_s`` behind the newest one and not reported offline."""
        if not self.camera_clock:
            return self.clock
        clocks = self.camera_clock
        oldest = max(clocks.values()) - self.cfg.camera_stall_s
        if not self.offline:  # (the usual case, and the hot path: once per message)
            live = [c for c in clocks.values() if c >= oldest]
        else:
            live = [c for dev, c in clocks.items() if c >= oldest and not self._offline_now(dev)]
        return min(live) if live else self.clock

    def _offline_now(self, device: str) -> bool:
        spans = self.offline.get(device)
        return bool(spans) and spans[-1][1] == float("inf")

    def advance(self, until: float) -> list[Effect]:
        """Process everything due up to event time ``until``."""
        out: list[Effect] = []
        while self._buffer and self._buffer[0][0] <= until:
            first = heapq.heappop(self._buffer)
            if isinstance(first[-1], TracksMsg):
                for entry in self._instant(first):
                    self.processed_until = max(self.processed_until, float(entry[-1].ts))
                    self.stats.processed["TracksMsg"] += 1
                    out.extend(self._tracks(entry[-1], first[0]))
            else:
                self.processed_until = max(self.processed_until, float(first[-1].ts))
                out.extend(self._process(first[-1]))
            out.extend(self._due(self.processed_until))
        out.extend(self._due(until))
        return out

    def _instant(self, first: tuple) -> list[tuple]:
        """The camera frames of one instant: ``first`` (the earliest buffered frame) and every other camera's
        frame captured less than ``instant_s`` after it, in camera order.  They are folded in at ``first``'s
        time, so which of two simultaneous frames is taken first does not hang on a clock's last millisecond
        (edge clocks agree to a few ms, :mod:`wire.clock`)."""
        group, held, cams = [first], [], {first[-1].source}
        limit = first[0] + self.cfg.instant_s
        while self._buffer and self._buffer[0][0] <= limit:
            entry = heapq.heappop(self._buffer)
            if isinstance(entry[-1], TracksMsg) and entry[-1].source not in cams:
                group.append(entry)
                cams.add(entry[-1].source)
            else:
                held.append(entry)
        for entry in held:
            heapq.heappush(self._buffer, entry)
        group.sort(key=_SOURCE_SEQ_ARRIVAL)
        return group

    def finish(self) -> list[Effect]:
        """End of input (end of a replay): process everything buffered and settle what has ended."""
        out = self.advance(float("inf") if not self._buffer else max(m[0] for m in self._buffer))
        # no more input can bring a lost shopper back: they left unseen
        for s in self.floor.lost():
            out.extend(self._shopper_left(self.floor.vanish(s), self.processed_until))
        out.extend(self._due(float("inf")))
        return out

    # ------------------------------------------------------------------------------------------ dispatch
    def _process(self, msg: BaseModel) -> list[Effect]:
        """Any message but a camera frame (those go by instants, :meth:`_instant`)."""
        self.stats.processed[type(msg).__name__] += 1
        if isinstance(msg, ShelfEventMsg):
            due = msg.t_end + self.cfg.association.delay_s
            if msg.parent_id:  # its siblings come right after it: not before the cameras have moved on
                due = max(due, self.clock)
                self._changes.setdefault(msg.parent_id, []).append((msg.t_end, tuple(ln.lane for ln in msg.lanes)))
            self._events.append(_Pending(due, msg))
            return []
        if isinstance(msg, GateEntryMsg):
            return self._entry(msg)
        if isinstance(msg, StatusMsg):
            self._status(msg)
            return []
        return []

    def _tracks(self, msg: TracksMsg, ts: float) -> list[Effect]:
        """One camera frame, folded in at ``ts`` (its instant's time, :meth:`_instant`)."""
        self.camera_seen[msg.camera] = ts
        obs = []
        for t in msg.tracks:
            wrists = []  # (side, origin, dir, conf): the tracker reads floats
            if (kp := t.lwrist) is not None and kp.conf > 0.2 and (ray := kp.ray) is not None:
                wrists.append((0, ray.origin, ray.dir, kp.conf))
            if (kp := t.rwrist) is not None and kp.conf > 0.2 and (ray := kp.ray) is not None:
                wrists.append((1, ray.origin, ray.dir, kp.conf))
            head = None
            if t.head is not None and t.head.ray is not None and t.head.conf >= self.cfg.floor.min_head_conf:
                head = (t.head.ray.origin, t.head.ray.dir)
            obs.append(TrackObs(t.id, t.floor, t.floor_cov, wrists, head, t.colour))
        left = self.floor.update(msg.camera, ts, obs)
        out = self._bind(ts)
        if self.cfg.floor.adopt_colour_d2 > 0:
            self._adopt()
        for sid in left:
            out.extend(self._shopper_left(sid, ts))
        if self._parties_leaving and ts != self._party_checked:
            self._party_checked = ts  # once per instant
            out.extend(self._lost_behind_party(ts))
        if self.stats.processed["TracksMsg"] % 200 == 0:
            self.floor.prune(ts)
            self.forget(ts - self.cfg.checkout.forget_after_s)
        return out

    def forget(self, before: float) -> list[Visit]:
        """Drop what no message can change any more, so memory and snapshots stay flat however long the
        store is open: visits settled (and their carts) whose last exit was before ``before``, the shoppers
        who left before it and offline spans that ended before it and before every open visit began.
        Returns the visits dropped (their receipts are in the database).  A late shelf event of a dropped
        visit's shopper goes to review as unassigned, as one of a settled visit does."""
        old = [v for v in self.visits.visits.values() if v.settled and (v.exited_at or v.entered_at) < before]
        for v in old:
            del self.visits.visits[v.id]
            self.carts.pop(v.id, None)
            for sid in v.shoppers:
                self.visits.by_shopper.pop(sid, None)
        if self.forgotten is not None:
            self.forgotten.extend(old)
        n = self.floor.forget(before, keep=frozenset(self.visits.by_shopper))
        cut = min([before] + [v.entered_at for v in self.visits.visits.values() if not v.settled])
        for spans in self.offline.values():  # a span an open visit overlapped still holds it at settling
            spans[:] = [sp for sp in spans if sp[1] >= cut]
        if old or n:
            log.debug("forgot %d settled visits and %d shoppers who left before %.3f", len(old), n, before)
        return old

    def _bind(self, ts: float) -> list[Effect]:
        if not self.visits.has_pending(ts):
            return []
        cands = [(inf.id, inf.created_t, inf.xy) for inf in self.floor.live()
                 if inf.origin == "gate" and inf.id not in self.visits.by_shopper]
        for sid, vid in self.visits.bind(ts, cands):
            self.floor.shopper(sid).visit = vid
        return []

    def _adopt(self) -> None:
        """Bind a shopper who appeared away from the gate (a track the floor could not join to anyone: a
        shopper lost in a crowd and found again under a new id) to the open visit whose shoppers' colour at the
        gate it matches, when that is unambiguous (:class:`fusion.config.FloorConfig` ``adopt_*``).  Colour
        alone is weak evidence: the lines of an adopted shopper are uncertain, so their visit is held for review
        with them in the cart rather than charged without them (the pick would otherwise go to no visit)."""
        cfg = self.cfg.floor
        for inf in self.floor.live():
            if inf.origin != "unknown" or inf.adoption_decided or inf.colour is None or \
                    inf.colour_n < cfg.adopt_min_obs or inf.id in self.visits.by_shopper:
                continue
            inf.adoption_decided = True
            best: dict[str, float] = {}
            for v in self.visits.visits.values():
                if v.exited_at is not None or v.settled:
                    continue
                for sid in v.shoppers:
                    other = self.floor.shopper(sid)
                    if other.entry_colour is not None and other.origin == "gate":
                        d2 = float(self.floor.colour_d2(inf.colour, other.entry_colour))
                        best[v.id] = min(best.get(v.id, math.inf), d2)
            ranked = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))
            if not ranked or ranked[0][1] > cfg.adopt_colour_d2 or \
                    (len(ranked) > 1 and ranked[1][1] - ranked[0][1] < cfg.adopt_margin_d2):
                log.debug("shopper %s not adopted: %s", inf.id, ranked[:2])
                continue
            vid = ranked[0][0]
            self.visits.adopt(inf.id, vid)
            inf.visit, inf.adopted = vid, True
            log.info("shopper %s adopted by visit %s (colour d2 %.2f, next %s)", inf.id, vid, ranked[0][1],
                     ranked[1] if len(ranked) > 1 else None)

    def _entry(self, msg: GateEntryMsg) -> list[Effect]:
        v = self.visits.scan(msg.gate, msg.account, msg.party_size, msg.ts)
        if v.id in self.carts:
            return []
        self.carts[v.id] = Cart(v.id)
        self._bind(msg.ts)
        return [VisitOpened(v.id, v.account, v.gate, v.party_size, msg.ts)]

    def _status(self, msg: StatusMsg) -> None:
        if msg.kind == "shelf" and msg.watermark is not None:
            mark = self.shelf_marks.get(msg.device)
            if mark is None or (msg.watermark, msg.ts) > mark:  # the newest; a late older status changes nothing
                self.shelf_marks[msg.device] = (msg.watermark, msg.ts)
                if msg.shelf_watermarks:
                    self.shelf_marks_by_shelf[msg.device] = dict(msg.shelf_watermarks)
                else:
                    self.shelf_marks_by_shelf.pop(msg.device, None)
        spans = self.offline.setdefault(msg.device, [])
        at = max(self.processed_until, msg.ts) if msg.state != "online" else msg.ts
        if msg.state in ("offline", "stopped"):
            if not spans or spans[-1][1] != float("inf"):
                spans.append([at, float("inf")])
        elif spans and spans[-1][1] == float("inf"):
            spans[-1][1] = max(msg.ts, spans[-1][0])

    def _shopper_left(self, sid: str, ts: float) -> list[Effect]:
        vid = self.visits.by_shopper.get(sid)
        if vid is None:
            return []
        v = self.visits.visits[vid]
        out = self._maybe_close(v, ts)
        if v.exited_at is None and len(v.shoppers) > 1:
            self._parties_leaving.add(vid)  # some of the party have left: watched for members lost behind them
        else:
            self._parties_leaving.discard(vid)
        return out

    def _lost_behind_party(self, now: float) -> list[Effect]:
        """Party members lost in the store for ``checkout.party_gone_s`` while every other member of their party
        has left: they left with them unseen (a track lost in the crowd at the exit), so the visit settles, held
        for review as lost, rather than ``floor.vanish_after_s`` later."""
        wait = self.cfg.checkout.party_gone_s
        out: list[Effect] = []
        if wait <= 0:
            return out
        for vid in sorted(self._parties_leaving):
            v = self.visits.visits.get(vid)
            if v is None or v.exited_at is not None:  # closed otherwise (or forgotten)
                self._parties_leaving.discard(vid)
                continue
            members = [self.floor.shopper(o) for o in v.shoppers]
            lost = [m for m in members if m.state == LOST and now - m.seen > wait]
            if lost and len(lost) + sum(m.exited_t is not None for m in members) == len(members):
                for m in lost:
                    log.info("shopper %s lost since %.3f while the rest of visit %s left: gone with them", m.id,
                             m.seen, vid)
                    out.extend(self._shopper_left(self.floor.vanish(m), now))
        return out

    def _maybe_close(self, v: Visit, now: float) -> list[Effect]:
        """Close a visit whose shoppers have all left (or that never got one), and schedule its settling."""
        if v.exited_at is not None:
            return []
        waited = now - v.entered_at > self.visits.bind_after_s
        if not v.shoppers:
            if not waited:
                return []
            exited = v.entered_at + self.visits.bind_after_s
        else:
            exits = [self.floor.shopper(s).exited_t for s in v.shoppers]
            if any(e is None for e in exits) or (v.open_slots > 0 and not waited):
                return []
            exited = max(e for e in exits if e is not None)
        v.exited_at = exited
        self._settle[v.id] = max(exited, now) + self.cfg.checkout.settle_delay_s
        return [self._cart_effect(v, "settling")]

    # ------------------------------------------------------------------------------------------ timers
    def _due(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if now != math.inf and self.visits.unfilled:
            for v in self.visits.pending_close(now, self.visits.bind_after_s):
                out.extend(self._maybe_close(v, now))
        while self._events and min(p.due for p in self._events) <= now:  # again for those waiting (busy)
            ready = sorted((p for p in self._events if p.due <= now), key=lambda p: (p.msg.t_end, p.msg.event_id))
            if any(p.msg.parent_id for p in ready):  # a change's events go together: wait for those in the buffer
                coming = {e[-1].parent_id for e in self._buffer if isinstance(e[-1], ShelfEventMsg)}
                ready = [p for p in ready if not p.msg.parent_id or p.msg.parent_id not in coming]
            if not ready:
                break
            taken = {id(p) for p in ready}
            self._events = [p for p in self._events if id(p) not in taken]
            joint = self._associate_siblings([p.msg for p in ready if p.held is None])
            for p in ready:
                out.extend(self._decide_event(p, joint.get(p.msg.event_id)))
        if not self._settle or min(self._settle.values()) > now:
            return out
        wait_max = self.cfg.checkout.shelf_wait_max_s
        for vid, due in sorted(self._settle.items(), key=lambda kv: (kv[1], kv[0])):
            v = self.visits.visits[vid]
            exited = v.exited_at or 0
            if due > now or self._events_may_be_theirs(v, exited):
                continue
            # shelf gateways whose watermark has not passed the exit may still hold events of the visit's last
            # moments (a stalled link, its outbox waiting): wait for the online ones, up to wait_max
            behind = self._gateways_behind(v, exited)
            waiting = [dev for dev in behind if not self._offline_now(dev)]
            if waiting and now != float("inf") and now < due + wait_max:
                continue
            if waiting and now != float("inf"):
                log.warning("visit %s: shelf gateway(s) %s silent past its exit for %.0f s (last watermark "
                            "status at %s); settled for review", vid, ", ".join(waiting), now - due,
                            ", ".join(f"{self.shelf_marks[d][1]:.3f}" for d in waiting))
            del self._settle[vid]
            out.append(self._settle_visit(v, due if now == float("inf") else max(due, self.clock), behind))
        return out

    def _events_may_be_theirs(self, v: Visit, exited: float) -> bool:
        """Whether a shelf event still waiting for its association started before visit ``v``'s exit on a
        shelf one of its shoppers was near (within ``association.candidate_radius_m``) at or after its start:
        only such an event can become one of the visit's lines (or hold it); another shopper's event across the
        store cannot, and waiting for it would delay the receipt by that event's wait."""
        early = [p.msg for p in self._events if p.msg.t_start <= exited]
        if not early:
            return False
        near = self._shelves_near(v, self.cfg.association.candidate_radius_m)
        pad = self.cfg.association.window_pad_s
        return any(m.shelf not in self.shelf_extent or near.get(m.shelf, -math.inf) >= m.t_start - pad
                   for m in early)

    def _gateways_behind(self, v: Visit, exited: float) -> list[str]:
        """Shelf gateways that may still hold events of visit ``v``: their watermark has not passed its exit
        -- for gateways that send per-shelf watermarks, on a shelf the visit's shoppers came near, and only up
        to the last moment they were near it (``checkout.shelf_near_margin_s`` later): an event of theirs on
        it started while they were there, and someone else's change still open on a shelf they passed long ago
        is not theirs."""
        late = sorted(dev for dev, (mark, _) in self.shelf_marks.items() if mark < exited)
        if not late or not any(dev in self.shelf_marks_by_shelf for dev in late):
            return late
        near = self._shelves_near(v)
        margin = self.cfg.checkout.shelf_near_margin_s
        return [dev for dev in late if dev not in self.shelf_marks_by_shelf
                or any(t < min(exited, near[sid] + margin)
                       for sid, t in self.shelf_marks_by_shelf[dev].items() if sid in near)]

    def _shelves_near(self, v: Visit, reach: float | None = None) -> dict[str, float]:
        """Shelves within ``reach`` (default: an arm's reach and a margin) of where the visit's shoppers were,
        over the positions still kept (``floor.history_s`` before each one's last), with the last time one of
        them was there."""
        pts = [(t, x, y) for sid in v.shoppers for t, x, y in self.floor.shopper(sid).path]
        if not pts:
            return dict.fromkeys(self.shelf_extent, math.inf)  # nothing to go by: every shelf, to the end
        txy = np.asarray(pts)
        xy = txy[:, 1:]
        if reach is None:
            reach = self.cfg.association.reach_m + 0.5
        out = {}
        for sid, (lo, hi) in self.shelf_extent.items():
            gap = np.maximum(np.maximum(lo - xy, xy - hi), 0.0)
            at = gap[:, 0] ** 2 + gap[:, 1] ** 2 <= reach * reach
            if at.any():
                out[sid] = float(txy[at, 0].max())
        return out

    # ------------------------------------------------------------------------------------------ shelf events
    def _associate_siblings(self, events: list[ShelfEventMsg]) -> dict[str, Association]:
        """Associations of the events of one shelf change that come due together, weighed jointly
        (:func:`fusion.association.sibling_factors`); the others are associated one by one later."""
        groups: dict[str, list[ShelfEventMsg]] = {}
        for ev in events:
            if ev.parent_id and any(ln.lane in self.lane_boxes for ln in ev.lanes):
                groups.setdefault(ev.parent_id, []).append(ev)
        out: dict[str, Association] = {}
        for group in groups.values():
            if len(group) < 2:
                continue
            assocs = [self._associate(ev) for ev in group]
            if self.evidence_log is not None:
                for ev in group:
                    self.evidence_log[ev.event_id].siblings = [e.event_id for e in group]
            for ev, a in zip(group, weigh_siblings(assocs, self.cfg.association), strict=True):
                out[ev.event_id] = a
        return out

    def _associate(self, ev: ShelfEventMsg) -> Association:
        """The event's association among the eligible shoppers (:func:`fusion.association.weigh_among`)."""
        boxes = [self.lane_boxes[ln.lane] for ln in ev.lanes if ln.lane in self.lane_boxes]
        evidence = gather(self.floor, boxes, ev.t_start, ev.t_end, self.cfg.association, self._rivals(ev),
                          ev.t_step)
        eligible = self._eligible()
        if self.evidence_log is not None:
            self.evidence_log[ev.event_id] = EvidenceRecord(ev, evidence, eligible)
        return weigh_among(evidence, self.cfg.association, eligible)

    def _eligible(self) -> set[str] | None:
        """Who may have done a shelf event: everyone but the shoppers who appeared away from the gate and whose
        colour matched no visit (:meth:`_adopt` decided against them).  Nobody enters but through the gate:
        such a shopper is a camera's track the floor could not join to the person it shows -- a second box on
        someone bending into a shelf, or a ghost where two people's head rays cross -- and it carries that
        person's wrist rays, so it would take their picks to no visit (when nobody else is near, it still
        takes the event, to review).  None: nobody is left out."""
        out = {inf.id for inf in self.floor.info
               if inf.origin != "unknown" or not inf.adoption_decided or inf.id in self.visits.by_shopper}
        return None if len(out) == len(self.floor.info) else out

    def _decide_event(self, p: _Pending, a: Association | None) -> list[Effect]:
        """Associate a due event (``a``: already, with its siblings) and apply it.  One too close to call waits
        until ``busy_wait_s`` past its step, for the events around it to be decided, and is then weighed
        against them (:meth:`_busy`)."""
        ev, cfg = p.msg, self.cfg.association
        if p.held is not None:
            return self._shelf_event(ev, self._busy(ev, p.held))
        if not any(ln.lane in self.lane_boxes for ln in ev.lanes):
            return self._shelf_event(ev)
        a = a or self._associate(ev)
        if cfg.busy_window_s > 0 and too_close_to_call(a, cfg):
            self._events.append(_Pending(max(p.due, _step(ev) + cfg.busy_wait_s), ev, a))
            return []
        return self._shelf_event(ev, a)

    def _around(self, ev: ShelfEventMsg) -> list[_Decided]:
        """The decided events of other shelf changes, on other lanes, whose steps were within ``busy_window_s``
        of ``ev``'s."""
        t, lanes, window = _step(ev), {ln.lane for ln in ev.lanes}, self.cfg.association.busy_window_s
        return [d for d in self._decided if abs(d.t - t) < window and d.event_id != ev.event_id
                and not (ev.parent_id and d.parent_id == ev.parent_id) and not (lanes & d.lanes)]

    def _busy(self, ev: ShelfEventMsg, a: Association) -> Association:
        """``a``, too close to call, weighed against what its candidates were doing at the same moment
        (:func:`fusion.association.busy`)."""
        return busy(a, [d.a for d in self._around(ev)], self.cfg.association)

    def _remember(self, ev: ShelfEventMsg, a: Association) -> None:
        t = _step(ev)
        if len(self._decided) >= 256:
            self._decided = [d for d in self._decided if d.t > t - 60.0]
        if self.evidence_log is not None and ev.event_id in self.evidence_log:
            rec = self.evidence_log[ev.event_id]
            rec.decided, rec.seq, rec.busy = a, self._decided_n, [d.event_id for d in self._around(ev)]
        self._decided_n += 1
        self._decided.append(_Decided(t, ev.event_id, ev.parent_id, frozenset(ln.lane for ln in ev.lanes), a))

    def _shelf_event(self, ev: ShelfEventMsg, a: Association | None = None) -> list[Effect]:
        cands = [(c.sku, c.qty, c.p) for c in sorted(ev.candidates, key=lambda c: (-c.p, c.sku, c.qty))]
        if not any(ln.lane in self.lane_boxes for ln in ev.lanes):
            return [Unassigned(ev.event_id, "event on lanes this store does not have", ev.shelf, ev.ts,
                               tuple(cands), None)]
        if a is None:
            a = self._associate(ev)
        self._remember(ev, a)
        vid = self.visits.by_shopper.get(a.shopper) if a.shopper else None
        if vid is None or vid not in self.carts:
            why = a.reason or ("shopper not bound to a visit" if a.shopper else "no shopper")
            return [Unassigned(ev.event_id, why, ev.shelf, ev.ts, tuple(cands), a.shopper)]
        v = self.visits.visits[vid]
        if v.settled:
            return [Unassigned(ev.event_id, f"visit {vid} was already settled", ev.shelf, ev.ts,
                               tuple(cands), a.shopper)]
        cart = self.carts[vid]
        line = self._line(ev, a, cands, cart)
        if line is None:
            return [self._cart_effect(v, "open"), *self._hold_holders(ev, a, vid, cands)]
        cart.append(line)
        return [self._cart_effect(v, "open"), *self._hold_runner_up(ev, a, vid)]

    def _hold_runner_up(self, ev: ShelfEventMsg, a: Association, vid: str) -> list[Effect]:
        """A line whose shopper led the runner-up by too little (``association.min_margin``) may be the
        runner-up's: their visit is held for review too, not charged without it (either cart may be the wrong
        one)."""
        if a.runner_up is None or a.margin >= self.cfg.association.min_margin:
            return []
        return self._hold_also(ev, vid, [a.runner_up],
                               f"may be {a.runner_up}'s (went to {a.shopper} of visit {vid}, margin {a.margin:.2f})")

    def _hold_holders(self, ev: ShelfEventMsg, a: Association, vid: str,
                      cands: list[tuple[str, int, float]]) -> list[Effect]:
        """A put-back that matched nothing in the cart of the shopper it went to: the other shoppers near it
        whose carts hold one of its candidate products may have put it back -- their visits are held too, not
        charged for what may be back on the shelf."""
        if ev.action == "pick" or not cands:
            return []
        skus = {sku for sku, _, _ in cands}
        holders = []
        for sid in sorted(a.scores):
            cart = self.carts.get(self.visits.by_shopper.get(sid, ""))
            if sid != a.shopper and cart is not None:
                held = cart.holdings()  # (once per cart, not per product)
                if any(held[sku] > 0 for sku in skus):
                    holders.append(sid)
        return self._hold_also(ev, vid, holders, f"put-back not in the cart of {a.shopper} (visit {vid}) "
                                                 "but in this one's: may be theirs")

    def _hold_also(self, ev: ShelfEventMsg, vid: str, shoppers: list[str], why: str) -> list[Effect]:
        """Hold the visits of ``shoppers`` other than ``vid`` (still open) for review, with ``why`` about
        ``ev``; once per event and visit (the same evidence applied twice, as on a replay after a restart,
        adds nothing)."""
        out: list[Effect] = []
        for sid in shoppers:
            rvid = self.visits.by_shopper.get(sid)
            if rvid is None or rvid == vid or rvid not in self.carts or self.visits.visits[rvid].settled:
                continue
            issue = f"event {ev.event_id}: {why}"
            cart = self.carts[rvid]
            if issue not in cart.issues:
                cart.issues.append(issue)
                out.append(self._cart_effect(self.visits.visits[rvid], "open"))
        return out

    def _rivals(self, ev: ShelfEventMsg) -> list[Box]:
        """The lanes of the other events of ``ev``'s shelf change (a change split into sub-events, one per
        product: two shoppers, or two hands, in neighbouring lanes at once)."""
        if len(self._changes) > 512:  # changes whose events were all associated long ago
            self._changes = {p: v for p, v in self._changes.items() if max(t for t, _ in v) > ev.t_end - 120.0}
        if not ev.parent_id:
            return []
        own = {ln.lane for ln in ev.lanes}
        lanes = {lane for _, ls in self._changes.get(ev.parent_id, []) for lane in ls} - own
        return [self.lane_boxes[lane] for lane in sorted(lanes) if lane in self.lane_boxes]

    def _line(self, ev: ShelfEventMsg, a: Association, cands: list[tuple[str, int, float]],
              cart: Cart) -> Line | None:
        cfg = self.cfg.association
        lanes = tuple(ln.lane for ln in ev.lanes)
        base = {"event_id": ev.event_id, "shopper": a.shopper, "runner_up": a.runner_up,
                "cameras": tuple(a.cameras), "t": ev.t_end, "lanes": lanes, "margin": round(a.margin, 4)}
        if not cands:
            cart.issues.append(f"event {ev.event_id}: {ev.action} of {ev.delta_g:.0f} g not identified")
            return None
        reasons_extra: list[str] = []
        if ev.action == "pick":
            sku, qty, p = self._misplaced_taken(ev, cands) or self._misplaced_weighed(ev, cands)[0]
            kind = "pick"
        else:
            units = self.unit_weights

            def weighs_right(sku: str, qty: int) -> bool:
                return sku in units and weight_z(ev.delta_g, qty, units[sku],
                                                 cfg.put_back_weight_sd_g) <= cfg.put_back_weight_sure_z

            if cfg.put_back_item_sd_g > 0:
                cands = item_weight_factors(weighed_items(cart), cands, ev.delta_g, units, cfg.put_back_item_sd_g,
                                            cfg.put_back_item_odd)
            choice = choose_put_back(cart, cands, cfg.put_back_min_mass, weighs_right)
            weighed = None
            if choice is None and cfg.put_back_weight_max_z > 0:
                weighed = match_by_weight(cart, abs(ev.delta_g), units, cfg.put_back_weight_sd_g,
                                          cfg.put_back_weight_max_z)
            if choice is None and weighed is None:
                cart.issues.append(f"event {ev.event_id}: put-back of {cands[0][0]} not in the cart")
                return None
            if weighed is not None:  # put back on another product's lane: what the cart holds of that weight
                sku, qty, z = weighed
                p = 1.0
                kind = "misplaced_return"
                if z > cfg.put_back_weight_sure_z:
                    reasons_extra = [(f"put-back read as {cands[0][0]} (not in the cart) taken as {sku} by its "
                                      f"weight, {z:.1f} spreads off")]
            else:
                sku, qty, p = choice
                foreign = any(c.foreign for c in ev.candidates if c.sku == sku)
                kind = "misplaced_return" if foreign else "put_back"
            qty = -qty
        reasons = ([a.reason] if a.uncertain else []) + reasons_extra
        if a.shopper is not None and self.floor.shopper(a.shopper).adopted:
            reasons.append(f"shopper {a.shopper} was bound to the visit by colour only")
        if p < cfg.min_candidate_p:
            reasons.append(f"product identification p={p:.2f}")
        product = self.store.products.get(sku)
        price = product.price if product else 0
        if product is None:
            reasons.append(f"unknown SKU {sku}")
        if kind == "misplaced_return":
            self._remember_misplaced(ev, sku, -qty, 0.0 if reasons_extra else p)
        return Line(line_id=ev.event_id, kind=kind, sku=sku, qty=qty, unit_price=price,
                    confidence=round(a.p * p, 4), uncertain=bool(reasons), reason="; ".join(reasons),
                    grams=abs(ev.delta_g), **base)

    def _remember_misplaced(self, ev: ShelfEventMsg, sku: str, count: int, p: float) -> None:
        """Keep a misplaced return (``count`` x ``sku`` as resolved from the cart, ``p`` how sure of the
        product) on the lane that took most of its weight, for :meth:`_misplaced_taken`, for
        ``association.misplaced_memory_s``."""
        keep = self.cfg.association.misplaced_memory_s
        if keep <= 0 or not ev.lanes or count <= 0 or ev.delta_g == 0:
            return
        self._misplaced = [m for m in self._misplaced if m.t > ev.t_end - keep and m.count > 0]
        lane = max(ev.lanes, key=lambda ln: (abs(ln.delta_g), ln.lane)).lane
        self._misplaced.append(_Misplaced(lane, sku, abs(ev.delta_g) / count, count, ev.t_end, p))

    def _misplaced_at(self, ev: ShelfEventMsg) -> list[_Misplaced]:
        """The misplaced goods fusion knows on ``ev``'s lanes, put there before it began."""
        lanes = {ln.lane for ln in ev.lanes}
        return [m for m in self._misplaced if m.lane in lanes and m.count > 0 and m.t < ev.t_start]

    def _misplaced_weighed(self, ev: ShelfEventMsg, cands: list[tuple[str, int, float]]
                           ) -> list[tuple[str, int, float]]:
        """The candidates of a pick that took none of the misplaced goods fusion knows on its lanes, reweighed
        by what those goods weighed (:func:`fusion.carts.item_weight_factors`): a product the shelf guessed only
        because an item of it lies on the lane now, which weighed something else, is unlikely (a Caesar
        salad misplaced on the Popcorners lane weighed 312.8 g; a pick of 303.9 g there was two Popcorners)."""
        cfg = self.cfg.association
        items: dict[str, list[tuple[float, int]]] = {}
        for m in self._misplaced_at(ev):
            items.setdefault(m.sku, []).append((m.unit_g * m.count, m.count))
        if not items or cfg.put_back_item_sd_g <= 0:
            return cands
        out = item_weight_factors(items, cands, ev.delta_g, self.unit_weights, cfg.put_back_item_sd_g,
                                  cfg.put_back_item_odd)
        return sorted(out, key=lambda c: -c[2])

    def _misplaced_taken(self, ev: ShelfEventMsg, cands: list[tuple[str, int, float]]
                         ) -> tuple[str, int, float] | None:
        """A pick from a lane fusion knows holds misplaced goods (:meth:`_remember_misplaced`) whose weight
        matches them (within ``put_back_weight_sure_z`` spreads of two weighings), when the shelf took it for
        misplaced goods too (its best candidate is foreign to the lane) or was unsure (below
        ``min_candidate_p``): those goods, as the cart that returned them knew them (and as sure of them) --
        the shelf only knows weights, and a misplaced item's weight may fit other products better.  None when
        no such goods, or goods of two products, fit."""
        cfg = self.cfg.association
        if not self._misplaced or not cands:
            return None
        top_sku, _, top_p = cands[0]
        foreign = any(c.foreign for c in ev.candidates if c.sku == top_sku)
        if not foreign and top_p >= cfg.min_candidate_p:
            return None
        sd = cfg.put_back_weight_sd_g * math.sqrt(2.0)
        fits = []
        for m in self._misplaced_at(ev):
            k = max(1, min(m.count, round(abs(ev.delta_g) / m.unit_g)))
            z = abs(abs(ev.delta_g) - k * m.unit_g) / (sd * math.sqrt(k))
            if z <= cfg.put_back_weight_sure_z:
                fits.append((z, m, k))
        if not fits or len({m.sku for _, m, _ in fits}) > 1:
            return None
        z, m, k = min(fits, key=lambda f: (f[0], f[1].t))
        m.count -= k
        log.info("event %s: %d x %s taken from lane %s where it was put back at %.3f (%.1f spreads off; the "
                 "shelf read %s)", ev.event_id, k, m.sku, m.lane, m.t, z, top_sku)
        return m.sku, k, m.p

    # ------------------------------------------------------------------------------------------ checkout
    def _devices_down(self, t0: float, t1: float) -> list[str]:
        down = []
        for dev, spans in sorted(self.offline.items()):
            if any(a < t1 and b > t0 for a, b in spans):
                down.append(dev)
        stale = self.cfg.checkout.stale_device_s
        for cam in sorted(c.id for c in self.store.cameras):
            seen = self.camera_seen.get(cam)
            if seen is not None and seen < t1 - stale and cam not in down:
                down.append(cam)
        return down

    def _settle_visit(self, v: Visit, now: float, shelves_behind: list[str] | None = None) -> VisitSettled:
        v.settled = True
        cart = self.carts[v.id]
        lines = tuple(cart.receipt_lines(self.store))
        total = sum(ln["amount"] for ln in lines)
        reasons = [ln.reason for ln in cart.lines if ln.uncertain] + list(cart.issues)
        down = self._devices_down(v.entered_at, v.exited_at or now)
        if down:
            reasons.append("offline during the visit: " + ", ".join(down))
        if shelves_behind:  # events of the visit's last moments may be missing from the cart
            exited = v.exited_at or now
            reasons.append("shelf gateway silent past the exit: " + ", ".join(
                f"{dev} (events up to {exited - self.shelf_marks[dev][0]:.1f} s before the exit)"
                for dev in shelves_behind))
        if len(v.shoppers) < v.party_size:
            reasons.append(f"party of {v.party_size} but {len(v.shoppers)} shopper(s) tracked")
        gone = [s for s in v.shoppers if getattr(self.floor.shopper(s), "vanished", False)]  # older snapshots lack it
        if gone:
            reasons.append("lost in the store and not seen leaving: " + ", ".join(gone))
        decision = "hold" if reasons else ("charge" if total > 0 else "no_charge")
        log.info("visit %s settled: %s, total %d", v.id, decision, total)
        return VisitSettled(v.id, v.account, decision, lines, total, tuple(reasons), v.entered_at,
                            v.exited_at or now, now, tuple(v.shoppers))

    def _cart_effect(self, v: Visit, state: str) -> CartChanged:
        cart = self.carts[v.id]
        return CartChanged(v.id, v.account, tuple(cart.lines), cart.total, state)

    # ------------------------------------------------------------------------------------------ snapshot
    def snapshot(self) -> bytes:
        # config, derived, a replay's record
        skip = ("store", "cfg", "lane_boxes", "unit_weights", "shelf_extent", "forgotten", "evidence_log")
        state = {k: val for k, val in self.__dict__.items() if k not in skip}
        return pickle.dumps(state, protocol=5)

    @classmethod
    def restore(cls, store: Store, config: FusionConfig | None, blob: bytes) -> FusionEngine:
        eng = cls(store, config)
        state = pickle.loads(blob)  # our own snapshot from our own database
        eng.__dict__.update(state)
        eng.floor.cfg = eng.cfg.floor
        return eng


def _step(ev: ShelfEventMsg) -> float:
    """When the event's weight stepped (its start where the gateway gave no step)."""
    return ev.t_step if ev.t_step is not None else ev.t_start


def _extent(shelf: Shelf) -> tuple[np.ndarray, np.ndarray]:
    """The floor rectangle (lo, hi) around a shelf's lanes (their boxes turned by their yaw)."""
    xy = np.vstack([ln.box.corners()[:, :2] for ln in shelf.lanes])
    return xy.min(axis=0), xy.max(axis=0)
