"""The walkable floor of any store description: a grid of free cells derived from the shelf boxes and the
walls, its clearance field, A* paths with line-of-sight smoothing, and where a shopper stands to reach a lane.

Coordinates are the store frame (metres).  The grid's cell ``(i, j)`` covers ``x = (j + 0.5) * res``,
``y = (i + 0.5) * res``.
"""

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.ndimage import distance_transform_edt

from calibration.store import Box, Lane, Store

log = logging.getLogger(__name__)

PLAN_RADIUS = 0.32  # clearance a planned path keeps from shelves and walls (the widest body plus a margin)
TIGHT_RADIUS = 0.22  # below this clearance no body fits
COMFORT_RADIUS = 0.75  # paths prefer this much room (shoppers stand within ~0.6 m of a shelf face)


@dataclass(frozen=True)
class LaneFront:
    """Where a lane faces the floor: ``front`` is the centre of its front face at floor level, ``normal`` the
    unit vector out of the face into the aisle, ``along`` the unit vector of the row (the shopper's right when
    facing the lane), ``depth`` the box's depth and ``z`` its bottom and top."""

    lane: str
    shelf: str
    index: int  # position in the shelf's row, left to right
    front: np.ndarray
    normal: np.ndarray
    along: np.ndarray
    width: float
    depth: float
    z: tuple[float, float]


def box_footprint(box: Box) -> np.ndarray:
    """The box's 4 floor corners in order around it, shape (4, 2)."""
    return box.corners()[::2, :2][[0, 1, 3, 2]]


def point_in_box(box: Box, pts: np.ndarray) -> np.ndarray:
    """Mask of points ``(N, 3)`` inside the (yawed) box."""
    pts = np.asarray(pts, float).reshape(-1, 3)
    c = box.center
    yaw = math.radians(box.yaw_deg)
    cs, sn = math.cos(yaw), math.sin(yaw)
    d = pts - c
    local = np.stack([cs * d[:, 0] + sn * d[:, 1], -sn * d[:, 0] + cs * d[:, 1], d[:, 2]], axis=1)
    return np.all(np.abs(local) <= box.half_size + 1e-9, axis=1)


class FloorMap:
    """Free floor of a store at ``res`` metres per cell."""

    def __init__(self, store: Store, res: float = 0.1):
        self.store = store
        self.res = res
        sx, sy = store.store.size
        self.nx = math.ceil(sx / res)
        self.ny = math.ceil(sy / res)
        xs = (np.arange(self.nx) + 0.5) * res
        ys = (np.arange(self.ny) + 0.5) * res
        gx, gy = np.meshgrid(xs, ys)
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        blocked = np.zeros(len(pts), bool)
        for _, _, lane in store.iter_lanes():
            blocked |= _in_polygon(pts, box_footprint(lane.box))
        self.blocked = blocked.reshape(self.ny, self.nx)
        # clearance: distance to the nearest blocked cell or wall (the grid is padded with a blocked border)
        free = np.pad(~self.blocked, 1, constant_values=False)
        dist = distance_transform_edt(free) * res
        self.clearance = dist[1:-1, 1:-1] - res / 2
        # padded with a ring of edge values and a ring of zeros: outside the floor there is no clearance
        self._padded = np.pad(np.pad(self.clearance, 1, mode="edge"), 1, constant_values=0.0)
        self._fmax = np.array([self.nx + 2.0, self.ny + 2.0])

    # ---- queries
    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        j = int(np.clip(xy[0] / self.res, 0, self.nx - 1))
        i = int(np.clip(xy[1] / self.res, 0, self.ny - 1))
        return i, j

    def clearance_at(self, xy: np.ndarray) -> np.ndarray:
        """Clearance (metres) at points ``(N, 2)``, bilinear; 0 outside the floor."""
        xy = np.asarray(xy, float).reshape(-1, 2)
        f = xy / self.res + 1.5  # +2 for the padding, -0.5 for cell centres
        f = np.minimum(np.maximum(f, 0.0), self._fmax)
        k = f.astype(np.intp)
        a = f - k
        c = self._padded
        i0, j0 = k[:, 1], k[:, 0]
        ax, ay = a[:, 0], a[:, 1]
        return ((c[i0, j0] * (1 - ax) + c[i0, j0 + 1] * ax) * (1 - ay)
                + (c[i0 + 1, j0] * (1 - ax) + c[i0 + 1, j0 + 1] * ax) * ay)

    def walkable_points(self, spacing: float = 0.25, radius: float = 0.3) -> np.ndarray:
        """Floor points ``(N, 2)`` on a grid where a body of ``radius`` fits."""
        sx, sy = self.store.store.size
        xs = np.arange(spacing / 2, sx, spacing)
        ys = np.arange(spacing / 2, sy, spacing)
        gx, gy = np.meshgrid(xs, ys)
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        return pts[self.clearance_at(pts) >= radius]

    def nearest_free(self, xy: np.ndarray, radius: float = PLAN_RADIUS) -> np.ndarray:
        """The closest cell centre to ``xy`` with at least ``radius`` clearance."""
        ok = self.clearance >= radius
        if not ok.any():
            raise ValueError("the store has no free floor")
        ii, jj = np.nonzero(ok)
        cx, cy = (jj + 0.5) * self.res, (ii + 0.5) * self.res
        k = int(np.argmin((cx - xy[0]) ** 2 + (cy - xy[1]) ** 2))
        return np.array([cx[k], cy[k]])

    # ---- paths
    def plan(self, start: np.ndarray, goal: np.ndarray, radius: float = PLAN_RADIUS,
             extra_blocked: np.ndarray | None = None) -> list[np.ndarray]:
        """A collision-free path from ``start`` to ``goal`` as smoothed waypoints (the last one is ``goal``).

        Cells with less than ``radius`` clearance are avoided where possible (they cost 8x), cells with less
        than ``TIGHT_RADIUS`` always (except the goal).  ``extra_blocked`` (a bool grid) adds
        temporary obstacles (other shoppers).  Raises ``ValueError`` when no path exists."""
        start = np.asarray(start, float)
        goal = np.asarray(goal, float)
        free = self.clearance >= radius
        if extra_blocked is not None:
            free = free & ~extra_blocked
        # tight cells (a body fits, but without the planning margin) are passable at a high cost, so a path
        # can leave a standing spot against a shelf; cells a body does not fit are impassable
        # and walking paths keep to the middle of aisles, off the strip where shoppers stand at the shelves
        comfy = 1.0 + 3.0 * np.clip(COMFORT_RADIUS - self.clearance, 0.0, None)
        cost = np.where(free, comfy, np.where(self.clearance >= TIGHT_RADIUS, 8.0, np.inf))
        if extra_blocked is not None:
            cost[extra_blocked] = np.inf
        s = self.cell(start)
        g = self.cell(goal)
        cells = _astar(cost, s, g)
        if cells is None:
            raise ValueError(f"no path from {start.round(2).tolist()} to {goal.round(2).tolist()}")
        pts = [start] + [np.array([(j + 0.5) * self.res, (i + 0.5) * self.res]) for i, j in cells[1:-1]] + [goal]
        return self._smooth(pts, self.clearance >= COMFORT_RADIUS)[1:]

    def _line_free(self, a: np.ndarray, b: np.ndarray, free: np.ndarray) -> bool:
        """The straight line from ``a`` to ``b`` stays on ``free`` cells, except within 0.9 m of either end
        (a start or a goal at a shelf lies in a tight strip) where it only has to stay passable."""
        length = float(np.linalg.norm(b - a))
        n = max(2, int(length / (self.res * 0.5)) + 1)
        ts = np.linspace(0, 1, n)
        pts = a[None] + (b - a)[None] * ts[:, None]
        j = np.clip((pts[:, 0] / self.res).astype(int), 0, self.nx - 1)
        i = np.clip((pts[:, 1] / self.res).astype(int), 0, self.ny - 1)
        near_end = np.minimum(ts, 1 - ts) * length < 0.9
        ok = np.where(near_end, self.clearance[i, j] >= TIGHT_RADIUS, free[i, j])
        return bool(np.all(ok[1:-1])) if n > 2 else True

    def _smooth(self, pts: list[np.ndarray], free: np.ndarray) -> list[np.ndarray]:
        """String pulling: keep a waypoint only where the straight line to the next kept one is blocked."""
        out = [pts[0]]
        k = 0
        while k < len(pts) - 1:
            nxt = len(pts) - 1
            while nxt > k + 1 and not self._line_free(pts[k], pts[nxt], free):
                nxt -= 1
            out.append(pts[nxt])
            k = nxt
        return out

    # ---- lanes
    @cached_property
    def lane_fronts(self) -> dict[str, LaneFront]:
        out: dict[str, LaneFront] = {}
        for shelf in self.store.shelves.values():
            centres = np.array([ln.box.center[:2] for ln in shelf.lanes])
            if len(centres) >= 2:
                row = centres[-1] - centres[0]
                row /= max(np.linalg.norm(row), 1e-9)
            else:
                row = None
            for k, ln in enumerate(shelf.lanes):
                out[ln.id] = self._front(ln, shelf.id, k, row)
        return out

    def _front(self, lane: Lane, shelf: str, index: int, row: np.ndarray | None) -> LaneFront:
        box = lane.box
        yaw = math.radians(box.yaw_deg)
        u = np.array([math.cos(yaw), math.sin(yaw)])
        v = np.array([-math.sin(yaw), math.cos(yaw)])
        half = box.half_size
        c = box.center[:2]
        # candidate normals: the box axes perpendicular to the row (or both axes if there is no row)
        cands = []
        for axis, h_n, h_a in ((u, half[0], half[1]), (v, half[1], half[0])):
            if row is not None and abs(float(axis @ row)) > 0.7:
                continue
            for sgn in (1, -1):
                cands.append((sgn * axis, h_n, h_a))
        best = None
        for normal, h_n, h_a in cands:
            probe = c + normal * (h_n + 0.55)
            score = float(self.clearance_at(probe)[0])
            if best is None or score > best[0]:
                best = (score, normal, h_n, h_a)
        _, normal, h_n, h_a = best
        along = np.array([-normal[1], normal[0]])  # right-hand side of a shopper facing the lane (-normal)
        return LaneFront(lane.id, shelf, index, c + normal * h_n, normal, along, 2 * h_a, 2 * h_n,
                         (float(box.center[2] - half[2]), float(box.center[2] + half[2])))

    def spot(self, lane: str, offset: float = 0.0, distance: float = 0.40) -> np.ndarray:
        """The floor point ``distance`` in front of the lane's face, shifted ``offset`` along the row."""
        f = self.lane_fronts[lane]
        return f.front + f.normal * distance + f.along * offset


def _in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Mask of points ``(N, 2)`` inside a convex polygon given in order (either orientation)."""
    inside_pos = np.ones(len(pts), bool)
    inside_neg = np.ones(len(pts), bool)
    for k in range(len(poly)):
        a, b = poly[k], poly[(k + 1) % len(poly)]
        cross = (b[0] - a[0]) * (pts[:, 1] - a[1]) - (b[1] - a[1]) * (pts[:, 0] - a[0])
        inside_pos &= cross >= 0
        inside_neg &= cross <= 0
    return inside_pos | inside_neg


_NEIGH = [(-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0),
          (-1, -1, math.sqrt(2)), (-1, 1, math.sqrt(2)), (1, -1, math.sqrt(2)), (1, 1, math.sqrt(2))]


def _astar(cost: np.ndarray, s: tuple[int, int], g: tuple[int, int]) -> list[tuple[int, int]] | None:
    """8-connected A* on a grid of per-cell step costs (``inf``: impassable; octile heuristic).  The goal is
    always enterable, so a path can end at a standing spot against a shelf."""
    ny, nx = cost.shape
    if s == g:
        return [s, g]
    INF = float("inf")
    gcost = np.full((ny, nx), INF)
    parent = np.full((ny, nx, 2), -1, dtype=np.int32)
    gi, gj = g

    def h(i: int, j: int) -> float:
        di, dj = abs(i - gi), abs(j - gj)
        return (di + dj) + (math.sqrt(2) - 2) * min(di, dj)

    gcost[s] = 0.0
    heap = [(h(*s), 0.0, s[0], s[1])]
    closed = np.zeros((ny, nx), bool)
    while heap:
        _, gc, i, j = heapq.heappop(heap)
        if closed[i, j]:
            continue
        closed[i, j] = True
        if (i, j) == g:
            path = [(i, j)]
            while (i, j) != s:
                i, j = (int(v) for v in parent[i, j])
                path.append((i, j))
            return path[::-1]
        for di, dj, c in _NEIGH:
            ni, nj = i + di, j + dj
            if not (0 <= ni < ny and 0 <= nj < nx) or closed[ni, nj]:
                continue
            step = 1.0 if (ni, nj) == g else cost[ni, nj]
            if step == INF:
                continue
            if di and dj and cost[i, nj] == INF and cost[ni, j] == INF:
                continue  # no corner cutting between two impassable cells
            ng = gc + c * step
            if ng < gcost[ni, nj]:
                gcost[ni, nj] = ng
                parent[ni, nj] = (i, j)
                heapq.heappush(heap, (ng + h(ni, nj), ng, ni, nj))
    return None
