"""Small ready-made scenes for the renderer's tests, benchmark and preview: a store with shelf units, ceiling
cameras (pinhole and fisheye) and posed shoppers (standing, walking, reaching into a lane).

These are not the simulator's world (that lives in the world modules and drives real behaviour); they are
fixtures that exercise the renderer without it.
"""

from __future__ import annotations

import numpy as np

from calibration.camera import Camera
from calibration.markers import MarkerLayout, grid_layout
from calibration.store import Store, store_from_dict
from sim.body import JOINTS, Appearance, Body, J, standing_skeleton


def demo_store_dict(size: tuple[float, float] = (8.0, 6.0), units: int = 2, shelves: int = 4,
                    lanes_per_shelf: int = 8, unit_length: float = 2.4, depth: float = 0.5) -> dict:
    """A store description (as a dict) with ``units`` single-sided shelf units along x, facing +y."""
    sx, sy = size
    lane_w = unit_length / lanes_per_shelf
    catalogue, shelf_units = [], []
    sku_n = 0
    for u in range(units):
        x0 = 1.2 + (u % 2) * (unit_length + 1.0)
        y0 = 0.6 + (u // 2) * 2.6
        unit_shelves = []
        for s in range(shelves):
            z0 = 0.15 + s * 0.42
            lanes = []
            for k in range(lanes_per_shelf):
                sku = f"SKU{sku_n:03d}"
                catalogue.append({"sku": sku, "name": f"Product {sku_n}", "price": 100 + 10 * sku_n,
                                  "weight_g": 200.0 + 15 * sku_n})
                sku_n += 1
                lanes.append({"id": f"U{u}S{s}L{k}", "sku": sku,
                              "box": {"min": [x0 + k * lane_w, y0, z0],
                                      "max": [x0 + (k + 1) * lane_w, y0 + depth, z0 + 0.22 + 0.04 * (k % 3)]}})
            unit_shelves.append({"id": f"U{u}S{s}", "lanes": lanes})
        shelf_units.append({"id": f"U{u}", "shelves": unit_shelves})
    return {
        "store": {"id": "demo", "size": [sx, sy], "ceiling_m": 3.2},
        "catalogue": catalogue,
        "shelf_units": shelf_units,
        "gates": [{"id": "G1", "region": {"min": [sx - 1.6, 0.2], "max": [sx - 0.4, 1.2]}}],
        "exits": [{"id": "E1", "region": {"min": [sx - 1.6, sy - 1.2], "max": [sx - 0.4, sy - 0.2]}}],
    }


def demo_store(**kw) -> Store:
    return store_from_dict(demo_store_dict(**kw))


def demo_markers(store: Store, spacing: float = 1.5) -> MarkerLayout:
    return grid_layout(store.store.size, spacing=spacing)


def pinhole_K(width: int, height: int, hfov_deg: float) -> np.ndarray:
    f = width / 2 / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])


def fisheye_K(width: int, height: int, fov_deg: float = 180.0) -> np.ndarray:
    """An (about) equidistant fisheye whose ``fov_deg`` image circle fits the image height."""
    f = (height / 2) / np.radians(fov_deg / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])


def demo_cameras(store: Store, size: tuple[int, int] = (640, 480), height: float = 3.0) -> dict[str, Camera]:
    """Four ceiling cameras: three tilted pinholes (one with barrel distortion) and a central fisheye."""
    sx, sy = store.store.size
    w, h = size
    K = pinhole_K(w, h, 80)
    cams = [
        Camera.look_at("cam_pinhole_a", "pinhole", size, K, [], (sx * 0.2, sy * 0.85, height),
                       (sx * 0.35, sy * 0.4, 0.0), up=(0, 1, 0)),
        Camera.look_at("cam_pinhole_b", "pinhole", size, K, [-0.12, 0.02, 0, 0, 0], (sx * 0.8, sy * 0.9, height),
                       (sx * 0.6, sy * 0.35, 0.0), up=(0, 1, 0)),
        Camera.look_at("cam_pinhole_c", "pinhole", size, pinhole_K(w, h, 95), [], (sx * 0.5, sy * 0.1, height),
                       (sx * 0.5, sy * 0.6, 0.0), up=(0, 1, 0)),
        Camera.look_at("cam_fisheye", "fisheye", size, fisheye_K(w, h, 185), [0.02, -0.005, 0.0, 0.0],
                       (sx * 0.5, sy * 0.5, height), (sx * 0.5, sy * 0.5, 0.0), up=(0, 1, 0)),
    ]
    return {c.id: c for c in cams}


# ------------------------------------------------------------------------------------------------ poses
def reach(joints: np.ndarray, side: str, target: np.ndarray, upper: float = 0.30, fore: float = 0.28
          ) -> np.ndarray:
    """Bend the ``side`` ('l'/'r') arm so the wrist reaches ``target`` (or as far toward it as it can)."""
    j = joints.copy()
    sh = j[J[side + "shoulder"]]
    v = np.asarray(target, float) - sh
    dist = float(np.linalg.norm(v))
    u = v / max(dist, 1e-9)
    dist = min(dist, (upper + fore) * 0.995)
    wrist = sh + u * dist
    # elbow: in the plane of the arm and the vertical, bent downward
    a = (upper ** 2 - fore ** 2 + dist ** 2) / (2 * dist)
    hgt = np.sqrt(max(upper ** 2 - a ** 2, 0.0))
    down = np.array([0.0, 0.0, -1.0]) - u * (-u[2])
    down /= max(np.linalg.norm(down), 1e-9)
    j[J[side + "elbow"]] = sh + u * a + down * hgt
    j[J[side + "wrist"]] = wrist
    return j


def walking(joints: np.ndarray, phase: float, heading: float, stride: float = 0.25) -> np.ndarray:
    """Swing legs and arms of a standing skeleton by ``phase`` (radians)."""
    j = joints.copy()
    f = np.array([np.cos(heading), np.sin(heading), 0.0])
    for side, sgn in (("l", 1.0), ("r", -1.0)):
        sw = sgn * np.sin(phase) * stride
        j[J[side + "knee"]] += f * sw * 0.5
        j[J[side + "ankle"]] += f * sw
        j[J[side + "elbow"]] -= f * sw * 0.3
        j[J[side + "wrist"]] -= f * sw * 0.6
    return j


def random_appearance(rng: np.random.Generator) -> Appearance:
    def colour(lo=20, hi=235):
        return tuple(int(v) for v in rng.integers(lo, hi, 3))

    skins = ((90, 120, 170), (120, 150, 190), (60, 85, 125), (150, 175, 215), (45, 60, 90))
    hairs = ((20, 20, 25), (30, 50, 80), (120, 150, 180), (200, 200, 200), (40, 40, 60))
    s = rng.uniform(0.85, 1.15)
    return Appearance(shirt=colour(), trousers=colour(10, 160), skin=skins[int(rng.integers(len(skins)))],
                      hair=hairs[int(rng.integers(len(hairs)))], head_radius=0.1 * rng.uniform(0.95, 1.1),
                      torso_radius=0.17 * s, arm_radius=0.05 * s, leg_radius=0.08 * s,
                      carries_basket=bool(rng.random() < 0.3))


def _blocked(store: Store, xy: np.ndarray, margin: float) -> bool:
    """Whether floor point ``xy`` is within ``margin`` of a lane's footprint or outside the floor."""
    sx, sy = store.store.size
    if not (margin <= xy[0] <= sx - margin and margin <= xy[1] <= sy - margin):
        return True
    for _, _, ln in store.iter_lanes():
        b = ln.box
        c, s = np.cos(np.radians(b.yaw_deg)), np.sin(np.radians(b.yaw_deg))
        d = xy - b.center[:2]
        local = np.array([d[0] * c + d[1] * s, -d[0] * s + d[1] * c])
        if np.all(np.abs(local) <= b.half_size[:2] + margin):
            return True
    return False


def lane_front(store: Store, lane_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The middle of a lane's front face (the side of its box that opens onto free floor) and the face's
    outward horizontal normal."""
    b = store.lanes[lane_id].box
    c, s = np.cos(np.radians(b.yaw_deg)), np.sin(np.radians(b.yaw_deg))
    axes = [np.array([c, s]), np.array([-s, c])]
    best = None
    for k in (0, 1):
        for sgn in (1.0, -1.0):
            n = axes[k] * sgn
            face = b.center[:2] + n * b.half_size[k]
            free = not _blocked(store, face + n * 0.35, 0.05)
            score = (free, b.half_size[k])  # prefer free floor, then the deeper axis
            if best is None or score > best[0]:
                best = (score, face, n)
    _, face, n = best
    return np.array([face[0], face[1], b.center[2]]), np.array([n[0], n[1], 0.0])


def free_point(store: Store, rng: np.random.Generator, margin: float = 0.4) -> np.ndarray:
    sx, sy = store.store.size
    for _ in range(1000):
        xy = rng.uniform([0, 0], [sx, sy])
        if not _blocked(store, xy, margin):
            return xy
    raise ValueError("no free floor found")


def demo_bodies(store: Store, rng: np.random.Generator, n: int = 6, t: float = 0.0) -> list[Body]:
    """``n`` shoppers: two thirds reaching into lanes (some pairs side by side at neighbouring lanes), the
    rest walking, some holding an item."""
    lanes = [ln.id for _, _, ln in store.iter_lanes() if ln.sku]
    bodies: list[Body] = []
    last_lane = None
    for i in range(n):
        app = random_appearance(rng)
        height = float(rng.uniform(1.5, 1.95))
        holding = None
        if i % 3 != 2:
            if last_lane is not None and i % 3 == 1:  # the neighbour of the previous reacher
                k = lanes.index(last_lane)
                lane = lanes[min(k + 2, len(lanes) - 1)]
            else:
                lane = lanes[int(rng.integers(len(lanes)))]
            last_lane = lane
            tgt, nrm = lane_front(store, lane)
            side_dir = np.array([-nrm[1], nrm[0], 0.0])
            stand = tgt + nrm * rng.uniform(0.4, 0.55) + side_dir * rng.uniform(-0.15, 0.15)
            heading = float(np.arctan2(-nrm[1], -nrm[0]))
            joints = standing_skeleton(stand[0], stand[1], heading, height)
            side = "r" if rng.random() < 0.5 else "l"
            joints = reach(joints, side, tgt - nrm * 0.04 + np.array([0, 0, 0.06]))
            if rng.random() < 0.3:
                holding = store.lanes[lane].sku
        else:
            xy = free_point(store, rng)
            heading = float(rng.uniform(-np.pi, np.pi))
            joints = walking(standing_skeleton(xy[0], xy[1], heading, height), t * 6 + i, heading)
            if rng.random() < 0.5:
                holding = store.lanes[lanes[int(rng.integers(len(lanes)))]].sku
        bodies.append(Body(f"S{i:02d}", joints, app, holding))
    return bodies


__all__ = ["JOINTS", "demo_bodies", "demo_cameras", "demo_markers", "demo_store", "demo_store_dict",
           "fisheye_K", "free_point", "lane_front", "pinhole_K", "random_appearance", "reach", "walking"]
