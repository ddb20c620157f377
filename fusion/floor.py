"""Floor tracking across cameras: each camera's tracks become global shoppers in the store frame.

``FloorTracker.update(camera, ts, tracks)`` takes one camera frame's tracks (floor position and covariance,
wrist rays) and returns the shopper id each track was given.  Every shopper is a constant-velocity Kalman
filter on the floor; a camera's tracks are matched to shoppers by Mahalanobis distance with the published
covariances (one-to-one within a camera frame, so two people side by side are never merged), preferring the
shopper a (camera, track id) was linked to before (hand-off between cameras keeps one id).  Shoppers appear
only near an entry gate; a track elsewhere first tries to recover a lost shopper (one not seen for a while)
within a radius that grows with the time lost, and only then becomes an unknown shopper.  A shopper whose
filtered position enters an exit region, or who is lost next to one, has left.

This runs for every camera frame of every camera (hundreds per second in a store), on a handful of tracks
against a few dozen shoppers, so the filter is written out in plain floats (a symmetric 4x4 covariance as 10
numbers): at these sizes that is several times faster than numpy, whose per-call overhead dominates.  Pairs
farther apart than ``FloorConfig.max_gate_m`` are never scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from calibration.store import Store
from fusion.config import FloorConfig

log = logging.getLogger(__name__)

ACTIVE, LOST, LEFT = 0, 1, 2
_BIG = 1e9


@dataclass
class TrackObs:
    """One camera track in one frame, in the form the floor tracker needs."""

    track_id: int
    floor: tuple[float, float]
    cov: tuple[float, float, float]  # xx, xy, yy
    wrists: list[tuple[int, Sequence[float], Sequence[float], float]] = field(default_factory=list)
    # (0 = left / 1 = right, ray origin (3,), ray dir (3,), confidence); arrays or tuples of floats


@dataclass(eq=False)
class ShopperInfo:
    """A shopper on the floor: identity, history, and the Kalman state (x, y, vx, vy; covariance entries
    ``pij`` of the symmetric 4x4) at time ``t``."""

    id: str
    created_t: float
    origin: str  # "gate" or "unknown"
    visit: str | None = None
    exited_t: float | None = None
    # positions (t, x, y) and wrist observations (t, camera, side, ox, oy, oz, dx, dy, dz, conf)
    path: list[tuple[float, float, float]] = field(default_factory=list)
    wrists: list[tuple] = field(default_factory=list)
    cameras: set[str] = field(default_factory=set)
    state: int = ACTIVE
    t: float = 0.0
    seen: float = 0.0
    x: float = 0.0
    y: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    p00: float = 0.0
    p01: float = 0.0
    p02: float = 0.0
    p03: float = 0.0
    p11: float = 0.0
    p12: float = 0.0
    p13: float = 0.0
    p22: float = 1.0
    p23: float = 0.0
    p33: float = 1.0

    @property
    def xy(self) -> np.ndarray:
        return np.array([self.x, self.y])


def _pos_cov(s: ShopperInfo, dt: float, q: float) -> tuple[float, float, float, float, float]:
    """Predicted position and position covariance (x, y, pxx, pxy, pyy) after ``dt`` seconds."""
    dt2 = dt * dt
    return (s.x + s.vx * dt, s.y + s.vy * dt,
            s.p00 + 2 * dt * s.p02 + dt2 * s.p22 + q * dt2 * dt / 3,
            s.p01 + dt * (s.p03 + s.p12) + dt2 * s.p23,
            s.p11 + 2 * dt * s.p13 + dt2 * s.p33 + q * dt2 * dt / 3)


def _predict(s: ShopperInfo, ts: float, q: float) -> None:
    """Constant velocity with continuous white-noise acceleration ``q`` (per axis), in place."""
    dt = ts - s.t
    if dt <= 0:
        return
    dt2 = dt * dt
    q3, q2, q1 = q * dt2 * dt / 3, q * dt2 / 2, q * dt
    s.x += s.vx * dt
    s.y += s.vy * dt
    p02, p03, p12, p13, p22, p23, p33 = s.p02, s.p03, s.p12, s.p13, s.p22, s.p23, s.p33
    s.p00 += 2 * dt * p02 + dt2 * p22 + q3
    s.p01 += dt * (p03 + p12) + dt2 * p23
    s.p02 = p02 + dt * p22 + q2
    s.p03 = p03 + dt * p23
    s.p11 += 2 * dt * p13 + dt2 * p33 + q3
    s.p12 = p12 + dt * p23
    s.p13 = p13 + dt * p33 + q2
    s.p22 = p22 + q1
    s.p33 = p33 + q1
    s.t = ts


def _update(s: ShopperInfo, zx: float, zy: float, r00: float, r01: float, r11: float) -> None:
    """Kalman update with a floor position measurement, in place (``K = P[:, :2] S^-1``,
    ``P -= K P[:2, :]``, written out)."""
    p00, p01, p02, p03, p11, p12, p13 = s.p00, s.p01, s.p02, s.p03, s.p11, s.p12, s.p13
    a, b, c = p00 + r00, p01 + r01, p11 + r11
    det = a * c - b * b
    i00, i01, i11 = c / det, -b / det, a / det
    k00, k01 = p00 * i00 + p01 * i01, p00 * i01 + p01 * i11
    k10, k11 = p01 * i00 + p11 * i01, p01 * i01 + p11 * i11
    k20, k21 = p02 * i00 + p12 * i01, p02 * i01 + p12 * i11
    k30, k31 = p03 * i00 + p13 * i01, p03 * i01 + p13 * i11
    ex, ey = zx - s.x, zy - s.y
    s.x += k00 * ex + k01 * ey
    s.y += k10 * ex + k11 * ey
    s.vx += k20 * ex + k21 * ey
    s.vy += k30 * ex + k31 * ey
    s.p00 = p00 - (k00 * p00 + k01 * p01)
    s.p01 = p01 - (k00 * p01 + k01 * p11)
    s.p02 = p02 - (k00 * p02 + k01 * p12)
    s.p03 = p03 - (k00 * p03 + k01 * p13)
    s.p11 = p11 - (k10 * p01 + k11 * p11)
    s.p12 = p12 - (k10 * p02 + k11 * p12)
    s.p13 = p13 - (k10 * p03 + k11 * p13)
    s.p22 = s.p22 - (k20 * p02 + k21 * p12)
    s.p23 = s.p23 - (k20 * p03 + k21 * p13)
    s.p33 = s.p33 - (k30 * p03 + k31 * p13)


def _assign(cost: list[list[float]]) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs (row, col) with cost below ``_BIG``; scipy's Hungarian solver when
    more than one row competes for more than one column."""
    m = len(cost)
    n = len(cost[0]) if m else 0
    if m == 0 or n == 0:
        return []
    if m == 1:
        j = min(range(n), key=cost[0].__getitem__)
        return [(0, j)] if cost[0][j] < _BIG else []
    if n == 1:
        i = min(range(m), key=lambda r: cost[r][0])
        return [(i, 0)] if cost[i][0] < _BIG else []
    arr = np.array(cost)
    rows, cols = linear_sum_assignment(arr)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if arr[r, c] < _BIG]


class FloorTracker:
    def __init__(self, store: Store, config: FloorConfig | None = None):
        self.cfg = config or FloorConfig()
        self.gates = [(g.region.min, g.region.max) for g in store.gates]
        self.exits = [(e.region.min, e.region.max) for e in store.exits]
        self.info: list[ShopperInfo] = []
        self._by_id: dict[str, int] = {}
        self._live: list[int] = []  # slots of shoppers not LEFT, in creation order
        self.links: dict[str, dict[int, int]] = {}  # camera -> {track id: shopper slot}
        self._next = 1
        self.now = 0.0

    # ------------------------------------------------------------------------------------------- queries
    def shopper(self, sid: str) -> ShopperInfo:
        return self.info[self._by_id[sid]]

    def index(self, sid: str) -> int:
        return self._by_id[sid]

    def present(self) -> list[int]:
        """Slots of shoppers on the floor (not left)."""
        return list(self._live)

    def live(self) -> list[ShopperInfo]:
        return [self.info[i] for i in self._live]

    def position(self, i: int) -> np.ndarray:
        return self.info[i].xy

    # array views by slot, for sampling positions (not for the hot path)
    @property
    def state(self) -> np.ndarray:
        return np.array([s.state for s in self.info], dtype=np.int8)

    @property
    def t(self) -> np.ndarray:
        return np.array([s.t for s in self.info], float)

    @property
    def X(self) -> np.ndarray:
        return np.array([(s.x, s.y, s.vx, s.vy) for s in self.info], float).reshape(-1, 4)

    # ------------------------------------------------------------------------------------------- regions
    def _near_gate(self, x: float, y: float) -> bool:
        m = self.cfg.spawn_margin_m
        return any(lo[0] - m <= x <= hi[0] + m and lo[1] - m <= y <= hi[1] + m for lo, hi in self.gates)

    def _in_exit(self, x: float, y: float) -> bool:
        return any(lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1] for lo, hi in self.exits)

    def _exit_distance(self, x: float, y: float) -> float:
        best = math.inf
        for lo, hi in self.exits:
            dx = max(lo[0] - x, x - hi[0], 0.0)
            dy = max(lo[1] - y, y - hi[1], 0.0)
            best = min(best, math.hypot(dx, dy))
        return best

    # ------------------------------------------------------------------------------------------- update
    def update(self, camera: str, ts: float, tracks: list[TrackObs]) -> list[str]:
        """Fold one camera frame into the shoppers.  Returns the ids of shoppers who left during it."""
        self.now = max(self.now, ts)
        cfg = self.cfg
        q = cfg.process_noise ** 2
        left: list[str] = []
        # shoppers not seen for a while are lost; lost at the door means walked out where the cameras stop
        for s in [self.info[i] for i in self._live]:
            if s.state == ACTIVE and ts - s.seen > cfg.lost_after_s:
                s.state = LOST
                if self._exit_distance(s.x, s.y) <= cfg.exit_margin_m:
                    left.append(self._retire(s, s.seen))
        links = self.links.setdefault(camera, {})
        if links:
            seen_tids = {t.track_id for t in tracks}
            for tid in [tid for tid in links if tid not in seen_tids]:
                del links[tid]
        if not tracks:
            return left

        mvar = cfg.min_meas_sd ** 2
        meas = [(t.floor[0], t.floor[1], t.cov[0] + mvar, t.cov[1], t.cov[2] + mvar) for t in tracks]
        live = list(self._live)
        gate_m = cfg.max_gate_m
        cost = [[_BIG] * len(live) for _ in tracks]
        linked_slot = [links.get(t.track_id) for t in tracks]
        for j, slot in enumerate(live):
            s = self.info[slot]
            dt = max(ts - s.t, 0.0)
            px, py = s.x + s.vx * dt, s.y + s.vy * dt
            cov = None
            for r, (zx, zy, rxx, rxy, ryy) in enumerate(meas):
                dx, dy = zx - px, zy - py
                linked = linked_slot[r] == slot
                if not linked and (s.state == LOST or abs(dx) > gate_m or abs(dy) > gate_m):
                    continue  # lost shoppers only through their link; far pairs never
                if cov is None:
                    cov = _pos_cov(s, dt, q)
                _, _, sxx, sxy, syy = cov
                a, b, c = sxx + rxx, sxy + rxy, syy + ryy
                d2 = (c * dx * dx - 2 * b * dx * dy + a * dy * dy) / (a * c - b * b)
                if linked and d2 < cfg.link_gate_chi2:
                    cost[r][j] = d2 * cfg.link_bonus
                elif not linked and d2 < cfg.gate_chi2:
                    cost[r][j] = d2
        assigned = {r: live[j] for r, j in _assign(cost)}

        # unmatched tracks: the same shopper seen by this camera for the first time, a lost one, or a new one
        taken = set(assigned.values())
        for r, (zx, zy, rxx, rxy, ryy) in enumerate(meas):
            if r in assigned:
                continue
            slot = self._claim(ts, zx, zy, taken, q)
            if slot is None:
                if self._in_exit(zx, zy):
                    continue  # someone outside the exit or walking out: not a shopper to track
                slot = self._spawn(ts, zx, zy, rxx, rxy, ryy, "gate" if self._near_gate(zx, zy) else "unknown")
            assigned[r] = slot
            taken.add(slot)

        vmax = cfg.max_speed_mps
        for r in sorted(assigned):
            slot = assigned[r]
            s = self.info[slot]
            zx, zy, rxx, rxy, ryy = meas[r]
            _predict(s, ts, q)
            _update(s, zx, zy, rxx, rxy, ryy)
            speed = math.hypot(s.vx, s.vy)
            if speed > vmax:
                s.vx *= vmax / speed
                s.vy *= vmax / speed
            s.seen = ts
            s.state = ACTIVE
            t = tracks[r]
            links[t.track_id] = slot
            s.path.append((ts, s.x, s.y))
            s.cameras.add(camera)
            for side, o, dvec, conf in t.wrists:
                s.wrists.append((ts, camera, side, float(o[0]), float(o[1]), float(o[2]),
                                 float(dvec[0]), float(dvec[1]), float(dvec[2]), float(conf)))
            if self._in_exit(s.x, s.y):
                left.append(self._retire(s, ts))
        return left

    def _claim(self, ts: float, zx: float, zy: float, taken: set[int], q: float) -> int | None:
        """A shopper this unmatched track should belong to: one close by that this camera does not see
        right now (a hand-off), or a lost one within the recovery radius; the nearest, the first on ties."""
        cfg = self.cfg
        best, best_d = None, math.inf
        for slot in self._live:
            if slot in taken:
                continue
            s = self.info[slot]
            dt = max(ts - s.t, 0.0)
            d = math.hypot(s.x + s.vx * dt - zx, s.y + s.vy * dt - zy)
            if s.state == LOST:
                radius = cfg.recover_radius_m + cfg.recover_speed_mps * (ts - s.seen)
            else:
                radius = cfg.dedupe_radius_m
            if d < radius and d < best_d:
                best, best_d = slot, d
        return best

    def _spawn(self, ts: float, x: float, y: float, rxx: float, rxy: float, ryy: float, origin: str) -> int:
        slot = len(self.info)
        sid = f"s{self._next}"
        self._next += 1
        s = ShopperInfo(sid, ts, origin, t=ts, seen=ts, x=x, y=y, p00=rxx, p01=rxy, p11=ryy)
        self.info.append(s)
        self._by_id[sid] = slot
        self._live.append(slot)
        log.debug("new shopper %s at (%.2f, %.2f) origin=%s", sid, x, y, origin)
        return slot

    def _retire(self, s: ShopperInfo, ts: float) -> str:
        slot = self._by_id[s.id]
        s.state = LEFT
        s.exited_t = ts
        self._live.remove(slot)
        for cam_links in self.links.values():
            for tid in [tid for tid, v in cam_links.items() if v == slot]:
                del cam_links[tid]
        return s.id

    def retire(self, slot: int, ts: float) -> str:
        return self._retire(self.info[slot], ts)

    def prune(self, now: float) -> None:
        """Drop history older than the configured span (positions and wrists)."""
        horizon = now - self.cfg.history_s
        for inf in self.info:
            if inf.path and inf.path[0][0] < horizon:
                inf.path = [p for p in inf.path if p[0] >= horizon]
            if inf.wrists and inf.wrists[0][0] < horizon:
                inf.wrists = [w for w in inf.wrists if w[0] >= horizon]
