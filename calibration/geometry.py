"""Store geometry: lanes, shelves and shelf units as 3D boxes, gates and exits as floor regions, and the
vectorised tests fusion needs on them.

A wrist seen by a camera is a ray; its closest approach to each lane's box decides "whose hand" took the
goods, so these functions are exact (no sampling) and vectorised over points/rays and boxes alike: ``N``
points or rays against ``M`` boxes give ``(N, M)`` arrays, with no Python loop over either.

Boxes are the store description's :class:`calibration.store.Box`: axis-aligned between ``min`` and ``max``,
then turned by ``yaw_deg`` about the vertical axis through their centre.  Every test works in each box's own
frame (centre at the origin, axes along the box), where the box is ``|x| <= half`` per axis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calibration.store import Box, Region, Store

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- containers
@dataclass(frozen=True)
class Boxes:
    """``M`` yawed boxes: ``center`` ``(M, 3)``, ``half`` sizes ``(M, 3)`` (all > 0), ``yaw`` ``(M,)`` radians
    and one id per box."""

    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        c = np.asarray(self.center, float).reshape(-1, 3)
        h = np.asarray(self.half, float).reshape(-1, 3)
        y = np.asarray(self.yaw, float).reshape(-1)
        if not (len(c) == len(h) == len(y) == len(self.ids)):
            raise ValueError("Boxes: center, half, yaw and ids must have the same length")
        finite = np.all(np.isfinite(c)) and np.all(np.isfinite(h)) and np.all(np.isfinite(y))
        if np.any(h <= 0) or not finite:
            raise ValueError("Boxes: half sizes must be positive and every value finite")
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "half", h)
        object.__setattr__(self, "yaw", y)
        object.__setattr__(self, "ids", tuple(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_boxes(cls, boxes: Sequence[Box], ids: Sequence[str] | None = None) -> Boxes:
        ids = tuple(ids) if ids is not None else tuple(str(i) for i in range(len(boxes)))
        if not boxes:
            return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), ids)
        return cls(np.array([b.center for b in boxes]), np.array([b.half_size for b in boxes]),
                   np.radians([b.yaw_deg for b in boxes]), ids)

    def index(self, box_id: str) -> int:
        return self.ids.index(box_id)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Store-frame points ``(N, 3)`` in every box's frame: ``(N, M, 3)``."""
        p = np.asarray(points, float).reshape(-1, 3)
        d = p[:, None, :] - self.center[None, :, :]
        return _rotate_z(d, -self.yaw)

    def dirs_to_local(self, dirs: np.ndarray) -> np.ndarray:
        """Store-frame directions ``(N, 3)`` in every box's frame: ``(N, M, 3)``."""
        d = np.asarray(dirs, float).reshape(-1, 3)
        return _rotate_z(np.broadcast_to(d[:, None, :], (len(d), len(self), 3)), -self.yaw)

    def corners(self) -> np.ndarray:
        """The 8 corners of every box, ``(M, 8, 3)`` (same order as :meth:`Box.corners`)."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        local = signs[None, :, :] * self.half[:, None, :]
        return _rotate_z(local, self.yaw[:, None]) + self.center[:, None, :]


def _rotate_z(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate vectors ``(..., 3)`` about z by ``angle`` (broadcast against ``v[..., 0]``)."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = v[..., 0], v[..., 1]
    return np.stack([c * x - s * y, s * x + c * y, v[..., 2]], axis=-1)


@dataclass(frozen=True)
class FloorRegions:
    """``M`` axis-aligned floor rectangles: ``lo``, ``hi`` ``(M, 2)`` and an id each."""

    lo: np.ndarray
    hi: np.ndarray
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        lo = np.asarray(self.lo, float).reshape(-1, 2)
        hi = np.asarray(self.hi, float).reshape(-1, 2)
        if not (len(lo) == len(hi) == len(self.ids)) or np.any(hi < lo):
            raise ValueError("FloorRegions: lo, hi and ids must match and hi >= lo")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "ids", tuple(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_regions(cls, regions: Sequence[Region], ids: Sequence[str]) -> FloorRegions:
        if not regions:
            return cls(np.zeros((0, 2)), np.zeros((0, 2)), tuple(ids))
        return cls(np.array([r.min for r in regions]), np.array([r.max for r in regions]), tuple(ids))


# ---------------------------------------------------------------------------------------------- boxes
def points_in_boxes(points: np.ndarray, boxes: Boxes, tol: float = 0.0) -> np.ndarray:
    """``(N, M)`` bool: point ``n`` lies in box ``m`` (the surface counts; ``tol`` grows every box)."""
    local = boxes.to_local(points)
    return np.all(np.abs(local) <= boxes.half[None, :, :] + tol, axis=2)


def point_box_distance(points: np.ndarray, boxes: Boxes) -> np.ndarray:
    """``(N, M)`` Euclidean distance from every point to every box; 0 inside."""
    local = boxes.to_local(points)
    q = np.maximum(np.abs(local) - boxes.half[None, :, :], 0.0)
    return np.sqrt(np.sum(q * q, axis=2))


def ray_box_distance(origins: np.ndarray, dirs: np.ndarray, boxes: Boxes,
                     t_min: float = 0.0, t_max: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Closest approach of every ray ``origin + t * dir`` (``t_min <= t <= t_max``) to every box.

    Returns ``(dist, t)``, both ``(N, M)``: the smallest distance between a point of the ray and the box
    (0 if the ray passes through it), and the ray parameter where it is reached (for a ray that passes
    through: where it enters the box, or ``t_min`` if it starts inside).  ``dirs`` need not be unit
    vectors; ``t`` is in units of their length (metres for unit directions).

    Exact: the squared distance to a box is a convex, piecewise-quadratic, continuously differentiable
    function of ``t`` whose pieces change only where the ray crosses one of the six face planes, so its
    derivative is piecewise linear and non-decreasing; the minimiser is found by locating the piece where
    the derivative changes sign and solving the linear equation there.
    """
    o = np.asarray(origins, float).reshape(-1, 3)
    d = np.asarray(dirs, float).reshape(-1, 3)
    if len(o) != len(d):
        raise ValueError("ray_box_distance: origins and dirs must have the same length")
    if not t_max > t_min:
        raise ValueError("ray_box_distance: t_max must be greater than t_min")
    n, m = len(o), len(boxes)
    if n == 0 or m == 0:
        return np.zeros((n, m)), np.zeros((n, m))
    lo_ = boxes.to_local(o).reshape(-1, 3)                  # every (ray, box) pair in the box's frame
    ld = boxes.dirs_to_local(d).reshape(-1, 3)
    h = np.broadcast_to(boxes.half[None, :, :], (n, m, 3)).reshape(-1, 3)
    dist = np.empty(n * m)
    t = np.empty(n * m)
    for a in range(0, n * m, _PAIR_CHUNK):      # chunks keep the temporaries in cache
        b = min(a + _PAIR_CHUNK, n * m)
        dist[a:b], t[a:b] = _ray_box_pairs(lo_[a:b], ld[a:b], h[a:b], t_min, t_max)
    return dist.reshape(n, m), t.reshape(n, m)


_PAIR_CHUNK = 8192


def _ray_box_pairs(o: np.ndarray, d: np.ndarray, h: np.ndarray, t_min: float, t_max: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ray_box_distance` for ``P`` rays already in their box's frame (box = ``|x| <= h``)."""
    p = len(o)

    def excess_at(t: np.ndarray) -> np.ndarray:
        """Signed amount by which the ray point at ``t`` ``(P, K)`` is outside each slab, ``(P, K, 3)``."""
        x = o[:, None, :] + t[..., None] * d[:, None, :]
        hh = h[:, None, :]
        return x - np.clip(x, -hh, hh)

    # candidates: t_min, the crossings of the 6 face planes (clipped to [t_min, t_max]) and t_max
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cross = np.concatenate([(h - o) / d, (-h - o) / d], axis=1)         # (P, 6)
    cross = np.where(np.isfinite(cross), cross, t_min)
    parts = [np.full((p, 1), t_min), np.clip(cross, t_min, t_max)]
    if np.isfinite(t_max):
        parts.append(np.full((p, 1), t_max))
    cand = np.concatenate(parts, axis=1)
    cand.sort(axis=1)
    ex = excess_at(cand)                                                     # (P, K, 3)
    g = np.einsum("pki,pi->pk", ex, d)   # d/dt of half the squared distance at each candidate
    last = cand.shape[1]
    # a ray that gets into the box does so at a candidate (t_min or a face crossing): the first such wins
    tol = 1e-12 * (1.0 + np.abs(o).max(axis=1) + h.max(axis=1))
    inside = np.max(np.abs(ex), axis=2) <= tol[:, None]
    enters = inside.any(axis=1)
    nonneg = g >= 0
    k = np.where(nonneg.any(axis=1), nonneg.argmax(axis=1), last)            # first candidate with g >= 0
    k = np.where(enters, inside.argmax(axis=1), k)

    t_star = np.full(p, float(t_min))
    t_star[enters] = cand[enters, k[enters]]
    mid = np.nonzero(~enters & (k > 0) & (k < last))[0]
    if mid.size:
        kk = k[mid]
        t0, t1 = cand[mid, kk - 1], cand[mid, kk]
        g0, g1 = g[mid, kk - 1], g[mid, kk]
        denom = g1 - g0                                                      # > 0 since g0 < 0 <= g1
        t_star[mid] = t0 + np.clip(-g0 / np.where(denom > 0, denom, 1.0), 0.0, 1.0) * (t1 - t0)
    beyond = np.nonzero(~enters & (k == last))[0]
    if beyond.size:
        if np.isfinite(t_max):
            t_star[beyond] = t_max          # still approaching at the far end
        else:
            # past the last face crossing the set of violated faces is fixed, so the derivative is linear
            t_last, g_last = cand[beyond, -1], g[beyond, -1]
            x_after = o[beyond] + (t_last + 1.0)[:, None] * d[beyond]
            active = np.abs(x_after) > h[beyond]
            rate = np.sum(np.where(active, d[beyond] ** 2, 0.0), axis=1)
            step = np.where(rate > 0, -g_last / np.where(rate > 0, rate, 1.0), 0.0)
            t_star[beyond] = t_last + np.maximum(step, 0.0)
    x = o + t_star[:, None] * d
    q = np.abs(x) - h
    np.maximum(q, 0.0, out=q)
    dist = np.sqrt(np.sum(q * q, axis=1))
    dist[enters] = 0.0
    return dist, t_star


def floor_box_distance(xy: np.ndarray, boxes: Boxes) -> np.ndarray:
    """``(N, M)`` distance on the floor from points ``(N, 2)`` to every box's footprint; 0 on it."""
    p = np.asarray(xy, float).reshape(-1, 2)
    local = boxes.to_local(np.concatenate([p, np.zeros((len(p), 1))], axis=1))[..., :2]
    q = np.maximum(np.abs(local) - boxes.half[None, :, :2], 0.0)
    return np.sqrt(np.sum(q * q, axis=2))


# ---------------------------------------------------------------------------------------------- floor regions
def points_in_regions(xy: np.ndarray, regions: FloorRegions) -> np.ndarray:
    """``(N, M)`` bool: floor point ``n`` lies in region ``m`` (edges included)."""
    p = np.asarray(xy, float).reshape(-1, 2)[:, None, :]
    return np.all((p >= regions.lo[None]) & (p <= regions.hi[None]), axis=2)


def point_region_distance(xy: np.ndarray, regions: FloorRegions) -> np.ndarray:
    """``(N, M)`` distance from floor points to every region; 0 inside."""
    p = np.asarray(xy, float).reshape(-1, 2)[:, None, :]
    q = np.maximum(np.maximum(regions.lo[None] - p, p - regions.hi[None]), 0.0)
    return np.sqrt(np.sum(q * q, axis=2))


# ---------------------------------------------------------------------------------------------- the store
@dataclass(frozen=True)
class StoreGeometry:
    """The store's regions ready for vectorised tests: lanes, shelves and shelf units as boxes, gates and
    exits as floor regions.  A shelf's box encloses its lanes (in the lanes' frame when they share one yaw,
    else axis-aligned); a shelf unit's box encloses its shelves the same way."""

    lanes: Boxes
    shelves: Boxes
    units: Boxes
    gates: FloorRegions
    exits: FloorRegions
    lane_shelf: tuple[int, ...]   # index into ``shelves`` for every lane
    shelf_unit: tuple[int, ...]   # index into ``units`` for every shelf

    @classmethod
    def from_store(cls, store: Store) -> StoreGeometry:
        lane_boxes, lane_ids, lane_shelf = [], [], []
        shelf_boxes, shelf_ids, shelf_unit = [], [], []
        unit_boxes, unit_ids = [], []
        for ui, unit in enumerate(store.shelf_units):
            unit_parts = []
            for shelf in unit.shelves:
                boxes = [ln.box for ln in shelf.lanes]
                lane_boxes.extend(boxes)
                lane_ids.extend(ln.id for ln in shelf.lanes)
                lane_shelf.extend([len(shelf_ids)] * len(boxes))
                enclosing = enclose(boxes)
                shelf_boxes.append(enclosing)
                shelf_ids.append(shelf.id)
                shelf_unit.append(ui)
                unit_parts.append(enclosing)
            unit_boxes.append(enclose(unit_parts))
            unit_ids.append(unit.id)
        return cls(
            lanes=Boxes.from_boxes(lane_boxes, lane_ids),
            shelves=Boxes.from_boxes(shelf_boxes, shelf_ids),
            units=Boxes.from_boxes(unit_boxes, unit_ids),
            gates=FloorRegions.from_regions([g.region for g in store.gates], [g.id for g in store.gates]),
            exits=FloorRegions.from_regions([e.region for e in store.exits], [e.id for e in store.exits]),
            lane_shelf=tuple(lane_shelf),
            shelf_unit=tuple(shelf_unit),
        )


def enclose(boxes: Sequence[Box]) -> Box:
    """The smallest box around ``boxes`` in their common yaw (axis-aligned when their yaws differ)."""
    if not boxes:
        raise ValueError("enclose: no boxes")
    yaws = {round(b.yaw_deg % 90.0, 9) for b in boxes}
    yaw = boxes[0].yaw_deg if len(yaws) == 1 else 0.0
    corners = np.concatenate([b.corners() for b in boxes])
    a = np.radians(yaw)
    local = _rotate_z(corners, -a)
    lo, hi = local.min(axis=0), local.max(axis=0)
    center_local = (lo + hi) / 2
    center = _rotate_z(center_local, a)
    half = (hi - lo) / 2
    return Box(min=tuple(float(v) for v in center - half), max=tuple(float(v) for v in center + half),
               yaw_deg=float(yaw))


__all__ = [
    "Boxes", "FloorRegions", "StoreGeometry", "enclose", "floor_box_distance", "point_box_distance",
    "point_region_distance", "points_in_boxes", "points_in_regions", "ray_box_distance",
]
