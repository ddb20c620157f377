"""Ground truth of a simulated session: who was where, which hand went into which lane, every true shelf event,
every visit's true receipt, the behaviour counts (``stats``) and the per-camera MOT-style files.

All times in the truth are capture times in seconds since the epoch (UTC), like the wire messages.
See ``sim/README.md`` for the file formats.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from calibration.camera import Camera
from calibration.store import Store
from sim.body import Body
from sim.loadcells import LoadCellData
from sim.world import World

MOT_HEADER = "frame,id,x,y,w,h,vis,head_u,head_v,head_vis,lw_u,lw_v,lw_vis,rw_u,rw_v,rw_vis"
TRAJ_HEADER = "t,shopper,x,y,head_x,head_y,head_z,lw_x,lw_y,lw_z,rw_x,rw_y,rw_z"
NEIGHBOUR_DT_S = 1.0
NEIGHBOUR_DIST_M = 0.6
EXIT_CROWD_RADIUS_M = 2.0


def shopper_number(shopper: str) -> int:
    """The MOT id of a shopper id like ``S07`` (its digits)."""
    digits = "".join(c for c in shopper if c.isdigit())
    return int(digits) if digits else abs(hash(shopper)) % 100000


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def receipts(store: Store, world: World) -> dict[str, dict]:
    """Each visit's true receipt: the sum of its members' true events (picks add, put-backs and
    misplacements remove), lines sorted by SKU, money in integer cents."""
    qty: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ev in world.events:
        sign = 1 if ev.kind in ("pick", "pick_of_misplaced") else -1
        for item in ev.items:
            qty[ev.visit][world.items[item].sku] += sign
    out = {}
    for vid in world.visits:
        lines = []
        for sku, n in sorted(qty[vid].items()):
            if n < 0:
                raise AssertionError(f"visit {vid} returned more {sku} than it took")
            if n == 0:
                continue
            p = store.products[sku]
            lines.append({"sku": sku, "name": p.name, "qty": n, "unit_price": p.price, "amount": n * p.price})
        out[vid] = {"lines": lines, "total": sum(ln["amount"] for ln in lines), "currency": store.store.currency}
    return out


def neighbour_pairs(store: Store, world: World) -> list[tuple[int, int]]:
    """Pairs of picks by different shoppers from neighbouring lanes (side by side on one shelf) whose
    weight changes are within 1 s and whose picking hands are within 0.6 m of each other."""
    picks = [e for e in world.events if e.kind in ("pick", "pick_of_misplaced")]
    index = {}
    for shelf in store.shelves.values():
        for k, ln in enumerate(shelf.lanes):
            index[ln.id] = (shelf.id, k)
    out = []
    for i, a in enumerate(picks):
        for b in picks[i + 1:]:
            if a.shopper == b.shopper:
                continue
            (sa, ka), (sb, kb) = index[a.lane], index[b.lane]
            if sa != sb or abs(ka - kb) != 1:
                continue
            if abs(a.t_change - b.t_change) > NEIGHBOUR_DT_S:
                continue
            if np.linalg.norm(np.asarray(a.wrist) - np.asarray(b.wrist)) > NEIGHBOUR_DIST_M:
                continue
            out.append((a.id, b.id))
    return out


def exit_crowd_max(store: Store, world: World) -> int:
    """Most shoppers at once within 2 m of an exit region."""
    best = 0
    tr = world.track
    for ex in store.exits:
        lo, hi = np.asarray(ex.region.min), np.asarray(ex.region.max)
        d = np.maximum(np.maximum(lo - tr.xy, tr.xy - hi), 0.0)
        near = (np.hypot(d[..., 0], d[..., 1]) <= EXIT_CROWD_RADIUS_M) & tr.present
        best = max(best, int(near.sum(axis=1).max(initial=0)))
    return best


def head_occlusions(cameras: dict[str, Camera], bodies: list[Body]) -> int:
    """Camera views in which a shopper's head is hidden behind another shopper (geometric: the ray from the
    camera to the head passes through the other's head sphere or torso, the torso taken as spheres along
    the neck-pelvis segment)."""
    n = len(bodies)
    if n < 2:
        return 0
    heads = np.stack([b.head for b in bodies])
    necks = np.stack([b.joint("neck") for b in bodies])
    pelvis = np.stack([b.joint("pelvis") for b in bodies])
    fr = np.linspace(0.0, 1.0, 5)
    blobs = np.concatenate([heads[:, None], necks[:, None] + (pelvis - necks)[:, None] * fr[None, :, None]],
                           axis=1)  # (n, 6, 3)
    radii = np.concatenate([np.array([[b.appearance.head_radius] for b in bodies]),
                            np.repeat(np.array([[b.appearance.torso_radius] for b in bodies]), 5, axis=1)],
                           axis=1)  # (n, 6)
    r_own = np.array([b.appearance.head_radius for b in bodies])
    count = 0
    for cam in cameras.values():
        _, inside = cam.project(heads)
        o = cam.position
        d = heads - o
        length = np.linalg.norm(d, axis=1)
        u = d / length[:, None]
        rel = blobs - o  # blocker j, blob k
        s = np.einsum("jkc,ic->ijk", rel, u)  # viewer i
        perp = np.linalg.norm(rel[None] - s[..., None] * u[:, None, None, :], axis=3)
        hit = (perp < radii[None]) & (s > 0) & (s < (length - r_own)[:, None, None])
        hit[np.arange(n), np.arange(n)] = False
        count += int((hit.any(axis=(1, 2)) & inside).sum())
    return count


def build_truth(store: Store, world: World, cells: LoadCellData, scn, start: float, script: list[dict],
                frame_stats: dict | None = None) -> dict:
    """The session's ``truth.json`` content."""
    rec = receipts(store, world)
    pairs = neighbour_pairs(store, world)
    settled = cells.settled_at
    event_touch = {tc.event: k for k, tc in enumerate(world.touches) if tc.event is not None}
    events = []
    for ev in world.events:
        t_end = settled.get(event_touch.get(ev.id, -1), ev.t_release)
        events.append({
            "event_id": f"E{ev.id + 1:04d}", "shopper": ev.shopper, "visit": ev.visit,
            "shelf": store.lane_shelf[ev.lane], "lanes": [ev.lane], "sku": ev.sku, "qty": ev.qty,
            "grams": round(ev.grams, 2), "kind": ev.kind, "hand": ev.hand,
            "t_start": _r(start + ev.t_contact), "t_change": _r(start + ev.t_change),
            "t_release": _r(start + ev.t_release), "t_end": _r(start + t_end),
            "items": ev.items, "item_grams": [world.items[i].weight_g for i in ev.items],
            "wrist": [round(v, 4) for v in ev.wrist], "tag": ev.tag,
        })
    touches = [{"lane": tc.lane, "shelf": store.lane_shelf[tc.lane], "shopper": tc.shopper,
                "t_start": _r(start + tc.t_contact), "t_end": _r(start + settled.get(k, tc.t_release))}
               for k, tc in enumerate(world.touches) if tc.kind == "press"]
    agents = {a.spec.id: a for a in world.agents}
    shoppers = []
    for spec in world.shoppers:
        a = agents[spec.id]
        shoppers.append({
            "shopper": spec.id, "visit": spec.visit, "account": spec.account, "leader": spec.leader,
            "height_m": spec.height, "radius_m": spec.radius,
            "shirt_bgr": list(spec.appearance.shirt), "trousers_bgr": list(spec.appearance.trousers),
            "entered_at": None if a.entry_t is None else _r(start + a.entry_t),
            "exited_at": None if a.exit_t is None else _r(start + a.exit_t),
        })
    scans = {vid: (t, gate) for t, gate, vid, _, _ in world.scans}
    visits = []
    for vid, v in world.visits.items():
        members = [agents[m] for m in v.members]
        entered = [m.entry_t for m in members if m.entry_t is not None]
        exited = [m.exit_t for m in members]
        visits.append({
            "visit": vid, "account": v.account, "party": v.members, "party_size": len(v.members),
            "gate": v.gate, "scan_t": None if vid not in scans else _r(start + scans[vid][0]),
            "entered_at": _r(start + min(entered)) if entered else None,
            "exited_at": _r(start + max(exited)) if exited and all(x is not None for x in exited) else None,
            "complete": bool(exited) and all(x is not None for x in exited),
            "receipt": rec[vid],
        })
    kinds = defaultdict(int)
    for ev in world.events:
        kinds[ev.kind] += 1
    stats = {
        "neighbour_simultaneous_picks": len(pairs),
        "groups": sum(1 for v in world.visits.values() if len(v.members) >= 2),
        "put_backs": kinds["put_back"],
        "misplacements": kinds["misplace"],
        "picks_of_misplaced": kinds["pick_of_misplaced"],
        "shoppers": len(world.shoppers),
        "visits": len(world.visits),
        "events": len(world.events),
        "picks": kinds["pick"],
        "handoffs": len(world.handoffs),
        "presses": len(touches),
        "exit_crowd_max": exit_crowd_max(store, world),
        "unfinished_shoppers": sum(1 for a in world.agents if a.exit_t is None),
    }
    if frame_stats:
        stats.update(frame_stats)
    return {
        "format": "walkout-sim-truth/1",
        "session": {"name": scn.name, "store": store.store.id, "preset": scn.preset, "seed": scn.seed,
                    "start_epoch": start, "duration_s": scn.duration_s, "fps": scn.cameras.fps,
                    "image_size": list(scn.cameras.size), "frames": scn.cameras.frames,
                    "loadcell_rate_hz": cells.rate_hz},
        "stats": stats,
        "shoppers": shoppers,
        "visits": visits,
        "gate_scans": [{"t": _r(start + t), "gate": g, "visit": vid, "account": acc, "party_size": n}
                       for t, g, vid, acc, n in world.scans],
        "events": events,
        "neighbour_pairs": [[f"E{a + 1:04d}", f"E{b + 1:04d}"] for a, b in pairs],
        "handoffs": [{"t": _r(start + h.t), "giver": h.giver, "receiver": h.receiver, "items": h.items,
                      "skus": h.skus} for h in world.handoffs],
        "presses": touches,
        "script": script,
        "notes": world.notes,
    }


def write_truth_json(truth: dict, path: Path) -> bytes:
    data = (json.dumps(truth, indent=1, sort_keys=False) + "\n").encode()
    path.write_bytes(data)
    return data


class TruthFiles:
    """Writes ``truth/{camera}.txt`` (MOT-style, one line per visible shopper per delivered frame) and
    ``truth/trajectories.csv`` (floor position, head and wrists at the camera rate)."""

    def __init__(self, folder: Path, cameras: list[str], with_mot: bool):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.mot = {c: (folder / f"{c}.txt").open("w") for c in cameras} if with_mot else {}
        for f in self.mot.values():
            f.write("# " + MOT_HEADER + "\n")
        self.traj = (folder / "trajectories.csv").open("w")
        self.traj.write(TRAJ_HEADER + "\n")

    def trajectory(self, t_epoch: float, bodies: list[Body]) -> None:
        for b in bodies:
            h, lw, rw = b.head, b.joint("lwrist"), b.joint("rwrist")
            xy = b.floor_xy
            vals = [xy[0], xy[1], *h, *lw, *rw]
            self.traj.write(f"{t_epoch:.3f},{b.shopper}," + ",".join(f"{v:.4f}" for v in vals) + "\n")

    def frame(self, camera: str, frame_no: int, truth: list) -> None:
        f = self.mot[camera]
        for bt in truth:
            x1, y1, x2, y2 = bt.box
            kp = []
            for k in (bt.head, bt.lwrist, bt.rwrist):
                kp += [f"{k.x:.2f}", f"{k.y:.2f}", str(int(k.visible))]
            f.write(f"{frame_no},{shopper_number(bt.shopper)},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},"
                    f"{bt.visible_fraction:.3f}," + ",".join(kp) + "\n")

    def close(self) -> None:
        for f in self.mot.values():
            f.close()
        self.traj.close()


def read_mot(path: Path) -> np.ndarray:
    """A MOT truth file as a float array ``(rows, 16)`` (columns of :data:`MOT_HEADER`)."""
    rows = [ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith("#")]
    if not rows:
        return np.zeros((0, 16))
    return np.array([[float(v) for v in ln.split(",")] for ln in rows])


def frame_number(t_rel: float, fps: float) -> int:
    """The 1-based frame number of a capture time ``t_rel`` seconds after the session start."""
    return math.floor(t_rel * fps + 1e-6) + 1
