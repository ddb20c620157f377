"""The simulated store's world: shoppers that enter through the gate, walk collision-free between shelves,
reach into lanes, pick, put back, misplace, hand items to each other and leave through the exit.

The world runs on a fixed clock (``DT`` seconds a step, time measured from the session start) and executes
each shopper's :class:`Plan` (built by :mod:`sim.director`).  It records everything the rest of the simulator
needs: where each shopper is at every step (:class:`Track`), every arm motion (:class:`ArmMotion`, from which
the skeletons are posed at any instant), every hand contact with a lane (:class:`Touch`, the load cells' input),
the true shelf events, hand-offs and gate scans.  Nothing here reads a clock or an unseeded random source.

Walking: A* on the free floor (:mod:`sim.floor`) with line-of-sight smoothing, then per step a sampled
velocity that keeps to the path, never brings two bodies closer than the sum of their radii (checked against
the others' latest positions, so the invariant holds after every update) and penalises short times to
collision with everyone in view (reciprocal: both sides steer).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from calibration.store import Store
from sim.body import Appearance, Body
from sim.floor import PLAN_RADIUS, FloorMap, point_in_box
from sim.pose import STAND, Posture, arm_length, ease, skeleton, solve_reach

log = logging.getLogger(__name__)

DT = 0.1


def spot_distance(radius: float) -> float:
    """How far in front of a lane's face a shopper of ``radius`` stands."""
    return max(0.38, radius + 0.12)
CLOSING_S = 22.0  # this long before the end every shopper heads for the exit
_INTERRUPTIBLE = ("at_stop", "await_spot", "walking_stop", "await_misplaced", "loitering", "next_stop")
LANE_GAP_S = 2.5  # a lane is left alone this long after a hand left it (so it can settle)


# ------------------------------------------------------------------------------------------------ people
@dataclass
class ShopperSpec:
    id: str
    visit: str
    account: str
    leader: bool
    height: float
    radius: float  # body radius on the floor (collision)
    speed: float  # preferred walking speed, m/s
    hand: str  # preferred hand, "l" or "r"
    appearance: Appearance

    @property
    def scale(self) -> float:
        return self.height / 1.75


@dataclass
class VisitSpec:
    id: str
    account: str
    members: list[str]
    gate: str
    arrival: float  # when the party reaches the gate (s from the session start)


@dataclass
class Booking:
    """A standing spot promised to a shopper over a time window (others keep off it); ``dynamic`` ones
    are made by the world for a shopper waiting for its spot."""

    shopper: str
    xy: np.ndarray
    radius: float
    t_from: float
    t_to: float
    dynamic: bool = False


# ------------------------------------------------------------------------------------------------ plans
@dataclass
class Action:
    """One arm motion at a stop.

    kind: ``pick`` (qty items of the lane's own product), ``pick_foreign`` (a misplaced item lying in the lane),
    ``put_back`` (the items picked under ``ref`` back to their own lane), ``misplace`` (the items under ``ref``
    onto ``lane``, which is not theirs), ``press`` (a hand on the goods, nothing taken), ``give``/``receive``
    (a hand-off with ``partner``, matched by ``handoff``)."""

    kind: str
    lane: str | None = None
    qty: int = 1
    side: str | None = None
    ref: str | None = None
    partner: str | None = None
    handoff: str | None = None
    not_before: float | None = None
    pause: float = 0.8
    tag: str = ""  # scripted-case label, kept in the truth
    sync: str | None = None  # rendezvous key: wait until every party of it is ready, then start together
    sync_parties: int = 2
    sync_delay: float = 0.0  # start this long after the rendezvous


@dataclass
class Stop:
    lane: str  # the lane the shopper stands in front of
    browse: float = 2.0
    offset: float | None = None  # fixed lateral offset of the standing spot (scripted), else chosen
    pair: str | None = None  # neighbour-pair key: the lane pair is chosen when the first of the two comes
    role: int = 0  # 0: the left lane of the pair, 1: the right one
    not_before: float | None = None
    actions: list[Action] = field(default_factory=list)
    linger: bool = False


@dataclass
class Plan:
    shopper: str
    arrival: float
    stops: list[Stop]
    exit_not_before: float | None = None
    exit: str = ""
    exit_at: float | None = None  # leave at this time (the exit crowd): remaining unscripted stops dropped


# ------------------------------------------------------------------------------------------------ records
@dataclass
class Item:
    id: int
    sku: str
    weight_g: float
    home_lane: str


@dataclass
class Touch:
    """A hand on a lane: the load cells' input.  ``delta_g`` is the net change (0 for a press)."""

    lane: str
    kind: str  # "pick" | "put" | "press"
    t_contact: float
    t_change: float
    t_release: float
    delta_g: float
    shopper: str
    event: int | None = None  # index into World.events when it is a true shelf event


@dataclass
class ShelfEventRec:
    id: int
    shopper: str
    visit: str
    lane: str
    sku: str
    qty: int
    grams: float  # signed
    kind: str  # pick | put_back | misplace | pick_of_misplaced
    items: list[int]
    hand: str
    t_contact: float
    t_change: float
    t_release: float
    wrist: list[float]  # wrist position at t_change
    tag: str = ""


@dataclass
class HandoffRec:
    t: float
    giver: str
    receiver: str
    items: list[int]
    skus: list[str]


@dataclass
class ArmMotion:
    """Wrist keyframes ``(t, point or None for the rest position)`` and a whole-body posture blended in over
    the motion; ``holding`` is the SKU in that hand between ``hold_from`` and ``hold_to``."""

    shopper: str
    side: str
    keys: list[tuple[float, np.ndarray | None]]
    posture: Posture = STAND
    holding: str | None = None
    hold_from: float = 0.0
    hold_to: float = 0.0

    @property
    def t0(self) -> float:
        return self.keys[0][0]

    @property
    def t1(self) -> float:
        return self.keys[-1][0]

    def wrist(self, t: float) -> tuple[np.ndarray | None, float]:
        """Target and weight for :func:`sim.pose.skeleton` at ``t``."""
        keys = self.keys
        if t <= keys[0][0] or t >= keys[-1][0]:
            return None, 0.0
        for (ta, pa), (tb, pb) in itertools.pairwise(keys):
            if ta <= t <= tb:
                u = ease((t - ta) / max(tb - ta, 1e-9))
                if pa is None and pb is None:
                    return None, 0.0
                if pa is None:
                    return pb, u
                if pb is None:
                    return pa, 1.0 - u
                return pa + (pb - pa) * u, 1.0
        return None, 0.0

    def envelope(self, t: float) -> float:
        """0..1: how far into the motion's posture the body is at ``t``."""
        if t <= self.t0 or t >= self.t1:
            return 0.0
        ta, tb = self.keys[1][0], self.keys[-2][0]
        if t < ta:
            return ease((t - self.t0) / max(ta - self.t0, 1e-9))
        if t > tb:
            return ease((self.t1 - t) / max(self.t1 - tb, 1e-9))
        return 1.0


@dataclass
class Track:
    """Per-step state: ``xy (steps, shoppers, 2)``, ``heading``, ``phase`` (walk cycle), ``amp`` (walk
    amplitude 0..1) and ``present`` (in the store)."""

    t: np.ndarray
    xy: np.ndarray
    heading: np.ndarray
    phase: np.ndarray
    amp: np.ndarray
    present: np.ndarray


# ------------------------------------------------------------------------------------------------ agent state
@dataclass
class _Agent:
    spec: ShopperSpec
    plan: Plan
    index: int
    present: bool = False
    done: bool = False
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    vel: np.ndarray = field(default_factory=lambda: np.zeros(2))
    heading: float = math.pi / 2
    face: float | None = None
    phase: float = 0.0
    state: str = "outside"
    stop_i: int = -1
    action_i: int = 0
    path: list[np.ndarray] = field(default_factory=list)
    goal: np.ndarray | None = None
    wait_until: float = 0.0
    busy_until: float = 0.0
    progress_t: float = 0.0
    progress_d: float = 1e9
    replans: int = 0
    spot: np.ndarray | None = None
    spot_lane: str | None = None
    basket: list[int] = field(default_factory=list)
    refs: dict[str, list[int]] = field(default_factory=dict)
    entry_t: float | None = None
    exit_t: float | None = None
    scan_t: float | None = None
    stop_arrived: float = 0.0
    skipped: int = 0
    yield_req: bool = False


class World:
    """Executes plans over ``duration`` seconds; results are in the public attributes after :meth:`run`."""

    def __init__(self, store: Store, floor: FloorMap, shoppers: list[ShopperSpec], visits: list[VisitSpec],
                 plans: list[Plan], inventory: dict[str, list[Item]], duration: float,
                 rng: np.random.Generator, bookings: list | None = None,
                 pair_lanes: list[tuple[str, str]] | None = None):
        self.store = store
        self.floor = floor
        self.shoppers = shoppers
        self.visits = {v.id: v for v in visits}
        self.duration = duration
        self.rng = rng
        self.items: dict[int, Item] = {it.id: it for items in inventory.values() for it in items}
        self.initial = {lane: [it.id for it in items] for lane, items in inventory.items()}
        self.inventory = {lane: list(ids) for lane, ids in self.initial.items()}  # item ids, front last
        by_id = {p.shopper: p for p in plans}
        self.agents = [_Agent(spec, by_id[spec.id], k) for k, spec in enumerate(shoppers)]
        self.by_id = {a.spec.id: a for a in self.agents}
        self.motions: list[ArmMotion] = []
        self.touches: list[Touch] = []
        self.events: list[ShelfEventRec] = []
        self.handoffs: list[HandoffRec] = []
        self.scans: list[tuple[float, str, str, str, int]] = []  # t, gate, visit, account, party size
        self.lane_free_at: dict[str, float] = {}
        self.reservations: dict[str, tuple[np.ndarray, float]] = {}  # shopper -> (spot, radius)
        self.pending_handoffs: dict[str, dict[str, float]] = {}
        self.rendezvous: dict[str, dict] = {}
        self.misplaced_lane: dict[str, str] = {}  # scripted misplacement tag -> the lane it went to
        self.pairs: dict[str, tuple[str, str]] = {}  # neighbour-pair key -> the lanes chosen
        self.pair_lanes: list[tuple[str, str]] = list(pair_lanes or [])
        self.bookings: list[Booking] = list(bookings or [])
        self.notes: list[str] = []
        n = round(duration / DT) + 1
        k = len(shoppers)
        self.track = Track(np.arange(n) * DT, np.zeros((n, k, 2)), np.zeros((n, k)), np.zeros((n, k)),
                           np.zeros((n, k)), np.zeros((n, k), bool))

    # ---------------------------------------------------------------------------------------- main loop
    def run(self) -> World:
        for step, t in enumerate(self.track.t):
            for a in self.agents:
                self._think(a, float(t))
            for a in self.agents:
                if a.present:
                    self._move(a, float(t))
            self._record(step)
        for a in self.agents:
            if a.present:
                self.notes.append(f"{self.duration:.1f}s {a.spec.id} still in the store at the end")
        return self

    def _record(self, step: int) -> None:
        tr = self.track
        for a in self.agents:
            tr.present[step, a.index] = a.present
            tr.xy[step, a.index] = a.pos
            tr.heading[step, a.index] = a.heading
            tr.phase[step, a.index] = a.phase
            tr.amp[step, a.index] = min(float(np.linalg.norm(a.vel)) / 1.2, 1.0)

    # ---------------------------------------------------------------------------------------- behaviour
    def _think(self, a: _Agent, t: float) -> None:
        if (a.present and t >= self.duration - CLOSING_S and a.state in _INTERRUPTIBLE
                and a.plan.exit_not_before != -1.0):
            # closing time: whatever is left of the plan is dropped, everyone heads for the exit
            self.notes.append(f"{t:.1f}s {a.spec.id} leaves early (closing time)")
            self._release_spot(a)
            a.plan.exit_not_before = -1.0
            a.stop_i = len(a.plan.stops)
            a.state = "to_exit"
        if (a.present and a.plan.exit_at is not None and t >= a.plan.exit_at and a.state in _INTERRUPTIBLE
                and a.stop_i < len(a.plan.stops) and not (
                    0 <= a.stop_i < len(a.plan.stops) and _is_scripted(a.plan.stops[a.stop_i])
                    and a.state != "await_spot")):
            self.notes.append(f"{t:.1f}s {a.spec.id} heads for the exit with the crowd")
            self._release_spot(a)
            a.stop_i = len(a.plan.stops)
            a.state = "to_exit"
        for _ in range(8):  # several zero-time transitions may happen in one step
            before = (a.state, a.stop_i, a.action_i)
            getattr(self, "_s_" + a.state)(a, t)
            if (a.state, a.stop_i, a.action_i) == before:
                return

    def _s_outside(self, a: _Agent, t: float) -> None:
        if a.done or t < a.plan.arrival:
            return
        visit = self.visits[a.spec.visit]
        if not a.spec.leader:
            leader = self.by_id[visit.members[0]]
            if leader.scan_t is None or t < leader.scan_t + 0.4 + 0.6 * visit.members.index(a.spec.id):
                return
        gate = next(g for g in self.store.gates if g.id == visit.gate)
        spawn = (np.asarray(gate.region.min) + np.asarray(gate.region.max)) / 2
        for b in self.agents:
            if b.present and np.linalg.norm(b.pos - spawn) < a.spec.radius + b.spec.radius + 0.1:
                return
        a.present = True
        a.pos = spawn.copy()
        a.heading = math.atan2(*(self._into_store(spawn)[::-1]))
        a.entry_t = t
        if a.spec.leader:
            a.state = "scanning"
            a.wait_until = t + 1.2
        else:
            a.state = "next_stop"

    def _into_store(self, xy: np.ndarray) -> np.ndarray:
        sx, sy = self.store.store.size
        d = np.array([sx / 2, sy / 2]) - xy
        return d / max(np.linalg.norm(d), 1e-9)

    def _s_scanning(self, a: _Agent, t: float) -> None:
        if t < a.wait_until:
            return
        visit = self.visits[a.spec.visit]
        a.scan_t = t
        self.scans.append((t, visit.gate, visit.id, visit.account, len(visit.members)))
        a.state = "next_stop"

    def _s_next_stop(self, a: _Agent, t: float) -> None:
        self._release_spot(a)
        a.stop_i += 1
        a.action_i = 0
        if a.stop_i >= len(a.plan.stops):
            a.state = "to_exit"
            return
        stop = a.plan.stops[a.stop_i]
        if stop.pair is not None:
            self._assign_pair(a, stop, t)
        if stop.actions and all(act.kind == "put_back" for act in stop.actions):
            ids = [i for i in a.refs.get(stop.actions[0].ref or "", []) if i in a.basket]
            if ids:
                stop.lane = self.items[ids[0]].home_lane
        chase = next((act for act in stop.actions if act.kind == "pick_foreign" and act.ref), None)
        if chase is not None:  # the lane is wherever that misplaced item ended up
            a.state = "await_misplaced"
            a.wait_until = t + 60.0
            front = self.floor.lane_fronts[stop.lane]
            self._walk_to(a, self._aisle_point(front.front + front.normal * 1.2), t)
            return
        self._start_stop(a, stop, t)

    def _assign_pair(self, a: _Agent, stop: Stop, t: float) -> None:
        """Neighbour pairs: the first shopper to come picks two adjacent lanes whose spots are free (the
        planned ones if they are) and books both; the second goes where the first chose."""
        if stop.pair not in self.pairs:
            planned = (stop.lane, self._pair_partner_lane(stop)) if stop.role == 0 else (
                self._pair_partner_lane(stop), stop.lane)
            partner = self.by_id.get(self._pair_partner(stop, a) or "")
            r_other = partner.spec.radius if partner else a.spec.radius
            radii = (a.spec.radius, r_other) if stop.role == 0 else (r_other, a.spec.radius)
            order = [planned] + sorted(
                (p for p in self.pair_lanes if p != planned),
                key=lambda p: float(np.linalg.norm(self.floor.lane_fronts[p[0]].front - a.pos)))
            chosen = planned
            for la, lb in order:
                spots = (self.floor.spot(la, -0.2, spot_distance(radii[0])),
                         self.floor.spot(lb, 0.2, spot_distance(radii[1])))
                if all(self._spot_free(None, xy, r, t, 40.0, ignore=(a.spec.id, partner.spec.id if partner else ""))
                       for xy, r in zip(spots, radii, strict=True)):
                    chosen = (la, lb)
                    break
            self.pairs[stop.pair] = chosen
            ids = (a.spec.id, partner.spec.id if partner else "") if stop.role == 0 else (
                partner.spec.id if partner else "", a.spec.id)
            for sid, ln, off, r in zip(ids, chosen, (-0.2, 0.2), radii, strict=True):
                if sid:
                    self.bookings.append(Booking(sid, self.floor.spot(ln, off, spot_distance(r)), r, t, t + 60.0))
            if chosen != planned:
                self.notes.append(f"{t:.1f}s {stop.pair} moved to {chosen[0]} / {chosen[1]}")
        lane = self.pairs[stop.pair][stop.role]
        old = stop.lane
        stop.lane = lane
        for act in stop.actions:
            if act.lane in (old, None):
                act.lane = lane

    def _pair_partner(self, stop: Stop, a: _Agent) -> str | None:
        for b in self.agents:
            if b is not a and any(s.pair == stop.pair for s in b.plan.stops):
                return b.spec.id
        return None

    def _pair_partner_lane(self, stop: Stop) -> str:
        for b in self.agents:
            for s in b.plan.stops:
                if s.pair == stop.pair and s is not stop:
                    return s.lane
        return stop.lane

    def _spot_free(self, a: _Agent | None, spot: np.ndarray, r: float, t: float, stay: float,
                   ignore: tuple[str, ...] = ()) -> bool:
        me = a.spec.id if a is not None else None
        skip = set(ignore) | ({me} if me else set())
        if self.floor.clearance_at(spot)[0] < r:
            return False
        if any(np.linalg.norm(spot - xy) < r + rb + 0.06
               for sid, (xy, rb) in self.reservations.items() if sid not in skip):
            return False
        if any(bk.shopper not in skip and bk.t_from <= t + stay and bk.t_to >= t
               and np.linalg.norm(spot - bk.xy) < r + bk.radius + 0.06 for bk in self.bookings):
            return False
        return not any(b.present and b.spec.id not in skip and float(np.linalg.norm(b.vel)) < 0.1
                       and np.linalg.norm(spot - b.pos) < r + b.spec.radius + 0.06 for b in self.agents)

    def _s_await_misplaced(self, a: _Agent, t: float) -> None:
        stop = a.plan.stops[a.stop_i]
        act = next(act for act in stop.actions if act.kind == "pick_foreign")
        lane = self.misplaced_lane.get(act.ref or "")
        if lane is not None:
            stop.lane = lane
            act.lane = lane
            self._start_stop(a, stop, t)
        elif t >= a.wait_until:
            self.notes.append(f"{t:.1f}s {a.spec.id}: {act.ref} was never misplaced, nothing to pick")
            a.state = "next_stop"

    def _start_stop(self, a: _Agent, stop: Stop, t: float) -> None:
        spot = self._choose_spot(a, stop, t)
        if spot is None:
            a.state = "await_spot"
            a.wait_until = t + (40.0 if _is_scripted(stop) else 20.0)
            lane_front = self.floor.lane_fronts[stop.lane]
            self._walk_to(a, self._aisle_point(lane_front.front + lane_front.normal * 1.1), t)
            return
        self._go_to_spot(a, spot, stop, t)

    def _aisle_point(self, xy: np.ndarray) -> np.ndarray:
        if self.floor.clearance_at(xy)[0] >= PLAN_RADIUS:
            return xy
        return self.floor.nearest_free(xy)

    def _s_await_spot(self, a: _Agent, t: float) -> None:
        stop = a.plan.stops[a.stop_i]
        if round(t / DT) % 5:  # look again twice a second
            return
        spot = self._choose_spot(a, stop, t)
        if spot is None and _is_scripted(stop):
            # ask shoppers browsing on the spot for no particular reason to move on
            want = self.floor.spot(stop.lane, stop.offset or 0.0, spot_distance(a.spec.radius))
            for b in self.agents:
                if (b is not a and b.present and b.state in ("at_stop", "acting")
                        and np.linalg.norm(b.pos - want) < a.spec.radius + b.spec.radius + 0.3):
                    b.yield_req = True
                    self._book(a, want, t)
        if spot is not None:
            self._go_to_spot(a, spot, stop, t)
        elif t >= a.wait_until:
            if _is_scripted(stop) and self._relocate(a, stop, t):
                return
            a.skipped += 1
            self.notes.append(f"{t:.1f}s {a.spec.id} skipped a stop at {stop.lane}: no free spot")
            self._carry_over(a, stop)
            a.state = "next_stop"

    def _relocate(self, a: _Agent, stop: Stop, t: float) -> bool:
        """Move a scripted stop that does not depend on its lane (a pick to be put back or misplaced later,
        a misplacement) to the nearest lane with a free spot."""
        if stop.offset is not None or any(act.kind not in ("pick", "misplace", "press") for act in stop.actions):
            return False
        carried = {self.items[i].sku for act in stop.actions if act.kind == "misplace"
                   for i in a.refs.get(act.ref or "", []) if i in a.basket}
        fronts = self.floor.lane_fronts
        cands = sorted((ln for ln, lane in self.store.lanes.items() if lane.sku is not None
                        and lane.sku not in carried and ln != stop.lane and any(
                            self.items[i].home_lane == ln for i in self.inventory[ln])),
                       key=lambda ln: float(np.linalg.norm(fronts[ln].front - a.pos)))
        for ln in cands[:40]:
            trial = Stop(ln, stop.browse, None, None, [Action(act.kind, ln, act.qty) for act in stop.actions])
            spot = self._choose_spot(a, trial, t)
            if spot is not None:
                self.notes.append(f"{t:.1f}s {a.spec.id} moved a stop from {stop.lane} to {ln}")
                old = stop.lane
                stop.lane = ln
                for act in stop.actions:
                    if act.lane in (old, None):
                        act.lane = ln
                self._go_to_spot(a, spot, stop, t)
                return True
        return False

    def _carry_over(self, a: _Agent, stop: Stop) -> None:
        """A skipped stop's misplacements happen at the next stop instead (on that stop's lane)."""
        if a.stop_i + 1 >= len(a.plan.stops):
            return
        nxt = a.plan.stops[a.stop_i + 1]
        moved = [Action("misplace", None, qty=act.qty, ref=act.ref, tag=act.tag) for act in stop.actions
                 if act.kind == "misplace" and act.tag and act.tag != "random"]
        nxt.actions[:0] = moved

    def _book(self, a: _Agent, xy: np.ndarray, t: float) -> None:
        """Keep others off the spot ``a`` is waiting for (for the next 10 s)."""
        self.bookings = [bk for bk in self.bookings if not (bk.shopper == a.spec.id and bk.dynamic)]
        self.bookings.append(Booking(a.spec.id, np.asarray(xy, float), a.spec.radius, t, t + 10.0, True))

    def _go_to_spot(self, a: _Agent, spot: np.ndarray, stop: Stop, t: float) -> None:
        a.spot = spot
        a.spot_lane = stop.lane
        self.reservations[a.spec.id] = (spot, a.spec.radius)
        a.face = math.atan2(-self.floor.lane_fronts[stop.lane].normal[1],
                            -self.floor.lane_fronts[stop.lane].normal[0])
        self._walk_to(a, spot, t)
        a.state = "walking_stop"

    def _release_spot(self, a: _Agent) -> None:
        self.reservations.pop(a.spec.id, None)
        a.spot = None

    def _choose_spot(self, a: _Agent, stop: Stop, t: float) -> np.ndarray | None:
        if stop.offset is not None:  # scripted: this side of the lane, as close to the planned spot as possible
            offsets = [stop.offset, stop.offset * 1.5, stop.offset * 2.1]
        else:
            offsets = [0.0, 0.15, -0.15, 0.3, -0.3, 0.42, -0.42]
        r = a.spec.radius
        near = spot_distance(r)
        rows = [near] if stop.offset is not None else [near, near + 0.22]
        lanes = {act.lane or stop.lane for act in stop.actions if act.kind not in ("give", "receive", "put_back")}
        lanes.add(stop.lane)
        stay = stop.browse + 3.0 * len(stop.actions) + 6.0
        for dist in rows:
            for off in offsets:
                spot = self.floor.spot(stop.lane, off, distance=dist)
                if not self._spot_free(a, spot, r, t, stay):
                    continue
                if dist > near and not all(self._reachable(a, spot, stop.lane, ln) for ln in lanes):
                    continue
                return spot
        return None

    def _reachable(self, a: _Agent, spot: np.ndarray, stand_lane: str, lane: str) -> bool:
        """Whether a shopper standing at ``spot`` facing ``stand_lane`` can put a hand into ``lane``."""
        f = self.floor.lane_fronts[stand_lane]
        heading = math.atan2(-f.normal[1], -f.normal[0])
        target = self._reach_target(a, lane, 0.12, 0.0)
        s = a.spec.scale
        for side in ("l", "r"):
            posture = solve_reach(spot[0], spot[1], heading, s, side, target)
            from sim.pose import shoulder_point
            sh = shoulder_point(spot[0], spot[1], heading, s, posture, side)
            if np.linalg.norm(target - sh) <= 0.98 * arm_length(s):
                return True
        return False

    def _reach_target(self, a: _Agent, lane: str, depth: float, lateral: float) -> np.ndarray:
        """Where the wrist goes in ``lane``: the goods at the front, low lanes from above, high lanes at
        the bottom."""
        f = self.floor.lane_fronts[lane]
        z0, z1 = f.z
        z = float(np.clip(1.42 * a.spec.scale - 0.35, z0 + 0.06, min(z1 - 0.05, z0 + 0.22)))
        return np.array([*(f.front - f.normal * min(depth, f.depth * 0.6) + f.along * lateral), z])

    def _detour(self, a: _Agent) -> np.ndarray | None:
        """A free point 0.8-1.6 m away, away from the nearest other shopper (to get out of a standoff)."""
        others = [b for b in self.agents if b is not a and b.present]
        if not others:
            return None
        near = min(others, key=lambda b: float(np.linalg.norm(b.pos - a.pos)))
        away = a.pos - near.pos
        base = math.atan2(away[1], away[0])
        for k in range(24):
            ang = base + float(self.rng.normal(0, 1.0))
            dist = float(self.rng.uniform(0.8, 1.6))
            p = a.pos + dist * np.array([math.cos(ang), math.sin(ang)])
            if self.floor.clearance_at(p)[0] >= PLAN_RADIUS + 0.1 and all(
                    np.linalg.norm(p - b.pos) > a.spec.radius + b.spec.radius + 0.2 for b in others):
                return p
        return None

    def _walk_to(self, a: _Agent, goal: np.ndarray, t: float, avoid_others: bool = False,
                 via: np.ndarray | None = None) -> None:
        if via is not None:
            self._walk_to(a, via, t, avoid_others)
            first = a.path
            try:
                a.path = first + self.floor.plan(via, goal)
            except ValueError:
                a.path = first + [np.asarray(goal, float)]
            a.goal = np.asarray(goal, float)
            return
        extra = None
        if avoid_others:
            extra = np.zeros_like(self.floor.blocked)
            ys, xs = np.mgrid[0:self.floor.ny, 0:self.floor.nx]
            cx, cy = (xs + 0.5) * self.floor.res, (ys + 0.5) * self.floor.res
            for b in self.agents:
                if b is not a and b.present and np.linalg.norm(b.pos - a.pos) > 0.2:
                    extra |= (cx - b.pos[0]) ** 2 + (cy - b.pos[1]) ** 2 < (b.spec.radius + 0.3) ** 2
        try:
            a.path = self.floor.plan(a.pos, goal, extra_blocked=extra)
        except ValueError:
            try:
                a.path = self.floor.plan(a.pos, goal)
            except ValueError:
                a.path = [goal]
        a.goal = np.asarray(goal, float)
        a.progress_t = t
        a.progress_d = float(np.linalg.norm(a.goal - a.pos))

    def _arrived(self, a: _Agent) -> bool:
        return a.goal is not None and np.linalg.norm(a.goal - a.pos) < 0.03 and not a.path

    def _check_stuck(self, a: _Agent, t: float) -> None:
        d = float(np.linalg.norm(a.goal - a.pos))
        if d < a.progress_d - 0.25:
            a.progress_d, a.progress_t = d, t
        elif t - a.progress_t > 3.0:
            a.replans += 1
            goal = a.goal
            if a.replans % 2 == 0:
                detour = self._detour(a)
                self._walk_to(a, goal, t, avoid_others=True, via=detour)
            else:
                self._walk_to(a, goal, t, avoid_others=True)

    def _s_walking_stop(self, a: _Agent, t: float) -> None:
        if not self._arrived(a):
            self._check_stuck(a, t)
            if t - a.progress_t > 20.0 and a.replans > 4:
                a.skipped += 1
                self.notes.append(f"{t:.1f}s {a.spec.id} gave up reaching {a.spot_lane}")
                a.state = "next_stop"
            return
        stop = a.plan.stops[a.stop_i]
        a.state = "at_stop"
        a.stop_arrived = t
        a.wait_until = max(t + stop.browse, stop.not_before or 0.0)

    def _s_at_stop(self, a: _Agent, t: float) -> None:
        stop = a.plan.stops[a.stop_i]
        if a.yield_req:
            a.yield_req = False
            spot = self._choose_spot(a, stop, t)
            if spot is not None and np.linalg.norm(spot - a.pos) > 0.05:
                self.notes.append(f"{t:.1f}s {a.spec.id} stepped aside at {stop.lane}")
                self._go_to_spot(a, spot, stop, t)
                return
            if not _is_scripted(stop):
                self.notes.append(f"{t:.1f}s {a.spec.id} made room at {stop.lane}")
                a.state = "next_stop"
                return
        if t < a.wait_until or not self._facing(a):
            return
        if a.action_i >= len(stop.actions):
            a.state = "next_stop"
            return
        act = stop.actions[a.action_i]
        if act.not_before is not None and t < act.not_before:
            return
        if act.sync and not self._synced(a, act, t):
            return
        if self._start_action(a, act, t):
            a.state = "acting"

    def _synced(self, a: _Agent, act: Action, t: float) -> bool:
        """Rendezvous: True once every party has arrived and this one's start time has come."""
        rv = self.rendezvous.setdefault(act.sync, {"ready": {}, "go": None})
        rv["ready"].setdefault(a.spec.id, t)
        if rv["go"] is None:
            if len(rv["ready"]) >= act.sync_parties:
                rv["go"] = t
            elif t - rv["ready"][a.spec.id] > 60.0:
                self.notes.append(f"{t:.1f}s {a.spec.id}: partner never came to {act.sync}, going alone")
                rv["go"] = t
            else:
                return False
        return t >= rv["go"] + act.sync_delay

    def _facing(self, a: _Agent) -> bool:
        return a.face is None or abs(_wrap(a.face - a.heading)) < 0.05

    def _s_acting(self, a: _Agent, t: float) -> None:
        if t < a.busy_until:
            return
        stop = a.plan.stops[a.stop_i]
        act = stop.actions[a.action_i]
        a.action_i += 1
        a.state = "at_stop"
        a.wait_until = t + act.pause

    def _s_to_exit(self, a: _Agent, t: float) -> None:
        if a.plan.exit_not_before is not None and t < a.plan.exit_not_before - 0.5:
            # early: wander off the shelves to an open spot and wait there (not blocking a shelf)
            p = self._loiter_point(a)
            if p is not None:
                a.face = None
                self._walk_to(a, p, t)
                a.state = "loitering"
            return
        ex = next((e for e in self.store.exits if e.id == a.plan.exit), self.store.exits[0])
        ex = next((e for e in self.store.exits if e.id == a.plan.exit), self.store.exits[0])
        goal = (np.asarray(ex.region.min) + np.asarray(ex.region.max)) / 2
        a.face = None
        self._walk_to(a, goal, t)
        a.state = "exiting"

    def _s_loitering(self, a: _Agent, t: float) -> None:
        if t >= (a.plan.exit_not_before or 0.0):
            a.state = "to_exit"

    def _loiter_point(self, a: _Agent) -> np.ndarray | None:
        """An open floor point 2.5-5 m from the shopper's exit, away from others (to wait for the exit
        time without blocking a shelf)."""
        pts = self.__dict__.get("_open_floor")
        if pts is None:
            pts = self.floor.walkable_points(spacing=0.4, radius=0.6)
            self._open_floor = pts
        ex = next((e for e in self.store.exits if e.id == a.plan.exit), self.store.exits[0])
        centre = (np.asarray(ex.region.min) + np.asarray(ex.region.max)) / 2
        d = np.linalg.norm(pts - centre, axis=1)
        near = pts[(d > 2.5) & (d < 5.0)]
        pts = near if len(near) else pts
        if not len(pts):
            return None
        for _ in range(20):
            p = pts[int(self.rng.integers(len(pts)))]
            if all(not b.present or b is a or np.linalg.norm(b.pos - p) > 1.0 for b in self.agents) and all(
                    np.linalg.norm(xy - p) > 1.0 for xy, _ in self.reservations.values()):
                return p.copy()
        return None

    def _s_exiting(self, a: _Agent, t: float) -> None:
        ex = next((e for e in self.store.exits if e.id == a.plan.exit), self.store.exits[0])
        if ex.region.contains(a.pos)[0] and (self._arrived(a) or np.linalg.norm(a.goal - a.pos) < 0.3):
            a.present = False
            a.done = True
            a.exit_t = t
            a.vel = np.zeros(2)
            a.state = "gone"
            return
        self._check_stuck(a, t)

    def _s_gone(self, a: _Agent, t: float) -> None:
        return

    # ---------------------------------------------------------------------------------------- actions
    def _start_action(self, a: _Agent, act: Action, t: float) -> bool:
        """Begin an arm motion if its preconditions hold; False to try again next step."""
        if act.kind in ("give", "receive"):
            return self._start_handoff(a, act, t)
        lane = act.lane or a.plan.stops[a.stop_i].lane
        if self.lane_free_at.get(lane, 0.0) > t:
            return False
        items: list[Item] = []
        if act.kind == "pick":
            own = [self.items[i] for i in self.inventory[lane] if self.items[i].home_lane == lane]
            if not own:
                self.notes.append(f"{t:.1f}s {a.spec.id}: lane {lane} is empty")
                a.busy_until = t
                return True
            items = own[-act.qty:]
        elif act.kind == "pick_foreign":
            foreign = [self.items[i] for i in self.inventory[lane] if self.items[i].home_lane != lane]
            if not foreign:
                return t > a.stop_arrived + 40.0 and self._skip(a, t, f"no misplaced item in {lane}")
            items = foreign[-1:]
        elif act.kind in ("put_back", "misplace"):
            ids = [i for i in a.refs.get(act.ref or "", []) if i in a.basket]
            if not ids:
                return self._skip(a, t, f"nothing to put back under {act.ref!r}")
            items = [self.items[i] for i in ids[: act.qty]]
            if act.kind == "put_back":
                lane = items[0].home_lane
                items = [it for it in items if it.home_lane == lane]
        side = act.side or self._side_for(a, lane)
        self._reach(a, act, lane, side, items, t)
        return True

    def _skip(self, a: _Agent, t: float, why: str) -> bool:
        self.notes.append(f"{t:.1f}s {a.spec.id}: skipped an action ({why})")
        a.busy_until = t
        return True

    def _side_for(self, a: _Agent, lane: str) -> str:
        f = self.floor.lane_fronts[lane]
        lateral = float((f.front - a.pos) @ f.along)
        if abs(lateral) < 0.08:
            return a.spec.hand
        return "r" if lateral > 0 else "l"

    def _reach(self, a: _Agent, act: Action, lane: str, side: str, items: list[Item], t: float) -> None:
        rng = self.rng
        f = self.floor.lane_fronts[lane]
        s = a.spec.scale
        depth = 0.10 + float(rng.uniform(0, 0.05))
        lateral = float(np.clip(rng.normal(0, 0.03), -f.width / 4, f.width / 4))
        target = self._reach_target(a, lane, depth, lateral)
        z = float(target[2])
        approach = np.array([*(f.front + f.normal * 0.10 + f.along * lateral), z + 0.03])
        posture = solve_reach(a.pos[0], a.pos[1], a.heading, s, side, target)
        ext = float(rng.uniform(0.45, 0.7))
        hold = float(rng.uniform(0.35, 0.7)) if act.kind != "press" else float(rng.uniform(0.5, 1.2))
        ret = float(rng.uniform(0.45, 0.7))
        t_app, t_in = t + 0.7 * ext, t + ext
        t_out = t_in + hold
        t_back, t_end = t_out + 0.3 * ret, t_out + ret
        keys = [(t, None), (t_app, approach), (t_in, target), (t_out, target), (t_back, approach), (t_end, None)]
        t_contact = t_app + 0.5 * (t_in - t_app)
        t_release = t_out + 0.5 * (t_back - t_out)
        sku = items[0].sku if items else None
        if act.kind in ("pick", "pick_foreign"):
            t_change = t_in + 0.6 * hold
            motion = ArmMotion(a.spec.id, side, keys, posture, sku, t_change, t_end)
        elif act.kind in ("put_back", "misplace"):
            t_change = t_in + 0.3 * hold
            motion = ArmMotion(a.spec.id, side, keys, posture, sku, t, t_change)
        else:
            t_change = t_in + 0.5 * hold
            motion = ArmMotion(a.spec.id, side, keys, posture)
        self.motions.append(motion)
        a.busy_until = t_end
        self.lane_free_at[lane] = t_release + LANE_GAP_S
        grams = sum(it.weight_g for it in items)
        if act.kind == "press":
            self.touches.append(Touch(lane, "press", t_contact, t_change, t_release, 0.0, a.spec.id))
            return
        wrist = self.wrist_at(a, motion, t_change)
        if act.kind in ("pick", "pick_foreign"):
            for it in items:
                self.inventory[lane].remove(it.id)
                a.basket.append(it.id)
            if act.ref:
                a.refs.setdefault(act.ref, []).extend(it.id for it in items)
            kind = "pick" if all(it.home_lane == lane for it in items) else "pick_of_misplaced"
            sign = -1.0
        else:
            for it in items:
                a.basket.remove(it.id)
                self.inventory[lane].append(it.id)
            kind = "put_back" if all(it.home_lane == lane for it in items) else "misplace"
            sign = 1.0
            if kind == "misplace" and act.tag:
                self.misplaced_lane[act.tag] = lane
            for holder in self.agents:  # the items are on the shelf again, for everyone
                for ids in holder.refs.values():
                    for it in items:
                        if it.id in ids:
                            ids.remove(it.id)
        ev = ShelfEventRec(len(self.events), a.spec.id, a.spec.visit, lane, sku, len(items), sign * grams, kind,
                           [it.id for it in items], side, t_contact, t_change, t_release,
                           [float(v) for v in wrist], act.tag)
        self.events.append(ev)
        self.touches.append(Touch(lane, "pick" if sign < 0 else "put", t_contact, t_change, t_release,
                                  sign * grams, a.spec.id, ev.id))

    def _start_handoff(self, a: _Agent, act: Action, t: float) -> bool:
        """Both sides wait for each other; the later one starts the motion for both."""
        key = act.handoff or ""
        ready = self.pending_handoffs.setdefault(key, {})
        ready[a.spec.id] = t
        partner = self.by_id.get(act.partner or "")
        if partner is None or not partner.present:
            return self._skip(a, t, f"hand-off partner {act.partner} is not in the store")
        if act.partner not in ready:
            if t - ready[a.spec.id] > 15.0:
                return self._skip(a, t, f"hand-off partner {act.partner} never came")
            return False
        if ready.get("started"):
            return True
        giver, receiver = (a, partner) if act.kind == "give" else (partner, a)
        ids = [i for i in giver.refs.get(act.ref or "", []) if i in giver.basket]
        if not ids:
            ids = giver.basket[-1:]
        if not ids or np.linalg.norm(giver.pos - receiver.pos) > 1.6:
            ready["started"] = 1.0
            for who in (giver, receiver):
                who.busy_until = t
            return self._skip(a, t, "no item to hand over or partner too far")
        ready["started"] = 1.0
        items = [self.items[i] for i in ids[:1]]
        ext, hold, ret = 0.6, 0.35, 0.55
        t_meet = t + ext
        t_swap = t_meet + hold / 2
        mid_xy = (giver.pos + receiver.pos) / 2
        z = 1.0 * min(giver.spec.scale, receiver.spec.scale)
        mid = np.array([mid_xy[0], mid_xy[1], z])
        for who, role in ((giver, "give"), (receiver, "receive")):
            d = mid_xy - who.pos
            lateral = math.cos(who.heading) * float(d[1]) - math.sin(who.heading) * float(d[0])
            side = "l" if lateral > 0 else "r"
            off = np.array([*(-d / max(np.linalg.norm(d), 1e-9) * 0.04), 0.0])  # the hands meet, not overlap
            point = mid + off
            keys = [(t, None), (t_meet, point), (t_meet + hold, point), (t_meet + hold + ret, None)]
            if role == "give":
                m = ArmMotion(who.spec.id, side, keys, STAND, items[0].sku, t, t_swap)
            else:
                m = ArmMotion(who.spec.id, side, keys, STAND, items[0].sku, t_swap, t_meet + hold + ret)
            self.motions.append(m)
            who.busy_until = t_meet + hold + ret
        for it in items:
            giver.basket.remove(it.id)
            receiver.basket.append(it.id)
            for ids_ in giver.refs.values():
                if it.id in ids_:
                    ids_.remove(it.id)
            receiver.refs.setdefault(act.ref or "handed", []).append(it.id)
        self.handoffs.append(HandoffRec(t_swap, giver.spec.id, receiver.spec.id, [it.id for it in items],
                                        [it.sku for it in items]))
        if partner.state == "at_stop":  # the partner is waiting at this very action: move it along
            partner.state = "acting"
        return True

    # ---------------------------------------------------------------------------------------- motion
    def _move(self, a: _Agent, t: float) -> None:
        walking = a.state in ("walking_stop", "await_spot", "await_misplaced", "loitering", "exiting") and (
            a.goal is not None) and (
            a.path or np.linalg.norm(a.goal - a.pos) >= 0.03)
        if walking:
            v = self._choose_velocity(a)
        else:
            v = np.zeros(2)
        a.vel = v
        a.pos = a.pos + v * DT
        speed = float(np.linalg.norm(v))
        a.phase = (a.phase + 2 * math.pi * speed * DT / (1.3 * a.spec.scale)) % (2 * math.pi)
        if speed > 0.15:
            want = math.atan2(v[1], v[0])
        elif a.face is not None and not walking:
            want = a.face
        else:
            want = a.heading
        turn = _wrap(want - a.heading)
        a.heading = _wrap(a.heading + float(np.clip(turn, -4.0 * DT, 4.0 * DT)))
        if a.path and np.linalg.norm(a.path[0] - a.pos) < (0.03 if len(a.path) == 1 else 0.3):
            if len(a.path) == 1:
                a.pos = a.path[0].copy() if self._free_for(a, a.path[0]) else a.pos
            a.path.pop(0)

    def _free_for(self, a: _Agent, p: np.ndarray) -> bool:
        return all(b is a or not b.present or np.linalg.norm(p - b.pos) >= a.spec.radius + b.spec.radius + 0.02
                   for b in self.agents)

    def _choose_velocity(self, a: _Agent) -> np.ndarray:
        target = a.path[0] if a.path else a.goal
        d = target - a.pos
        dist = float(np.hypot(d[0], d[1]))
        speed = a.spec.speed
        if len(a.path) <= 1:
            speed = min(speed, dist / 0.6 + 0.05, dist / DT)
        pref = d / max(dist, 1e-9) * speed
        # personal space matters while walking; on the last metre to a spot only bodies touching does
        final = len(a.path) <= 1 and dist < 0.8
        margin, weight = (0.03, 0.3) if final else (0.15, 1.2)
        cands = np.concatenate([(_CANDIDATE_ROT @ pref) * f for f in (1.0, 0.6, 0.3)] + [np.zeros((1, 2))])
        new = a.pos[None] + cands * DT
        clear = self.floor.clearance_at(np.concatenate([new, a.pos[None]]))
        ok = clear[:-1] >= min(a.spec.radius, float(clear[-1]) - 1e-3)
        cost = np.sum((cands - pref[None]) ** 2, axis=1)
        # standing still is not free while walking: a sidestep beats waiting forever face to face
        cost += 0.9 * speed * speed * (1.0 - np.hypot(cands[:, 0], cands[:, 1]) / max(speed, 1e-9))
        others = [b for b in self.agents if b is not a and b.present]
        if others:
            pos = np.array([b.pos for b in others])
            vel = np.array([b.vel for b in others])
            rad = np.array([b.spec.radius for b in others]) + a.spec.radius
            rel = pos - a.pos[None]
            gap_now = np.hypot(rel[:, 0], rel[:, 1])
            near = gap_now < 4.0
            if near.any():
                pos, vel, rad, rel, gap_now = pos[near], vel[near], rad[near], rel[near], gap_now[near]
                gap = np.linalg.norm(new[:, None, :] - pos[None], axis=2)  # (cands, others)
                ok &= np.all((gap >= rad[None] + 0.02) | (gap >= gap_now[None]), axis=1)
                ttc = _time_to_collision(rel, cands[:, None, :] - vel[None], rad + margin)
                cost += np.sum(np.where(ttc < 2.5, weight / np.maximum(ttc, 0.1), 0.0), axis=1)
        cost = np.where(ok, cost, np.inf)
        k = int(np.argmin(cost))
        return cands[k] if np.isfinite(cost[k]) else np.zeros(2)

    # ---------------------------------------------------------------------------------------- bodies
    def state_at(self, k: int, t: float) -> tuple[bool, float, float, float, float, float]:
        """Shopper ``k``'s (present, x, y, heading, phase, amp) at time ``t`` (linear between steps)."""
        tr = self.track
        i = int(np.clip(math.floor(t / DT), 0, len(tr.t) - 1))
        j = min(i + 1, len(tr.t) - 1)
        u = float(np.clip(t / DT - i, 0.0, 1.0))
        if not tr.present[i, k]:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0
        if not tr.present[j, k]:
            j, u = i, 0.0
        xy = tr.xy[i, k] * (1 - u) + tr.xy[j, k] * u
        h = tr.heading[i, k] + _wrap(tr.heading[j, k] - tr.heading[i, k]) * u
        ph = tr.phase[i, k] + _wrap(tr.phase[j, k] - tr.phase[i, k]) * u
        amp = tr.amp[i, k] * (1 - u) + tr.amp[j, k] * u
        return True, float(xy[0]), float(xy[1]), float(h), float(ph), float(amp)

    def motions_of(self, shopper: str) -> list[ArmMotion]:
        cache = self.__dict__.setdefault("_motion_index", {})
        if not cache:
            for m in self.motions:
                cache.setdefault(m.shopper, []).append(m)
        return cache.get(shopper, [])

    def body_at(self, k: int, t: float) -> Body | None:
        """Shopper ``k``'s skeleton at ``t`` (None when not in the store)."""
        present, x, y, h, ph, amp = self.state_at(k, t)
        if not present:
            return None
        spec = self.shoppers[k]
        wrists: dict[str, tuple[np.ndarray, float]] = {}
        posture = STAND
        holding = None
        best = 0.0
        for m in self.motions_of(spec.id):
            if m.t0 < t < m.t1:
                wrists[m.side] = m.wrist(t)
                env = m.envelope(t)
                if env > best:
                    best = env
                    posture = m.posture.scaled(env)
            if m.holding and m.hold_from <= t < m.hold_to:
                holding = m.holding
        joints = skeleton(x, y, h, spec.scale, posture, ph, amp, wrists)
        return Body(spec.id, joints, spec.appearance, holding)

    def wrist_at(self, a: _Agent, motion: ArmMotion, t: float) -> np.ndarray:
        """Where the motion's wrist is at ``t`` for a shopper standing still (used while acting)."""
        s = a.spec.scale
        target, w = motion.wrist(t)
        joints = skeleton(a.pos[0], a.pos[1], a.heading, s, motion.posture.scaled(motion.envelope(t)), 0.0, 0.0,
                          {motion.side: (target, w)})
        from sim.body import J
        return joints[J[motion.side + "wrist"]]

    def bodies_at(self, t: float) -> list[Body]:
        out = []
        for k in range(len(self.shoppers)):
            b = self.body_at(k, t)
            if b is not None:
                out.append(b)
        return out

    # ---------------------------------------------------------------------------------------- checks
    def wrist_in_lane(self, ev: ShelfEventRec) -> bool:
        return bool(point_in_box(self.store.lanes[ev.lane].box, np.asarray(ev.wrist))[0])


_ANGLES = np.radians([0, 20, -20, 40, -40, 65, -65, 90, -90, 120, -120])
_CANDIDATE_ROT = np.stack([np.stack([np.cos(_ANGLES), -np.sin(_ANGLES)], axis=1),
                           np.stack([np.sin(_ANGLES), np.cos(_ANGLES)], axis=1)], axis=1)  # (n, 2, 2)


def _time_to_collision(p: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Times until discs come within ``r (m,)``: relative positions ``p (m, 2)`` of the others, relative
    velocities ``v (n, m, 2)`` of this one; ``inf`` if never, 0 if already.  Shape ``(n, m)``."""
    a = np.sum(v * v, axis=2)
    b = -2 * np.sum(v * p[None], axis=2)
    c = np.sum(p * p, axis=1) - r * r
    disc = b * b - 4 * a * c[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    hit = (disc > 0) & (a > 1e-12) & (t > 0)
    return np.where(c[None] <= 0, 0.0, np.where(hit, t, np.inf))


def _is_scripted(stop: Stop) -> bool:
    return stop.offset is not None or stop.not_before is not None or any(
        act.tag and act.tag != "random" for act in stop.actions)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


__all__ = [
    "DT",
    "Action",
    "ArmMotion",
    "HandoffRec",
    "Item",
    "Plan",
    "ShelfEventRec",
    "ShopperSpec",
    "Stop",
    "Touch",
    "Track",
    "VisitSpec",
    "World",
    "arm_length",
]
