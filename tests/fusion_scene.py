"""A small scripted store scene for fusion tests: a store with one shelf of six lanes, two ceiling cameras,
and shoppers following waypoint scripts; produces the wire messages edge devices would send."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calibration.camera import Camera
from calibration.store import Store, store_from_dict
from wire.messages import (
    Candidate,
    GateEntryMsg,
    Keypoint,
    LaneDelta,
    Ray,
    ShelfEventMsg,
    Track,
    TracksMsg,
)

T0 = 1_767_261_600.0
LANE_W = 0.3


def scene_store() -> Store:
    lanes = []
    for i in range(6):
        x0 = 1.0 + i * LANE_W
        lanes.append({"id": f"L{i + 1}", "sku": f"P{i + 1}",
                      "box": {"min": [x0, 3.0, 0.9], "max": [x0 + LANE_W, 3.4, 1.2]}})
    data = {
        "store": {"id": "t1", "size": [6.0, 5.0]},
        "catalogue": [{"sku": f"P{i + 1}", "name": f"Product {i + 1}", "price": 100 * (i + 1),
                       "weight_g": 200.0 + 37 * i, "weight_sd_g": 2.0} for i in range(6)],
        "shelf_units": [{"id": "U1", "shelves": [{"id": "S1", "lanes": lanes}]}],
        "gates": [{"id": "G1", "region": {"min": [0.0, 0.0], "max": [1.0, 1.0]}}],
        "exits": [{"id": "X1", "region": {"min": [5.0, 0.0], "max": [6.0, 1.0]}}],
    }
    return store_from_dict(data)


def scene_cameras() -> dict[str, Camera]:
    K = np.array([[330.0, 0, 320], [0, 330.0, 240], [0, 0, 1]])
    return {
        "c1": Camera.look_at("c1", "pinhole", (640, 480), K, [], (1.5, 1.8, 3.0), (1.8, 2.6, 0.0)),
        "c2": Camera.look_at("c2", "pinhole", (640, 480), K, [], (3.8, 1.8, 3.0), (3.2, 2.6, 0.0)),
        "c3": Camera.look_at("c3", "pinhole", (640, 480), np.array([[200.0, 0, 320], [0, 200.0, 240], [0, 0, 1]]),
                             [], (3.0, 1.5, 3.5), (3.0, 1.5, 0.0)),
    }


@dataclass
class ScriptedShopper:
    """Waypoints (t, x, y) and reaches (t_start, t_end, wrist target xyz)."""

    name: str
    waypoints: list[tuple[float, float, float]]
    reaches: list[tuple[float, float, tuple[float, float, float]]] = field(default_factory=list)

    def at(self, t: float) -> np.ndarray | None:
        w = np.asarray(self.waypoints, float)
        if t < w[0, 0] or t > w[-1, 0]:
            return None
        return np.array([np.interp(t, w[:, 0], w[:, 1]), np.interp(t, w[:, 0], w[:, 2])])

    def wrists(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        xy = self.at(t)
        left = np.array([xy[0] - 0.2, xy[1], 0.9])
        right = np.array([xy[0] + 0.2, xy[1], 0.9])
        for t0, t1, target in self.reaches:
            if t0 <= t <= t1:
                mid = (t0 + t1) / 2
                k = 1 - abs(t - mid) / ((t1 - t0) / 2)  # 0 -> 1 -> 0
                right = right + (np.asarray(target) - right) * min(1.0, 1.6 * k)
        return left, right


def tracks_messages(shoppers: list[ScriptedShopper], cameras: dict[str, Camera], t_end: float,
                    fps: float = 10.0, seed: int = 0, pos_sd: float = 0.05, wrist_sd: float = 0.02
                    ) -> list[TracksMsg]:
    rng = np.random.default_rng(seed)
    out = []
    seqs = {c: 0 for c in cameras}
    n = int(t_end * fps)
    for k in range(n):
        t = k / fps
        for cid, cam in cameras.items():
            tracks = []
            for si, sh in enumerate(shoppers):
                xy = sh.at(t)
                if xy is None:
                    continue
                head = np.array([xy[0], xy[1], 1.65])
                uv, ok = cam.project(head[None])
                if not ok[0]:
                    continue
                kps = []
                for w in sh.wrists(t):
                    w = w + rng.normal(0, wrist_sd, 3)
                    d = w - cam.position
                    d /= np.linalg.norm(d)
                    wuv, wok = cam.project(w[None])
                    if not wok[0]:
                        kps.append(None)
                        continue
                    kps.append(Keypoint(px=tuple(wuv[0]), conf=0.9,
                                        ray=Ray(origin=tuple(cam.position), dir=tuple(d))))
                fxy = xy + rng.normal(0, pos_sd, 2)
                u, v = uv[0]
                tracks.append(Track(id=si + 1, box=(u - 30, v - 30, u + 30, v + 60), conf=0.9,
                                    floor=tuple(fxy), floor_cov=(pos_sd ** 2, 0.0, pos_sd ** 2),
                                    lwrist=kps[0], rwrist=kps[1]))
            seqs[cid] += 1
            out.append(TracksMsg(source=cid, seq=seqs[cid], ts=T0 + t, camera=cid, frame=k, tracks=tracks))
    return out


def entry(account: str, t: float, seq: int, party: int = 1) -> GateEntryMsg:
    return GateEntryMsg(source="G1", seq=seq, ts=T0 + t, gate="G1", account=account, party_size=party)


def shelf_event(store: Store, eid: str, lane: str, t0: float, t1: float, seq: int, qty: int = 1,
                action: str = "pick", sku: str | None = None, foreign: bool = False) -> ShelfEventMsg:
    ln = store.lanes[lane]
    sku = sku or ln.sku
    grams = store.products[sku].weight_g * qty * (-1 if action == "pick" else 1)
    return ShelfEventMsg(source="shelfgw", seq=seq, ts=T0 + t1 + 0.5, shelf="S1", event_id=eid,
                         action=action, t_start=T0 + t0, t_end=T0 + t1, lanes=[LaneDelta(lane=lane, delta_g=grams)],
                         delta_g=grams, candidates=[Candidate(sku=sku, qty=qty, p=0.99, foreign=foreign)])


def lane_target(store: Store, lane: str) -> tuple[float, float, float]:
    b = store.lanes[lane].box
    c = b.center
    return (float(c[0]), float(b.min[1]) + 0.1, float(c[2]))
