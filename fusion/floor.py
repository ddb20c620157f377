"""Floor tracking across cameras: each camera's tracks become global shoppers in the store frame.

``FloorTracker.update(camera, ts, tracks)`` takes one camera frame's tracks and folds them into the shoppers.

Every shopper is a Kalman filter on its head: position and velocity on the floor and the head's height,
``(x, y, vx, vy, h)``.  A camera track measures it through the ray of its head keypoint: the head lies on that
ray, which is a linear constraint on ``(x, y, h)`` (its offsets along two directions perpendicular to the ray
are zero).  One camera pins the head to a line; a second camera's ray crosses it and fixes the height, so
heads are triangulated across cameras instead of being cut at an assumed height, and each camera's track is
judged against the shopper with the covariance that geometry implies (long along the ray, tight across it).
A track without a head ray measures the floor position with its published covariance instead.

Matching is one-to-one within a camera frame (two people side by side are never merged), by Mahalanobis
distance, preferring the shopper a (camera, track id) was linked to before (hand-offs keep one id).  A track
left over goes to a shopper this camera does not see right now if it is close enough (a camera picking up a
shopper), else to a lost shopper (recovery: near the gate only a close one, elsewhere the nearest, since
nobody enters except through the gate), else it becomes a new shopper (``gate`` origin near an entry gate,
``unknown`` elsewhere; one placed off at first sight who is at the gate within ``gate_origin_s`` came in
through it too).  A shopper whose position enters an exit, or who is lost next to one, has left.

Where tracks carry the chest colour (``edge/appearance.py``), each shopper keeps a running colour and every
matching cost gets the capped colour distance added: it keeps two shoppers apart through a close pass or a
camera's id switch where position alone cannot.  A track's colour there is the median of its last few frames
(one odd patch -- another shirt in view -- does not outweigh its link), judged against the shopper's colour as
that camera has seen it, once it has (``colour_camera_sd``: each camera's view and exposure shift colours, so
a camera's own view tells two similar shirts apart where the mean over cameras does not).  An ``unknown``
shopper who stays on top of an older one (a track the matching could not place, on someone crouching) is
folded into them (:meth:`_merge_twins`).

Crouching: a shopper crouching to a low shelf lowers the head faster than the filter's head height follows,
and a ray through the lowered head, read at the standing height, points metres off.  A matched head ray that a
crouch explains (its distance with the head height ``crouch_sd_m`` less sure falls below ``crouch_explains``
of its own) moves the head height rather than dragging the shopper along the ray, and a track the matching left
over that fits an active shopper only so joins them instead of becoming a new (phantom) shopper.

Speed (``python -m bench.fusion``): a frame's shoppers and tracks are predicted and scored in one go
(:meth:`_gating`), the matched pairs' updates are finished from those arrays (:meth:`_correct`), and the other
cameras of the same instant start from the first one's prediction with the matched rows corrected, which is
exactly what predicting afresh gives (a shopper updated at ``ts`` predicts to ``ts`` unchanged).
"""

from __future__ import annotations

import functools
import logging
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from calibration.store import Store
from fusion.config import FloorConfig

log = logging.getLogger(__name__)

ACTIVE, LOST, LEFT = 0, 1, 2
_BIG = 1e9
_POS = [0, 1, 4]  # x, y, h in the state vector


@dataclass
class TrackObs:
    """One camera track in one frame, in the form the floor tracker needs."""

    track_id: int
    floor: tuple[float, float]
    cov: tuple[float, float, float]  # xx, xy, yy
    wrists: list[tuple[int, Sequence[float], Sequence[float], float]] = field(default_factory=list)
    # (0 = left / 1 = right, ray origin (3,), ray dir (3,), confidence); arrays or tuples of floats
    head: tuple[Sequence[float], Sequence[float]] | None = None  # head ray (origin, unit dir), if seen
    colour: Sequence[float] | None = None  # upper-body colour, CIE L*a*b*, if measured


@dataclass(eq=False)
class ShopperInfo:
    """A shopper on the floor: identity, history, and the filter state ``m`` = (x, y, vx, vy, h) with
    covariance ``P`` at time ``t``."""

    id: str
    created_t: float
    origin: str  # "gate" or "unknown"
    visit: str | None = None
    exited_t: float | None = None
    vanished: bool = False  # retired after being lost away from the exit: nobody saw them leave
    # positions (t, x, y) and wrist observations (t, camera, side, ox, oy, oz, dx, dy, dz, conf)
    path: list[tuple[float, float, float]] = field(default_factory=list)
    wrists: list[tuple] = field(default_factory=list)
    heights: list[tuple[float, float]] = field(default_factory=list)  # (t, head height), with the path
    cameras: set[str] = field(default_factory=set)
    state: int = ACTIVE
    t: float = 0.0
    seen: float = 0.0
    m: np.ndarray = field(default_factory=lambda: np.zeros(5))
    P: np.ndarray = field(default_factory=lambda: np.eye(5))
    colour: np.ndarray | None = None  # running mean of the upper-body colours measured (L*a*b*)
    colour_n: int = 0  # how many went into it
    cam_colours: dict[str, list[float]] = field(default_factory=dict)  # camera -> [L*, a*, b*, n]: as it sees them
    twin: str | None = None  # an older shopper this one has stayed on top of since twin_since (a duplicate?)
    twin_since: float = 0.0
    apart: frozenset[str] = frozenset()  # shoppers seen as another track in the same camera frame, nearby
    merged_into: str | None = None  # retired as a duplicate of this shopper
    entry_colour: np.ndarray | None = None  # the running colour once it first counted (at the gate, for most)
    adoption_decided: bool = False  # an unbound shopper's adoption by a visit was weighed (once)
    adopted: bool = False  # bound to its visit by colour (fusion.engine.FusionEngine._adopt)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("heights", [])  # snapshots from before it was kept

    @property
    def x(self) -> float:
        return float(self.m[0])

    @property
    def y(self) -> float:
        return float(self.m[1])

    @property
    def xy(self) -> np.ndarray:
        return self.m[:2].copy()


@dataclass
class _Meas:
    """A track as a linear measurement ``z = H @ m + noise(R)`` of the state ``m``; H reads only its
    position and height (x, y, h).  ``row`` holds H (2 x 5), z (2) and R (2 x 2), row-major, as 16 plain
    floats: a frame's measurements become arrays in one go (:meth:`FloorTracker._gating`)."""

    row: tuple[float, ...]
    floor: tuple[float, float]  # the track's own floor estimate (for spawning and distances)
    colour: np.ndarray | None = None  # (3,) upper-body colour, if measured
    ray: tuple[float, float, float] | None = None  # unit direction of the head ray it comes from, if any
    sd: float = 0.0  # the head ray's spread across it (m), with ``ray``
    match_colour: np.ndarray | None = None  # the colour matching reads: the track's recent median (or colour)

    @property
    def H(self) -> np.ndarray:
        return np.array(self.row[:10]).reshape(2, 5)

    @property
    def z(self) -> np.ndarray:
        return np.array(self.row[10:12])

    @property
    def R(self) -> np.ndarray:
        return np.array(self.row[12:]).reshape(2, 2)


@dataclass
class _Gating:
    """One camera frame's shoppers predicted to its time and its (track, shopper) pairs (:meth:`_gating`)."""

    m: np.ndarray  # (n, 5) predicted means
    P: np.ndarray  # (n, 5, 5) predicted covariances
    HP: np.ndarray  # (k, n, 2, 5) H P of each pair
    S: np.ndarray  # (k, n, 2, 2) innovation covariances
    e: np.ndarray  # (k, 2, n) innovations
    d2: np.ndarray  # (k, n) squared Mahalanobis distances


def _d2(a: np.ndarray, b: np.ndarray, c: np.ndarray, e0: np.ndarray, e1: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances e^T S^-1 e, S = [[a, b], [b, c]] and e = (e0, e1) elementwise (the 2 x 2
    inverse in closed form)."""
    out = c * e0  # (c e0 - 2 b e1) e0 + a e1 e1, in place: numpy's per-operation cost is most of it here
    be1 = b * e1
    out -= be1
    out -= be1
    out *= e0
    ae1 = a * e1
    ae1 *= e1
    out += ae1
    det = a * c
    det -= b * b
    out /= det
    return out


def _time_of(entry: tuple) -> float:
    return entry[0]


def _median(v: list[float]) -> float:
    """The median of a few numbers (``statistics.median``, without its overhead on a hot path)."""
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


@functools.lru_cache(maxsize=8)
def _inverse_variances(sd: tuple[float, ...]) -> np.ndarray:
    """1 / sd^2 per channel, read-only (:meth:`FloorTracker.colour_d2`)."""
    out = 1.0 / np.square(np.array(sd, float))
    out.flags.writeable = False
    return out


def _colour(t: TrackObs) -> np.ndarray | None:
    return None if t.colour is None else np.array(t.colour, float)


def _q_basis() -> np.ndarray:
    """Q (5 x 5, flattened) = (q dt^3 / 3, q dt^2 / 2, q dt, h dt) @ this (4 x 25): white-noise acceleration
    per floor axis (q = process noise^2) and a random walk of the head height (h = its noise^2), as _F_Q."""
    basis = np.zeros((4, 5, 5))
    basis[0, 0, 0] = basis[0, 1, 1] = 1.0
    basis[1, 0, 2] = basis[1, 2, 0] = basis[1, 1, 3] = basis[1, 3, 1] = 1.0
    basis[2, 2, 2] = basis[2, 3, 3] = 1.0
    basis[3, 4, 4] = 1.0
    return basis.reshape(4, 25)


_Q_BASIS = _q_basis()
_EYE5 = np.eye(5)
_VEL_TO_POS = np.zeros((5, 5))  # F = I + dt x this: the position moves by dt x velocity
_VEL_TO_POS[0, 2] = _VEL_TO_POS[1, 3] = 1.0
_Q_POWERS = np.array([3.0, 2.0, 1.0, 1.0])  # of dt, per row of _Q_BASIS
for _a in (_Q_BASIS, _Q_POWERS, _EYE5, _VEL_TO_POS):
    _a.flags.writeable = False



def _perp_basis(dx: float, dy: float, dz: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Two unit vectors perpendicular to the unit vector ``d`` and to each other: u = d x a (a the x axis, or
    the y axis when d is near x), v = d x u.  In plain floats: numpy costs more than the arithmetic here."""
    if abs(dx) < 0.9:  # a = (1, 0, 0)
        ux, uy, uz = 0.0, dz, -dy
    else:  # a = (0, 1, 0)
        ux, uy, uz = -dz, 0.0, dx
    n = math.sqrt(ux * ux + uy * uy + uz * uz)
    ux, uy, uz = ux / n, uy / n, uz / n
    return (ux, uy, uz), (dy * uz - dz * uy, dz * ux - dx * uz, dx * uy - dy * ux)


class FloorTracker:
    def __init__(self, store: Store, config: FloorConfig | None = None):
        self.cfg = config or FloorConfig()
        self.gates = [(g.region.min, g.region.max) for g in store.gates]
        self.exits = [(e.region.min, e.region.max) for e in store.exits]
        self.info: list[ShopperInfo] = []
        self._by_id: dict[str, int] = {}
        self._live: list[int] = []  # slots of shoppers not LEFT, in creation order
        self.links: dict[str, dict[int, int]] = {}  # camera -> {track id: shopper slot}
        self.track_colours: dict[str, dict[int, list]] = {}  # camera -> {track id: its recent colours}
        self._next = 1
        self.now = 0.0
        # the latest frame's prediction (ts, slots, means, covariances), kept up to date by the corrections:
        # the other cameras of the same instant start from it (:meth:`_gating`)
        self._prior: tuple[float, list[int], np.ndarray, np.ndarray] | None = None
        self._scanned: float | None = None  # the latest instant whose lost and vanished shoppers were found

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
        return np.array([s.m[:4] for s in self.info], float).reshape(-1, 4)

    # ------------------------------------------------------------------------------------------- regions
    def near_gate(self, x: float, y: float, margin: float | None = None) -> bool:
        m = self.cfg.spawn_margin_m if margin is None else margin
        return any(lo[0] - m <= x <= hi[0] + m and lo[1] - m <= y <= hi[1] + m for lo, hi in self.gates)

    def _in_exit(self, x: float, y: float) -> bool:
        for lo, hi in self.exits:
            if lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1]:
                return True
        return False

    def _exit_distance(self, x: float, y: float) -> float:
        best = math.inf
        for lo, hi in self.exits:
            dx = max(lo[0] - x, x - hi[0], 0.0)
            dy = max(lo[1] - y, y - hi[1], 0.0)
            best = min(best, math.hypot(dx, dy))
        return best

    # ------------------------------------------------------------------------------------------- filter
    def _F_Q(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """The motion model over ``dt`` as matrices: the reference that :meth:`_gating` and
        :meth:`_kalman`, which write it out for speed, are tested against."""
        F = np.eye(5)
        F[0, 2] = F[1, 3] = dt
        q = self.cfg.process_noise ** 2
        Q = np.zeros((5, 5))
        for a, b in ((0, 2), (1, 3)):  # continuous white-noise acceleration, per axis
            Q[a, a] = q * dt ** 3 / 3
            Q[a, b] = Q[b, a] = q * dt * dt / 2
            Q[b, b] = q * dt
        Q[4, 4] = self.cfg.head_height_noise ** 2 * dt
        return F, Q

    def _gating(self, ts: float, slots: list[int], meas: list[_Meas]) -> _Gating:
        """Every shopper of ``slots`` predicted to ``ts`` (F m, F P F^T + Q; not in the shoppers, but kept in
        ``_prior`` for the instant's other cameras, with the rows its updates correct) and every (track,
        shopper) pair's innovation, its covariance and squared Mahalanobis distance, all in one go: the matching
        reads ``d2`` and :meth:`_correct` finishes the chosen pairs' Kalman updates from the rest.  Written out
        for speed: F = I + dt x :data:`_VEL_TO_POS` per shopper, Q from its four coefficients
        (:data:`_Q_BASIS`), the 2 x 2 inverses of S in closed form."""
        cached = getattr(self, "_prior", None)  # (snapshots of older versions lack it)
        if cached is not None and cached[0] == ts and cached[1] == slots:
            m, P = cached[2], cached[3]  # an earlier camera's frame of this instant: corrected rows included
        else:
            info = self.info
            n = len(slots)
            dt = np.array([info[k].t for k in slots])
            np.subtract(ts, dt, out=dt)
            np.maximum(dt, 0.0, out=dt)
            F = _EYE5 + dt[:, None, None] * _VEL_TO_POS
            m = (F @ np.array([info[k].m for k in slots])[..., None])[..., 0]
            P = F @ np.array([info[k].P for k in slots]) @ F.swapaxes(1, 2)
            q, hq = self.cfg.process_noise ** 2, self.cfg.head_height_noise ** 2
            P += ((dt[:, None] ** _Q_POWERS * (q / 3, q / 2, q, hq)) @ _Q_BASIS).reshape(n, 5, 5)
            self._prior = (ts, list(slots), m, P)
        rows = np.array([mm.row for mm in meas])
        H, z, R = rows[:, :10].reshape(-1, 2, 5), rows[:, 10:12], rows[:, 12:].reshape(-1, 2, 2)
        HP = H[:, None] @ P  # (k, n, 2, 5); its transpose is P H^T (P is symmetric)
        S = HP @ H[:, None].swapaxes(2, 3)
        S += R[:, None]
        e = z[:, :, None] - H @ m.T  # (k, 2, n)
        a, b, _, c = S.reshape(-1, 4).T  # S^-1 in closed form (unpacking rows is cheaper than indexing S)
        e0, e1 = e[:, 0].ravel(), e[:, 1].ravel()
        return _Gating(m, P, HP, S, e, _d2(a, b, c, e0, e1).reshape(len(meas), len(slots)))

    def _measure(self, t: TrackObs) -> _Meas:
        cfg = self.cfg
        if t.head is not None:
            (ox, oy, oz), (dx, dy, dz) = t.head
            n = math.sqrt(dx * dx + dy * dy + dz * dz)
            dx, dy, dz = dx / n, dy / n, dz / n
            if dz < -1e-3:  # looking down: the ray meets the typical head height in front of the camera
                u, v = _perp_basis(dx, dy, dz)
                s = (cfg.head_height_m - oz) / dz
                sd = cfg.head_ray_sd_m + cfg.head_ray_sd_per_m * abs(s)  # d is a unit vector: |s| is the range
                (u0, u1, u2), (v0, v1, v2) = u, v
                var = sd * sd
                return _Meas((u0, u1, 0.0, 0.0, u2, v0, v1, 0.0, 0.0, v2,  # H: the two directions across the ray
                              u0 * ox + u1 * oy + u2 * oz, v0 * ox + v1 * oy + v2 * oz, var, 0.0, 0.0, var),
                             (ox + s * dx, oy + s * dy), _colour(t), (dx, dy, dz), sd)
        mvar = cfg.min_meas_sd ** 2
        cxx, cxy, cyy = t.cov
        fx, fy = t.floor
        fx, fy = float(fx), float(fy)
        return _Meas((1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, fx, fy, cxx + mvar, cxy, cxy, cyy + mvar),
                     (fx, fy), _colour(t))

    def _init_P(self, mm: _Meas) -> np.ndarray:
        """Covariance of (x, y, h) of a shopper born from the measurement ``mm``: along a head ray, the
        height's spread moves the point by ``g`` per metre; a floor point has its own covariance."""
        hvar = self.cfg.head_height_sd_m ** 2
        if mm.ray is not None:
            g = np.array(mm.ray) / mm.ray[2]
            H = mm.H[:, _POS]
            return hvar * np.outer(g, g) + mm.sd * mm.sd * (H.T @ H)  # H^T H = uu^T + vv^T
        init = np.zeros((3, 3))
        init[:2, :2] = mm.R
        init[2, 2] = hvar
        return init

    def _kalman(self, s: ShopperInfo, ts: float, mm: _Meas) -> None:
        """Predict ``s`` to ``ts`` and update it with ``mm``: the textbook filter (m' = F m + K (z - H F m),
        P' = (I - K H)(F P F^T + Q), K = P H^T (H P H^T + R)^-1, H reading (x, y, h) of the state) for one
        shopper (one the frame's :meth:`_gating` did not cover: just born).  Plain floats: for 5 x 5 matrices
        numpy's per-call cost is most of the time."""
        cfg = self.cfg
        m = s.m.tolist()
        P = s.P.tolist()
        dt = ts - s.t
        if dt > 0:  # F adds dt x velocity to the position; Q: white-noise acceleration per axis (as _F_Q)
            m[0] += dt * m[2]
            m[1] += dt * m[3]
            for i, j in ((0, 2), (1, 3)):
                ri, rj = P[i], P[j]
                for k in range(5):
                    ri[k] += dt * rj[k]
            for row in P:
                row[0] += dt * row[2]
                row[1] += dt * row[3]
            q = cfg.process_noise ** 2
            a, b, c = q * dt ** 3 / 3, q * dt * dt / 2, q * dt
            for i, j in ((0, 2), (1, 3)):
                P[i][i] += a
                P[i][j] += b
                P[j][i] += b
                P[j][j] += c
            P[4][4] += cfg.head_height_noise ** 2 * dt
        h00, h01, _, _, h02, h10, h11, _, _, h12, z0, z1, r00, r01, r10, r11 = mm.row
        # H P (2 x 5): H reads rows 0, 1 and 4 of P (P is symmetric: this is (P H^T)^T)
        p0, p1, p4 = P[0], P[1], P[4]
        hp = ([h00 * u + h01 * v + h02 * w for u, v, w in zip(p0, p1, p4, strict=True)],
              [h10 * u + h11 * v + h12 * w for u, v, w in zip(p0, p1, p4, strict=True)])
        S = ((h00 * hp[0][0] + h01 * hp[0][1] + h02 * hp[0][4] + r00,
              h10 * hp[0][0] + h11 * hp[0][1] + h12 * hp[0][4] + r01),
             (h00 * hp[1][0] + h01 * hp[1][1] + h02 * hp[1][4] + r10,
              h10 * hp[1][0] + h11 * hp[1][1] + h12 * hp[1][4] + r11))
        e = (z0 - (h00 * m[0] + h01 * m[1] + h02 * m[4]), z1 - (h10 * m[0] + h11 * m[1] + h12 * m[4]))
        self._correct(s, ts, np.array(m), np.array(P), np.array(hp), S, e)

    def _correct(self, s: ShopperInfo, ts: float, m: np.ndarray, P: np.ndarray, hp: np.ndarray,
                 S: Sequence[Sequence[float]], e: Sequence[float]) -> None:
        """The Kalman update of ``s`` at ``ts`` from its predicted mean and covariance (``m``, ``P``) and the
        measurement's ``H P`` (2 x 5), innovation covariance ``S`` (2 x 2, floats) and innovation ``e``:
        K = P H^T S^-1, m' = m + K e, P' = P - K H P = P - (H P)^T S^-1 (H P); then the head height is kept
        in its range and the speed under the limit.  The new mean and covariance are new arrays; P' is
        symmetric to the last bit."""
        cfg = self.cfg
        (s00, s01), (_, s11) = S
        e0, e1 = e
        det = s00 * s11 - s01 * s01
        i00, i01, i11 = s11 / det, -s01 / det, s00 / det  # S^-1 (S is symmetric)
        u11sq = i11 - i01 * i01 / i00 if i00 > 0 else -1.0
        if u11sq > 0:  # S^-1 = U^T U, U upper triangular: (H P)^T S^-1 (H P) = Y^T Y, Y = U H P, symmetric as
            u00 = math.sqrt(i00)  # computed
            u01, u11 = i01 / u00, math.sqrt(u11sq)
            Y = np.array(((u00, u01), (0.0, u11))) @ hp
            m = m + Y.T @ np.array((u00 * e0 + u01 * e1, u11 * e1))  # K e = (H P)^T S^-1 e = Y^T U e
            P = P - Y.T @ Y
        else:  # S not positive definite to working precision (absurd input): the plain form, made symmetric
            X = np.array(((i00, i01), (i01, i11))) @ hp
            m = m + X.T @ np.array(e)
            P = P - hp.T @ X
            P = (P + P.T) / 2
        h, vx, vy = m[4], m[2], m[3]
        lo, hi = cfg.head_height_range
        if not lo <= h <= hi:
            m[4] = min(max(h, lo), hi)
        speed = math.hypot(vx, vy)
        if speed > cfg.max_speed_mps:
            m[2:4] *= cfg.max_speed_mps / speed
        s.m, s.P, s.t = m, P, ts

    def _crouch_d2(self, g: _Gating, r: int, mm: _Meas) -> np.ndarray:
        """d2 of track ``r`` against every gated shopper with the head height ``crouch_sd_m`` less sure: a
        shopper crouching to a low shelf or standing up moves the head faster than the filter follows, and
        the ray of the lowered head then misses the head where the filter has it.  S grows by that variance
        along H's height column."""
        cv = self.cfg.crouch_sd_m ** 2
        h0, h1 = mm.row[4], mm.row[9]
        S = g.S[r]
        a = S[:, 0, 0] + cv * h0 * h0
        b = S[:, 0, 1] + cv * h0 * h1
        c = S[:, 1, 1] + cv * h1 * h1
        e0, e1 = g.e[r]
        return _d2(a, b, c, e0, e1)

    def _crouch_explains(self, g: _Gating, r: int, j: int, mm: _Meas) -> bool:
        """Whether matched pair (``r``, ``j``) is a head ray a crouch explains (``crouch_trigger_chi2``,
        ``crouch_explains``): its update should move the head height, not the shopper."""
        cfg = self.cfg
        if mm.ray is None or cfg.crouch_trigger_chi2 <= 0 or cfg.crouch_sd_m <= 0:
            return False
        d2 = g.d2[r, j]
        return d2 > cfg.crouch_trigger_chi2 and self._crouch_d2(g, r, mm)[j] < d2 * cfg.crouch_explains

    def _crouch_update(self, s: ShopperInfo, ts: float, g: _Gating, r: int, j: int, mm: _Meas) -> None:
        """The Kalman update of a pair matched by :meth:`_crouch_d2`: the predicted head height gets the
        crouch's variance first, so the ray moves the head height rather than the position."""
        P = g.P[j].copy()
        P[4, 4] += self.cfg.crouch_sd_m ** 2
        H = mm.H
        hp = H @ P
        self._correct(s, ts, g.m[j], P, hp, (hp @ H.T + mm.R).tolist(), g.e[r, :, j].tolist())

    # ------------------------------------------------------------------------------------------- update
    def update(self, camera: str, ts: float, tracks: list[TrackObs]) -> list[str]:
        """Fold one camera frame into the shoppers.  Returns the ids of shoppers who left during it."""
        self.now = max(self.now, ts)
        cfg = self.cfg
        left: list[str] = []
        # who is lost or gone: once per instant (its other cameras' frames could change nothing: ts is the same
        # and ``seen`` only grows)
        scan = [] if getattr(self, "_scanned", None) == ts else [self.info[i] for i in self._live]
        self._scanned = ts
        for s in scan:
            if s.state == ACTIVE and ts - s.seen > cfg.lost_after_s:
                s.state = LOST
                if self._exit_distance(s.x, s.y) <= cfg.exit_margin_m:
                    left.append(self._retire(s, s.seen))  # walked out where the cameras stop
            elif s.state == LOST and ts - s.seen > cfg.vanish_after_s:
                left.append(self.vanish(s))
        links = self.links.setdefault(camera, {})
        if links:
            seen_tids = {t.track_id for t in tracks}
            for tid in [tid for tid in links if tid not in seen_tids]:
                del links[tid]
        if not tracks:
            return left

        meas = [self._measure(t) for t in tracks]
        self._track_colours(camera, ts, tracks, meas)
        live = list(self._live)
        assigned: dict[int, int] = {}
        d2 = None
        colour = None
        gating = None
        col: dict[int, int] = {}  # live slot -> its column
        if live:
            gating = self._gating(ts, live, meas)
            d2 = gating.d2
            cost = np.where(d2 < cfg.gate_chi2, d2, _BIG)
            info = self.info
            lost = [j for j, slot in enumerate(live) if info[slot].state == LOST]
            if lost:
                cost[:, lost] = _BIG  # lost shoppers only through their link or by recovery below
            col = {slot: j for j, slot in enumerate(live)}
            for r, t in enumerate(tracks):
                j = col.get(links.get(t.track_id, -1))
                if j is not None and d2[r, j] < cfg.link_gate_chi2:
                    cost[r, j] = d2[r, j] * cfg.link_bonus
            colour = self._colour_cost(meas, live, camera)
            if colour is not None:
                cost = np.where(cost < _BIG, cost + colour, _BIG)
            if len(tracks) == 1:  # (the assignment of one row is its cheapest column)
                j = int(cost[0].argmin())
                if cost[0, j] < _BIG:
                    assigned = {0: live[j]}
            elif cost.min() < _BIG:
                rows, cols = linear_sum_assignment(cost)
                assigned = {r: live[c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
                            if cost[r, c] < _BIG}

        taken = set(assigned.values())
        crouched: set[int] = set()  # tracks that joined a shopper only with the head height let loose
        for r in range(len(tracks)):
            if r in assigned:
                continue
            colour_row = None if colour is None or meas[r].colour is None else colour[r]
            slot = None if d2 is None else self._handoff(d2[r], live, taken, colour_row)
            if slot is None and gating is not None and cfg.crouch_sd_m > 0 and meas[r].ray is not None:
                slot = self._handoff(self._crouch_d2(gating, r, meas[r]), live, taken, colour_row)
                if slot is not None:
                    crouched.add(r)
            if slot is None:
                slot = self._recover(ts, meas[r], live, taken, colour_row)
            if slot is None:
                fx, fy = meas[r].floor
                if self._exit_distance(fx, fy) <= cfg.exit_margin_m:
                    continue  # someone at the exit is walking out: nobody new appears there
                slot = self._spawn(ts, meas[r], "gate" if self.near_gate(fx, fy) else "unknown")
            assigned[r] = slot
            taken.add(slot)

        where: list[tuple[ShopperInfo, float, float, float, float]] = []  # (shopper, x, y, track's x, y)
        for r in sorted(assigned):
            slot = assigned[r]
            s = self.info[slot]
            j = col.get(slot) if gating is not None else None
            if j is None:
                self._kalman(s, ts, meas[r])
            else:
                g = gating
                if r in crouched or self._crouch_explains(g, r, j, meas[r]):
                    self._crouch_update(s, ts, g, r, j, meas[r])
                else:
                    self._correct(s, ts, g.m[j], g.P[j], g.HP[r, j], g.S[r, j].tolist(), g.e[r, :, j].tolist())
                g.m[j], g.P[j] = s.m, s.P  # the instant's next camera starts from the corrected state
            s.seen = ts
            s.state = ACTIVE
            t = tracks[r]
            links[t.track_id] = slot
            x, y = s.m[:2].tolist()
            if s.origin == "unknown" and ts - s.created_t <= cfg.gate_origin_s and self.near_gate(x, y):
                s.origin = "gate"  # placed off at first sight, at the gate the next moment: came in through it
            s.path.append((ts, x, y))
            s.heights.append((ts, float(s.m[4])))
            where.append((s, x, y, *meas[r].floor))
            s.cameras.add(camera)
            if meas[r].colour is not None:
                self._learn_colour(s, meas[r].colour, camera)
            for side, o, dvec, conf in t.wrists:
                s.wrists.append((ts, camera, side, float(o[0]), float(o[1]), float(o[2]),
                                 float(dvec[0]), float(dvec[1]), float(dvec[2]), float(conf)))
            if self._in_exit(x, y):
                left.append(self._retire(s, ts))
        if len(where) > 1:
            self._note_apart(where)
        self._merge_twins(ts)
        return left

    def _handoff(self, d2_row: np.ndarray, live: list[int], taken: set[int],
                 colour_row: np.ndarray | None = None) -> int | None:
        """The active shopper this camera does not see right now that a track the assignment left over
        joins, if any is within the hand-off gate (``d2_row``, by ``live`` column).  Among several, position
        and colour (``colour_row``) decide together."""
        best, best_c = None, math.inf
        for j, slot in enumerate(live):
            if slot not in taken and self.info[slot].state == ACTIVE and d2_row[j] < self.cfg.handoff_chi2:
                c = float(d2_row[j]) + (float(colour_row[j]) if colour_row is not None else 0.0)
                if c < best_c:
                    best, best_c = slot, c
        return best

    def _recover(self, ts: float, mm: _Meas, live: list[int], taken: set[int],
                 colour_row: np.ndarray | None = None) -> int | None:
        """The lost shopper a track nobody else took belongs to, if any (see the module docstring)."""
        cfg = self.cfg
        fx, fy = mm.floor
        at_gate = self.near_gate(fx, fy)
        best, best_d = None, math.inf
        col = {slot: float(colour_row[j]) for j, slot in enumerate(live)} if colour_row is not None else {}
        for slot in self._live:
            s = self.info[slot]
            if slot in taken or s.state != LOST:
                continue
            dt = max(ts - s.t, 0.0)
            d = math.hypot(s.m[0] + s.m[2] * min(dt, 1.0) - fx, s.m[1] + s.m[3] * min(dt, 1.0) - fy)
            if at_gate:
                radius = cfg.recover_radius_m
            else:
                radius = min(cfg.recover_radius_m + cfg.recover_speed_mps * (ts - s.seen), cfg.recover_max_m)
            if d < radius:  # with colours: distance and colour together (both at most colour_cap); else nearest
                score = cfg.colour_cap * (d / radius) ** 2 + col[slot] if slot in col else d
                if score < best_d:
                    best, best_d = slot, score
        return best

    # ------------------------------------------------------------------------------------------- duplicates
    def _note_apart(self, seen: list[tuple[ShopperInfo, float, float, float, float]]) -> None:
        """Shoppers one camera frame shows as different tracks close together are two people: never twins.
        ``seen``: the shoppers matched in the frame, each with where they are (x, y) and their track's own floor
        position (x, y); both the shoppers and the tracks must be close (a track matched by its link to a shopper
        it no longer fits -- another person on the same line of sight -- says nothing about who stands next to
        that shopper)."""
        near = 2 * self.cfg.merge_m
        for a in range(len(seen)):
            sa, xa, ya, fxa, fya = seen[a]
            for b in range(a + 1, len(seen)):
                sb, xb, yb, fxb, fyb = seen[b]
                close = abs(xa - xb) < near and abs(ya - yb) < near and abs(fxa - fxb) < near and abs(fya - fyb) < near
                if close and sb.id not in sa.apart:
                    sa.apart = sa.apart | {sb.id}
                    sb.apart = sb.apart | {sa.id}

    def _merge_twins(self, ts: float) -> None:
        """A shopper who appeared away from the gate (``unknown``: nobody enters but through it) and has
        stayed within ``merge_m`` of an older shopper for ``merge_after_s``, never seen beside them as another
        track and not of another colour, is a duplicate of them (a camera's track the matching could not
        place, on someone crouching or half hidden): it is folded into the older one."""
        cfg = self.cfg
        if cfg.merge_after_s <= 0:
            return
        for slot in list(self._live):
            s = self.info[slot]
            if s.origin != "unknown" or s.state != ACTIVE:
                continue
            best, best_d = None, cfg.merge_m
            for k in self._live:
                o = self.info[k]
                if o is s or o.created_t >= s.created_t or o.id in s.apart:
                    continue
                d = math.hypot(o.m[0] - s.m[0], o.m[1] - s.m[1])
                if d < best_d and not self._colour_differs(s, o):
                    best, best_d = o, d
            if best is None:
                s.twin = None
            elif s.twin != best.id:
                s.twin, s.twin_since = best.id, ts
            elif ts - s.twin_since >= cfg.merge_after_s:
                self._merge(s, best, ts)

    def _colour_differs(self, a: ShopperInfo, b: ShopperInfo) -> bool:
        cfg = self.cfg
        if cfg.colour_cap <= 0 or a.colour is None or b.colour is None or \
                min(a.colour_n, b.colour_n) < cfg.colour_min_obs:
            return False
        return float(self.colour_d2(a.colour, b.colour)) > cfg.colour_cap

    def _merge(self, dup: ShopperInfo, into: ShopperInfo, ts: float) -> None:
        slot, keep = self._by_id[dup.id], self._by_id[into.id]
        log.debug("shopper %s is a duplicate of %s: merged at %.3f", dup.id, into.id, ts)
        for cam_links in self.links.values():
            for tid in [tid for tid, v in cam_links.items() if v == slot]:
                cam_links[tid] = keep
        if dup.wrists:
            into.wrists = sorted(into.wrists + dup.wrists, key=_time_of)
        into.cameras |= dup.cameras
        if into.state == LOST:  # the duplicate is where they are now
            into.m, into.P, into.t, into.seen, into.state = dup.m.copy(), dup.P.copy(), dup.t, dup.seen, ACTIVE
        dup.merged_into = into.id
        self._retire(dup, ts)
        self._prior = None

    # ------------------------------------------------------------------------------------------- colour
    def _colour_cost(self, meas: list[_Meas], slots: list[int], camera: str = "") -> np.ndarray | None:
        """What colour adds to each (track, shopper) cost, (m, n): the squared distance in spreads, at most
        ``colour_cap``; a shopper whose colour is not known yet costs its expected value (3, the degrees of
        freedom), a track without a colour nothing.  None when no pair has both."""
        cfg = self.cfg
        if cfg.colour_cap <= 0:
            return None
        rows = [r for r, mm in enumerate(meas) if mm.match_colour is not None]
        if not rows:
            return None
        known = [j for j, k in enumerate(slots) if self.info[k].colour_n >= cfg.colour_min_obs]
        if not known:
            return None
        c = np.array([meas[r].match_colour for r in rows])
        m = np.array([self.info[slots[j]].colour for j in known])
        d2 = np.minimum(self.colour_d2(c[:, None, :], m[None, :, :]), cfg.colour_cap)
        csd = cfg.colour_camera_sd
        if csd is not None and camera:
            here = [(i, cc) for i, j in enumerate(known)
                    if (cc := getattr(self.info[slots[j]], "cam_colours", {}).get(camera)) is not None  # (snapshots)
                    and cc[3] >= cfg.colour_min_obs]
            if here:
                cols = [i for i, _ in here]
                mc = np.array([cc[:3] for _, cc in here])
                dd = c[:, None, :] - mc[None, :, :]
                d2[:, cols] = np.minimum((dd * dd) @ _inverse_variances(csd), cfg.colour_cap)
        if len(rows) == len(meas) and len(known) == len(slots):
            return d2  # (every track has a colour and every shopper's is known: the usual case)
        out = np.zeros((len(meas), len(slots)))
        out[rows] = min(3.0, cfg.colour_cap)
        out[np.ix_(rows, known)] = d2
        return out

    def _track_colours(self, camera: str, ts: float, tracks: list[TrackObs], meas: list[_Meas]) -> None:
        """Each track's colour for matching: the per-channel median of its last ``colour_track_frames``
        colours in this camera (one odd patch -- an outlier, another shirt in view -- does not move it)."""
        k = self.cfg.colour_track_frames
        if k <= 1:
            for mm in meas:
                mm.match_colour = mm.colour
            return
        mine = self.__dict__.setdefault("track_colours", {}).setdefault(camera, {})  # (older snapshots: none)
        for tid in [tid for tid, h in mine.items() if h[-1][3] < ts - 1.0]:  # tracks gone for a second
            del mine[tid]
        for t, mm in zip(tracks, meas, strict=True):
            if mm.colour is None:
                continue
            hist = mine.setdefault(t.track_id, [])
            hist.append((*mm.colour.tolist(), ts))  # (L*, a*, b*, ts)
            if len(hist) > k:
                del hist[0]
            if len(hist) < 3:  # (a median of two is their mean: no help against an odd one)
                mm.match_colour = mm.colour
            else:
                mm.match_colour = np.array([_median([h[c] for h in hist]) for c in range(3)])

    def colour_d2(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Squared colour distance in spreads (``colour_sd`` per channel), over the last axis."""
        d = a - b
        return (d * d) @ _inverse_variances(self.cfg.colour_sd)

    def _learn_colour(self, s: ShopperInfo, c: np.ndarray, camera: str = "") -> None:
        """Fold a measured colour into the shopper's running mean (and, with ``colour_camera_sd``, into the mean
        of ``camera``'s view); once it counts, an odd one (beyond the cost limit: another person's shirt in the
        patch, a flash) is left out."""
        cfg = self.cfg
        l0, a0, b0 = c.tolist()
        if s.colour is None or s.colour_n == 0:
            s.colour, s.colour_n = c.copy(), 1
        else:
            (l1, a1, b1), (sl, sa, sb) = s.colour.tolist(), cfg.colour_sd
            odd = ((l0 - l1) / sl) ** 2 + ((a0 - a1) / sa) ** 2 + ((b0 - b1) / sb) ** 2 > cfg.colour_cap
            if odd and s.colour_n >= cfg.colour_min_obs:
                return
            n = s.colour_n = min(s.colour_n + 1, cfg.colour_memory)
            s.colour = np.array((l1 + (l0 - l1) / n, a1 + (a0 - a1) / n, b1 + (b0 - b1) / n))  # (floats: cheaper)
            if s.entry_colour is None and s.colour_n >= cfg.colour_min_obs:
                s.entry_colour = s.colour.copy()
        if camera and cfg.colour_camera_sd is not None:
            cams = s.__dict__.setdefault("cam_colours", {})  # (a shopper from an older snapshot has none yet)
            cc = cams.get(camera)
            if cc is None:
                cams[camera] = [l0, a0, b0, 1]
            else:
                k = cc[3] = min(cc[3] + 1, cfg.colour_memory)
                cc[0] += (l0 - cc[0]) / k
                cc[1] += (a0 - cc[1]) / k
                cc[2] += (b0 - cc[2]) / k

    def _spawn(self, ts: float, mm: _Meas, origin: str) -> int:
        slot = len(self.info)
        sid = f"s{self._next}"
        self._next += 1
        m = np.array([mm.floor[0], mm.floor[1], 0.0, 0.0, self.cfg.head_height_m])
        P = np.zeros((5, 5))
        P[np.ix_(_POS, _POS)] = self._init_P(mm)
        P[2, 2] = P[3, 3] = 1.0
        s = ShopperInfo(sid, ts, origin, t=ts, seen=ts, m=m, P=P)
        self.info.append(s)
        self._by_id[sid] = slot
        self._live.append(slot)
        log.debug("new shopper %s at (%.2f, %.2f) origin=%s", sid, m[0], m[1], origin)
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

    def vanish(self, s: ShopperInfo) -> str:
        """Retire a shopper lost away from the exit who never came back: gone unseen since ``s.seen``."""
        s.vanished = True
        return self._retire(s, s.seen)

    def lost(self) -> list[ShopperInfo]:
        return [self.info[i] for i in self._live if self.info[i].state == LOST]

    def retire(self, slot: int, ts: float) -> str:
        return self._retire(self.info[slot], ts)

    def forget(self, before: float, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Drop the shoppers who left before ``before`` (except the ids in ``keep``: those a visit not yet
        settled still needs); returns how many.  Slots are renumbered."""
        stay = [s for s in self.info
                if s.state != LEFT or s.exited_t >= before or s.id in keep]  # LEFT: exited_t is set
        if len(stay) == len(self.info):
            return 0
        new_slot = {self._by_id[s.id]: k for k, s in enumerate(stay)}
        gone = len(self.info) - len(stay)
        self._prior = None  # its slots are renumbered
        self.info = stay
        self._by_id = {s.id: k for k, s in enumerate(stay)}
        self._live = [new_slot[k] for k in self._live]  # live shoppers never leave the list
        self.links = {cam: {tid: new_slot[k] for tid, k in links.items() if k in new_slot}
                      for cam, links in self.links.items()}
        return gone

    def prune(self, now: float) -> None:
        """Drop history older than the configured span (positions and wrists)."""
        horizon = now - self.cfg.history_s
        for inf in self.info:  # both are in time order: cut at the first entry inside the horizon
            if inf.path and inf.path[0][0] < horizon:
                del inf.path[:bisect_left(inf.path, horizon, key=_time_of)]
            if inf.wrists and inf.wrists[0][0] < horizon:
                del inf.wrists[:bisect_left(inf.wrists, horizon, key=_time_of)]
            if inf.heights and inf.heights[0][0] < horizon:
                del inf.heights[:bisect_left(inf.heights, horizon, key=_time_of)]
