"""Floor tracking across cameras: each camera's tracks become global shoppers in the store frame.

``FloorTracker.update(camera, ts, tracks)`` takes one camera frame's tracks (floor position and covariance,
wrist and head rays) and returns the shopper id each track was given.  Every shopper is a constant-velocity
Kalman filter on the floor; a camera's tracks are matched to shoppers by Mahalanobis distance with the
published covariances (one-to-one within a camera frame, so two people side by side are never merged),
preferring the shopper a (camera, track id) was linked to before (hand-off between cameras keeps one id).
Shoppers appear only near an entry gate; a track elsewhere first tries to recover a lost shopper (one not
seen for a while) within a radius that grows with the time lost, and only then becomes an unknown shopper.
A shopper whose filtered position enters an exit region has left.

State lives in numpy arrays indexed by shopper slot, so a frame costs a few vectorised operations whatever the
number of shoppers.
"""

from __future__ import annotations

import logging
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


@dataclass
class ShopperInfo:
    id: str
    created_t: float
    origin: str  # "gate" or "unknown"
    visit: str | None = None
    exited_t: float | None = None
    # positions (t, x, y) and wrist observations (t, camera, side, ox, oy, oz, dx, dy, dz, conf)
    path: list[tuple[float, float, float]] = field(default_factory=list)
    wrists: list[tuple] = field(default_factory=list)
    cameras: set[str] = field(default_factory=set)


def _assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of rows to columns (as ``scipy.optimize.linear_sum_assignment``): a direct
    answer for one row or one column (the common camera frame), scipy otherwise."""
    m, n = cost.shape
    if m == 1:
        j = int(np.argmin(cost[0]))
        return np.array([0]), np.array([j])
    if n == 1:
        i = int(np.argmin(cost[:, 0]))
        return np.array([i]), np.array([0])
    return linear_sum_assignment(cost)


class FloorTracker:
    def __init__(self, store: Store, config: FloorConfig | None = None):
        self.cfg = config or FloorConfig()
        self.gates = [g.region for g in store.gates]
        self.exits = [e.region for e in store.exits]
        # region bounds as arrays (k, 2): the per-frame checks run on all shoppers at once
        self._exit_lo = np.array([e.min for e in self.exits], float).reshape(-1, 2)
        self._exit_hi = np.array([e.max for e in self.exits], float).reshape(-1, 2)
        self.size = np.asarray(store.store.size, float)
        self.X = np.zeros((0, 4))  # x, y, vx, vy
        self.P = np.zeros((0, 4, 4))
        self.t = np.zeros(0)  # time of each shopper's state
        self.seen = np.zeros(0)  # last time a camera saw the shopper
        self.state = np.zeros(0, dtype=np.int8)
        self.info: list[ShopperInfo] = []
        self.links: dict[tuple[str, int], int] = {}
        self._next = 1
        self.now = 0.0

    # ------------------------------------------------------------------------------------------- queries
    def shopper(self, sid: str) -> ShopperInfo:
        return self.info[self.index(sid)]

    def index(self, sid: str) -> int:
        for i, inf in enumerate(self.info):
            if inf.id == sid:
                return i
        raise KeyError(sid)

    def present(self) -> list[int]:
        return [int(i) for i in np.nonzero(self.state != LEFT)[0]]

    def position(self, i: int) -> np.ndarray:
        return self.X[i, :2].copy()

    # ------------------------------------------------------------------------------------------- kalman
    def _predict(self, ts: float, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (X, P) of shoppers ``idx`` at time ``ts`` (not stored).

        Constant velocity: ``P' = F P F^T + Q`` with ``F = I + dt (e0 e2^T + e1 e3^T)``, written out (adding
        ``dt`` times the velocity rows, then columns) instead of batched 4x4 products; ``Q`` is the
        continuous white-noise acceleration per axis."""
        if idx is None:
            idx = np.arange(len(self.t))
        dt = np.maximum(ts - self.t[idx], 0.0)
        X = self.X[idx]  # fancy indexing copies
        X[:, 0] += X[:, 2] * dt
        X[:, 1] += X[:, 3] * dt
        P = self.P[idx]
        col = dt[:, None]
        P[:, 0, :] += col * P[:, 2, :]
        P[:, 1, :] += col * P[:, 3, :]
        P[:, :, 0] += col * P[:, :, 2]
        P[:, :, 1] += col * P[:, :, 3]
        q = self.cfg.process_noise ** 2
        qdt, qdt2, qdt3 = dt * q, dt * dt / 2 * q, dt ** 3 / 3 * q
        for a, b in ((0, 2), (1, 3)):
            P[:, a, a] += qdt3
            P[:, a, b] += qdt2
            P[:, b, a] += qdt2
            P[:, b, b] += qdt
        return X, P

    def _spawn(self, ts: float, z: np.ndarray, R: np.ndarray, origin: str) -> int:
        i = len(self.t)
        sid = f"s{self._next}"
        self._next += 1
        P0 = np.zeros((4, 4))
        P0[:2, :2] = R
        P0[2, 2] = P0[3, 3] = 1.0
        self.X = np.vstack([self.X, [[z[0], z[1], 0.0, 0.0]]])
        self.P = np.concatenate([self.P, P0[None]])
        self.t = np.append(self.t, ts)
        self.seen = np.append(self.seen, ts)
        self.state = np.append(self.state, np.int8(ACTIVE))
        self.info.append(ShopperInfo(sid, ts, origin))
        log.debug("new shopper %s at (%.2f, %.2f) origin=%s", sid, z[0], z[1], origin)
        return i

    def _near_gate(self, xy: np.ndarray) -> bool:
        m = self.cfg.spawn_margin_m
        return any(
            g.min[0] - m <= xy[0] <= g.max[0] + m and g.min[1] - m <= xy[1] <= g.max[1] + m for g in self.gates
        )

    def _exit_distance(self, xy: np.ndarray) -> float:
        d = [float(np.hypot(*np.maximum(np.maximum(np.asarray(e.min) - xy, xy - np.asarray(e.max)), 0.0)))
             for e in self.exits]
        return min(d) if d else np.inf

    def _in_exit(self, xy: np.ndarray) -> bool:
        return bool(self._in_exits(np.asarray(xy, float).reshape(1, 2))[0])

    def _in_exits(self, xy: np.ndarray) -> np.ndarray:
        """For each row of ``xy`` (n, 2): inside any exit region (bounds included)."""
        inside = (xy[:, None, :] >= self._exit_lo[None]) & (xy[:, None, :] <= self._exit_hi[None])
        return inside.all(axis=2).any(axis=1)

    # ------------------------------------------------------------------------------------------- update
    def update(self, camera: str, ts: float, tracks: list[TrackObs]) -> dict[int, str]:
        """Fold one camera frame into the shoppers; returns {track id: shopper id} for the tracks used."""
        self.now = max(self.now, ts)
        cfg = self.cfg
        live = np.nonzero(self.state != LEFT)[0]
        # mark shoppers not seen for a while as lost (by anyone)
        lost_now = live[(self.state[live] == ACTIVE) & (ts - self.seen[live] > cfg.lost_after_s)]
        self.state[lost_now] = LOST
        for s in lost_now:  # lost at the door: walked out where the cameras stop
            if self._exit_distance(self.X[s, :2]) <= cfg.exit_margin_m:
                self.retire(int(s), float(self.seen[s]))
        seen_tids = {t.track_id for t in tracks}
        for key in [k for k in self.links if k[0] == camera and k[1] not in seen_tids]:
            del self.links[key]
        if not tracks:
            return {}

        m = len(tracks)
        z = np.array([t.floor for t in tracks], float)
        cov = np.array([t.cov for t in tracks], float)
        R = np.zeros((m, 2, 2))
        R[:, 0, 0] = cov[:, 0] + cfg.min_meas_sd ** 2
        R[:, 1, 1] = cov[:, 2] + cfg.min_meas_sd ** 2
        R[:, 0, 1] = R[:, 1, 0] = cov[:, 1]

        assigned: dict[int, int] = {}  # track row -> shopper slot
        if live.size:
            Xp, Pp = self._predict(ts, live)
            S = Pp[None, :, :2, :2] + R[:, None]  # (m, n, 2, 2)
            d = z[:, None, :] - Xp[None, :, :2]
            a, b, c = S[..., 0, 0], S[..., 0, 1], S[..., 1, 1]
            det = a * c - b * b
            d2 = (c * d[..., 0] ** 2 - 2 * b * d[..., 0] * d[..., 1] + a * d[..., 1] ** 2) / det
            cost = np.where(d2 < cfg.gate_chi2, d2, _BIG)
            pos = {int(s): j for j, s in enumerate(live)}
            linked = np.zeros_like(cost, dtype=bool)
            for r, t in enumerate(tracks):
                slot = self.links.get((camera, t.track_id))
                if slot is not None and slot in pos:
                    j = pos[slot]
                    linked[r, j] = True
                    if d2[r, j] < cfg.link_gate_chi2:
                        cost[r, j] = d2[r, j] * cfg.link_bonus
            # lost shoppers may only be matched through their link or by recovery below
            lost_cols = self.state[live] == LOST
            if lost_cols.any():
                cost[:, lost_cols] = np.where(linked[:, lost_cols], cost[:, lost_cols], _BIG)
            rows, cols = _assign(cost)
            for r, j in zip(rows, cols, strict=True):
                if cost[r, j] < _BIG:
                    assigned[int(r)] = int(live[j])

        # unmatched tracks: same shopper seen by this camera for the first time, a lost one, or a new one
        taken = set(assigned.values())
        claims: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for r in range(m):
            if r in assigned:
                continue
            if claims is None:
                claims = self._claim_candidates(ts)
            slot = self._claim(z[r], taken, claims)
            if slot is None:
                origin = "gate" if self._near_gate(z[r]) else "unknown"
                if self._in_exit(z[r]):
                    continue  # someone outside the exit or walking out: not a shopper to track
                slot = self._spawn(ts, z[r], R[r], origin)
            assigned[r] = slot
            taken.add(slot)

        out: dict[int, str] = {}
        slots = np.array([assigned[r] for r in sorted(assigned)], int)
        rows = np.array(sorted(assigned), int)
        if slots.size:
            Xp, Pp = self._predict(ts, slots)
            S = Pp[:, :2, :2] + R[rows]
            Sinv = np.linalg.inv(S)
            K = Pp[:, :, :2] @ Sinv  # (k, 4, 2)
            innov = z[rows] - Xp[:, :2]
            Xn = Xp + np.einsum("kij,kj->ki", K, innov)
            Pn = Pp - K @ Pp[:, :2, :]
            speed = np.hypot(Xn[:, 2], Xn[:, 3])
            over = speed > cfg.max_speed_mps
            Xn[over, 2:] *= (cfg.max_speed_mps / speed[over])[:, None]
            self.X[slots], self.P[slots], self.t[slots], self.seen[slots] = Xn, Pn, ts, ts
            self.state[slots] = ACTIVE
            for r, s in zip(rows, slots, strict=True):
                t = tracks[r]
                inf = self.info[s]
                self.links[(camera, t.track_id)] = int(s)
                inf.path.append((ts, float(self.X[s, 0]), float(self.X[s, 1])))
                inf.cameras.add(camera)
                for side, o, dvec, conf in t.wrists:
                    inf.wrists.append((ts, camera, side, *map(float, o), *map(float, dvec), float(conf)))
                out[t.track_id] = inf.id
        self._check_exits(ts)
        return out

    def _claim_candidates(self, ts: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shoppers an unmatched track may belong to at ``ts``: slots, predicted positions and the radius
        within which each claims a track (the recovery radius of a lost one grows with the time lost)."""
        cfg = self.cfg
        idx = np.nonzero(self.state != LEFT)[0]
        if not idx.size:
            return idx, np.zeros((0, 2)), np.zeros(0)
        Xp, _ = self._predict(ts, idx)
        radius = np.where(self.state[idx] == LOST,
                          cfg.recover_radius_m + cfg.recover_speed_mps * (ts - self.seen[idx]),
                          cfg.dedupe_radius_m)
        return idx, Xp[:, :2], radius

    def _claim(self, z: np.ndarray, taken: set[int],
               candidates: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int | None:
        """A shopper this unmatched track should belong to: one close by that this camera does not see
        right now (a hand-off), or a lost one within the recovery radius; the nearest, the first on ties."""
        idx, xy, radius = candidates
        if not idx.size:
            return None
        d = np.hypot(xy[:, 0] - z[0], xy[:, 1] - z[1])
        ok = d < radius
        if taken:
            ok &= ~np.isin(idx, np.fromiter(taken, int, len(taken)))
        if not ok.any():
            return None
        j = int(np.argmin(np.where(ok, d, np.inf)))
        return int(idx[j])

    def _check_exits(self, ts: float) -> None:
        idx = np.nonzero(self.state != LEFT)[0]
        if not idx.size:
            return
        for s in idx[self._in_exits(self.X[idx, :2])]:
            self.retire(int(s), ts)

    def retire(self, s: int, ts: float) -> None:
        self.state[s] = LEFT
        self.info[s].exited_t = ts
        for key in [k for k, v in self.links.items() if v == s]:
            del self.links[key]

    def prune(self, now: float) -> None:
        """Drop history older than the configured span (positions and wrists)."""
        horizon = now - self.cfg.history_s
        for inf in self.info:
            if inf.path and inf.path[0][0] < horizon:
                inf.path = [p for p in inf.path if p[0] >= horizon]
            if inf.wrists and inf.wrists[0][0] < horizon:
                inf.wrists = [w for w in inf.wrists if w[0] >= horizon]
