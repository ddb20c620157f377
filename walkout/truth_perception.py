"""Truth perception: the messages a good edge would publish for a simulated session, made from its ground truth.

Fusion can be measured apart from the detector and the shelf gateway by feeding it the session's true
tracks and shelf events passed through realistic noise instead of the real edge pipelines (issue 7).

Tracks (one :class:`~wire.messages.TracksMsg` per delivered camera frame, like ``walkout edge camera``):

* **Truth per camera frame** (:class:`CameraTruth`): each visible shopper's box, visible fraction, head and
  wrists in pixels with a visibility flag.  From ``truth/{camera}.txt`` when the session rendered frames;
  otherwise projected from ``truth/trajectories.csv`` through the session's camera files with a visibility
  model: the body is sampled as points around its axis (pelvis on the floor to the head); a point counts when
  it projects into the image and nothing static (shelves, walls: the simulator's own scene, ray cast) nor
  another shopper (a capsule from the hips to the head) lies in front of it; the box is the bounding box of
  the visible points and the visible fraction their share.
* **Noise** (:class:`TrackNoise`, seeded per camera): pixel noise on keypoints (~3 px at 640 px wide), box
  jitter, keypoints missed, hidden keypoints sometimes reported (low confidence, larger error), missed
  detections (more when a shopper is barely visible), short dropouts, new track ids after a long gap
  (fragmentation) and now and then spontaneously, id switches when two tracks pass close to each other,
  and a per-camera latency (the publish time, not the capture time).  Floor positions and covariances come
  from :func:`edge.projection.floor_positions` (head ray), wrist and head rays from
  :func:`edge.projection.keypoint_rays`, as in the real pipeline.

Shelf events (:class:`ShelfNoise`): the true events of a shelf that overlap in time make one shelf change
(as the gateway sees it), with a jittered start, the end where the gateway finds the shelf at rest (soon after
the last hand let go, not when the true swing has died out), the step time (when the goods left or reached the
plates, a little late), measurement noise on the lanes' weight changes and,
sometimes, part of the weight spilling onto a neighbouring lane (an item straddling two plates).  The real
identifier of the shelf gateway (:class:`edge.shelf.identify.Identifier`, on the store's planogram) turns
each change into events with candidate lists -- the same near-equal-weight ambiguity, sub-events and
misplaced-item learning as the gateway -- published ``emit_lag_s`` after the change settled.  Like the gateway,
the shelf source also publishes a watermark heartbeat every ``heartbeat_s`` (a status whose watermark at t is
the earliest start of an event not yet published at t, or t, with each shelf's own watermark beside it, so that
a leaving shopper's receipt waits only for the shelves they came near), numbered with the events in publish
order.

Everything is deterministic: every random draw comes from ``numpy.random.default_rng([seed, stream,
camera])``; the same session and seed give the same messages.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel
from pydantic_core import to_json

from calibration.camera import Camera
from calibration.store import Store
from edge.appearance import bgr_to_lab
from edge.projection import ProjectionConfig, floor_positions, keypoint_rays
from edge.shelf.detector import ShelfChange
from edge.shelf.gateway import event_id, step_time
from edge.shelf.identify import Identified, Identifier
from edge.shelf.planogram import Planogram
from wire.messages import Candidate, LaneDelta, ShelfEventMsg, StatusMsg, TracksMsg

log = logging.getLogger(__name__)

KEYPOINTS = ("head", "lwrist", "rwrist")
SHELF_SOURCE = "shelf-truth"
_STREAM_TRACKS, _STREAM_SHELF, _STREAM_LATENCY, _STREAM_COLOUR, _STREAM_STEP = 11, 12, 13, 14, 15
_REF_WIDTH = 640.0  # pixel noise figures are given for this image width


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class TrackNoise:
    """How far the published tracks are from the truth (figures for a 640 px wide image; scaled)."""

    keypoint_px_sd: float = 3.0  # pixel noise of a visible keypoint
    box_rel_sd: float = 0.03  # box edges, relative to the box size
    keypoint_miss: float = 0.05  # a visible keypoint is not reported
    hidden_report: float = 0.2  # a hidden keypoint is reported anyway (a guess) ...
    hidden_px_sd: float = 10.0  # ... with this pixel error ...
    hidden_conf: tuple[float, float] = (0.3, 0.5)  # ... and this confidence
    visible_conf: tuple[float, float] = (0.55, 0.95)
    min_visible: float = 0.15  # a shopper less visible than this is not detected
    detection_miss: float = 0.02  # a detectable shopper is missed in a frame
    low_visible: float = 0.4  # below this visible fraction ...
    low_visible_miss: float = 0.25  # ... a detection is missed this much more often
    dropout_per_s: float = 0.02  # a track starts a dropout (a few frames unseen) this often per second
    dropout_s: tuple[float, float] = (0.3, 1.5)
    fragment_after_s: float = 1.5  # a gap longer than this: the tracker starts a new id
    fragment_per_s: float = 0.005  # a spontaneous new id, per track and second
    switch_p: float = 0.05  # two tracks that come close swap ids with this probability (per encounter)
    switch_iou: float = 0.3  # "close": box IoU at least this
    latency_s: tuple[float, float] = (0.05, 0.15)  # per-camera processing latency (publish - capture)
    latency_jitter_s: float = 0.02
    track_conf: tuple[float, float] = (0.5, 0.95)
    # upper-body colour (CIE L*a*b*), as edge/appearance.py measures it on rendered frames; the figures are
    # `python -m bench.appearance` on two rendered sessions (standard seed 301 x 10 shoppers, hard seed 302 x 12,
    # 60 s each, every third frame: 9,896 colours of 22 shoppers).  A shopper's colour is scale x the shirt's
    # colour + offset + a per-shopper spread; each camera sees it with its own offset (viewpoint, exposure);
    # each detection adds noise, and now and then (more often when the shopper is barely visible) an outlier.
    colour: bool = True  # publish a colour where the session records the shirts
    colour_scale: tuple[float, float, float] = (0.485, 0.354, 0.418)
    colour_offset: tuple[float, float, float] = (0.9, 0.95, 1.44)
    colour_spread: tuple[float, float, float] = (8.55, 7.42, 7.6)
    colour_camera_sd: tuple[float, float, float] = (7.24, 3.48, 3.83)
    colour_sd: tuple[float, float, float] = (3.24, 1.46, 2.13)
    colour_outlier: float = 0.22
    colour_outlier_low_visible: float = 0.5  # below low_visible (not measured: a guess on the safe side)
    colour_outlier_sd: tuple[float, float, float] = (13.44, 9.58, 11.93)


@dataclass(frozen=True)
class ShelfNoise:
    """How far the published shelf events are from the true ones."""

    time_sd_s: float = 0.15  # jitter of an event's start and end
    weight_sd_g: float = 1.0  # measurement noise of a lane's weight change
    spill_p: float = 0.1  # part of the change lands on a neighbouring lane (an item straddling plates)
    spill_fraction: tuple[float, float] = (0.05, 0.3)
    miss_p: float = 0.0  # a true change produces no event at all
    end_after_release_s: float = -0.02  # the gateway's end of an event: the hand's release, then ...
    end_tail_s: float = 0.28  # ... an exponential wait of this mean (measured: 0-1.7 s, median 0.16 s)
    step_lag_s: float = 0.04  # the gateway's step time (when the goods left or reached the plates) is late ...
    step_sd_s: float = 0.01  # ... by this, with this spread (measured: gateway on simulated load cells)
    emit_lag_s: float = 0.55  # the gateway publishes this long after the shelf settled
    emit_jitter_s: float = 0.05
    merge_gap_s: float = 0.1  # true events of one shelf closer than this in time make one change
    heartbeat_s: float = 0.25  # the gateway's watermark heartbeats, seconds of capture time apart (0: none)


@dataclass(frozen=True)
class PerceptionConfig:
    seed: int = 0
    tracks: TrackNoise = field(default_factory=TrackNoise)
    shelf: ShelfNoise = field(default_factory=ShelfNoise)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    min_keypoint_conf: float = 0.3  # as the camera pipeline: lower keypoints are not published


def rng_for(seed: int, stream: int, name: str = "") -> np.random.Generator:
    """The seeded generator of one stream (and camera)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream, zlib.crc32(name.encode())])


# ------------------------------------------------------------------------------------------------ truth per camera
@dataclass
class CameraTruth:
    """Per-frame truth of one camera: one row per visible shopper per delivered frame, sorted by frame.

    ``frame`` (R,) 1-based; ``shopper`` (R,) MOT id (the digits of the shopper id); ``box`` (R, 4) ``x1 y1 x2
    y2`` px; ``vis`` (R,) visible fraction; ``kp`` (R, 3, 3) head, left and right wrist ``u v visible``.
    ``frame_ts[n - 1]`` is frame ``n``'s capture time; ``delivered[n - 1]`` whether it was delivered.
    """

    camera: str
    source: str  # "mot" (the session's file) | "projected"
    frame_ts: np.ndarray
    delivered: np.ndarray
    frame: np.ndarray
    shopper: np.ndarray
    box: np.ndarray
    vis: np.ndarray
    kp: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.frame_ts)

    def rows(self) -> Iterator[tuple[int, slice]]:
        """``(frame, rows)`` for every delivered frame, in order."""
        starts = np.searchsorted(self.frame, np.arange(1, self.n_frames + 2))
        for n in range(1, self.n_frames + 1):
            if self.delivered[n - 1]:
                yield n, slice(int(starts[n - 1]), int(starts[n]))

    def write_mot(self, path: Path) -> None:
        """MOT-style truth (``frame,id,x,y,w,h,vis,...`` like the simulator's ``truth/{camera}.txt``)."""
        with Path(path).open("w") as f:
            f.write("# frame,id,x,y,w,h,vis,head_u,head_v,head_vis,lw_u,lw_v,lw_vis,rw_u,rw_v,rw_vis\n")
            for i in range(len(self.frame)):
                x1, y1, x2, y2 = self.box[i]
                kp = ",".join(f"{k[0]:.2f},{k[1]:.2f},{int(k[2])}" for k in self.kp[i])
                f.write(f"{self.frame[i]},{self.shopper[i]},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},"
                        f"{self.vis[i]:.3f},{kp}\n")


def session_frames(truth: dict) -> tuple[float, float, int]:
    """(start epoch, fps, frames per camera) of a session's truth."""
    s = truth["session"]
    fps = float(s["fps"])
    n = math.floor(float(s["duration_s"]) * fps + 1e-9) + 1
    return float(s["start_epoch"]), fps, n


def shopper_number(shopper: str) -> int:
    digits = "".join(c for c in shopper if c.isdigit())
    return int(digits) if digits else zlib.crc32(shopper.encode()) % 100000


def read_mot_truth(path: Path, camera: str, truth: dict) -> CameraTruth:
    """A simulator ``truth/{camera}.txt`` as :class:`CameraTruth`."""
    start, fps, n = session_frames(truth)
    rows = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    a = np.array([[float(v) for v in ln.split(",")] for ln in rows]) if rows else np.zeros((0, 16))
    if a.shape[1] < 16:
        raise ValueError(f"{path}: expected 16 columns (frame,id,x,y,w,h,vis,head_u,...), got {a.shape[1]}")
    order = np.lexsort((a[:, 1], a[:, 0]))
    a = a[order]
    box = np.column_stack([a[:, 2], a[:, 3], a[:, 2] + a[:, 4], a[:, 3] + a[:, 5]])
    return CameraTruth(camera, "mot", start + np.arange(n) / fps, _delivered(truth, camera, n),
                       a[:, 0].astype(int), a[:, 1].astype(int), box, a[:, 6], a[:, 7:16].reshape(-1, 3, 3))


def _delivered(truth: dict, camera: str, n: int) -> np.ndarray:
    out = np.ones(n, bool)
    for fno in truth["session"].get("dropped_frames", {}).get(camera, []):
        if 1 <= fno <= n:
            out[fno - 1] = False
    return out


@dataclass
class Trajectories:
    """``truth/trajectories.csv``: per row the time, shopper, pelvis floor point, head and wrists."""

    t: np.ndarray  # (R,)
    shopper: np.ndarray  # (R,) str
    xy: np.ndarray  # (R, 2)
    head: np.ndarray  # (R, 3)
    lwrist: np.ndarray  # (R, 3)
    rwrist: np.ndarray  # (R, 3)


def read_trajectories(path: Path) -> Trajectories:
    with Path(path).open() as f:
        reader = csv.reader(f)
        header = next(reader)
        want = ["t", "shopper", "x", "y", "head_x", "head_y", "head_z", "lw_x", "lw_y", "lw_z", "rw_x", "rw_y",
                "rw_z"]
        if header[: len(want)] != want:
            raise ValueError(f"{path}: unexpected header {header!r}, expected {','.join(want)}")
        rows = list(reader)
    shopper = np.array([r[1] for r in rows], dtype=object)
    v = np.array([[float(x) for i, x in enumerate(r) if i != 1] for r in rows]) if rows else np.zeros((0, 12))
    return Trajectories(v[:, 0], shopper, v[:, 1:3], v[:, 3:6], v[:, 6:9], v[:, 9:12])


# body sample points: heights as fractions of the head height, ring of angles around the axis
_RING_H = np.array([0.06, 0.3, 0.55, 0.78])
_RING_A = np.linspace(0, 2 * np.pi, 6, endpoint=False)
_HEAD_R = 0.11


def _body_points(xy: np.ndarray, head: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(R, P, 3) sample points of each row's body: a ring around the hips-to-head axis at four heights, the
    head centre and the top of the head."""
    base = np.column_stack([xy, np.zeros(len(xy))])
    axis = head - base
    pts = []
    for h in _RING_H:
        c = base + axis * h  # the point on the axis at that fraction of the head height
        for a in _RING_A:
            pts.append(c + np.column_stack([radius * np.cos(a), radius * np.sin(a), np.zeros(len(xy))]))
    pts.append(head)
    pts.append(head + np.array([0.0, 0.0, _HEAD_R]))
    return np.stack(pts, axis=1)


def _segment_distance(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Closest distance between segments p0-p1 and q0-q1 (broadcast arrays of (..., 3)) and the parameter
    (0..1) of the closest point on p."""
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a = np.einsum("...i,...i", d1, d1)
    e = np.einsum("...i,...i", d2, d2)
    f = np.einsum("...i,...i", d2, r)
    c = np.einsum("...i,...i", d1, r)
    b = np.einsum("...i,...i", d1, d2)
    denom = a * e - b * b
    s = np.where(denom > 1e-12, np.clip((b * f - c * e) / np.where(denom > 1e-12, denom, 1.0), 0, 1), 0.0)
    t = (b * s + f) / np.maximum(e, 1e-12)
    t_c = np.clip(t, 0, 1)
    s = np.where(t < 0, np.clip(-c / np.maximum(a, 1e-12), 0, 1), np.where(t > 1, np.clip((b - c) / np.maximum(
        a, 1e-12), 0, 1), s))
    cp = p0 + d1 * s[..., None]
    cq = q0 + d2 * t_c[..., None]
    return np.linalg.norm(cp - cq, axis=-1), s


class StaticOcclusion:
    """Distance to the first static surface (shelves, walls, floor) along rays from a camera, using the
    simulator's own scene of the store (built once per store)."""

    _scenes: ClassVar[dict[str, object]] = {}

    def __init__(self, store: Store):
        from sim.render_scene import build_scene

        key = store.config_hash()
        scene = self._scenes.get(key)
        if scene is None:
            scene = build_scene(store, None, np.random.default_rng([0, 0x5CE7E]), variety=False)
            self._scenes.clear()
            self._scenes[key] = scene
        self.scene = scene

    def visible(self, origin: np.ndarray, points: np.ndarray, margin: float = 0.03) -> np.ndarray:
        """Whether each point (N, 3) is in front of the first static surface seen from ``origin``."""
        from sim.render_static import trace

        if len(points) == 0:
            return np.zeros(0, bool)
        d = points - origin
        dist = np.linalg.norm(d, axis=1)
        t = trace(self.scene, origin, d / np.maximum(dist, 1e-9)[:, None])[0]
        return dist <= t + margin


def _hidden_by_others(o: np.ndarray, pts: np.ndarray, frame: np.ndarray, xy: np.ndarray, head: np.ndarray,
                      radius: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(R, Q) bool: point ``pts[r, q]`` of row ``r`` is hidden from ``o`` by another shopper of the same
    frame, each a capsule (radius ``radius``) from the hips to the head.  Frames are padded to the most
    shoppers in one frame and handled in chunks."""
    R, Q = pts.shape[:2]
    hidden = np.zeros((R, Q), bool)
    order = np.argsort(frame, kind="stable")
    fr = frame[order]
    uniq, start, count = np.unique(fr, return_index=True, return_counts=True)
    multi = count >= 2
    if not multi.any():
        return hidden
    uniq, start, count = uniq[multi], start[multi], count[multi]
    M = int(count.max())
    base = np.column_stack([xy, np.full(len(xy), 0.3)])
    for c0 in range(0, len(uniq), chunk):
        st, ct = start[c0:c0 + chunk], count[c0:c0 + chunk]
        slot = np.arange(M)[None, :]
        valid = slot < ct[:, None]  # (F, M)
        rows = np.where(valid, order[np.minimum(st[:, None] + slot, len(order) - 1)], 0)  # (F, M)
        P = pts[rows]  # (F, M, Q, 3)
        A, B, rad = base[rows], head[rows], radius[rows]  # (F, M, 3), (F, M)
        dist, s = _segment_distance(o, P[:, :, :, None, :], A[:, None, None, :, :], B[:, None, None, :, :])
        seg = np.linalg.norm(P - o, axis=3)[:, :, :, None]  # (F, M, Q, 1)
        r = rad[:, None, None, :]
        hit = (dist < r) & (s * seg < seg - r - 0.05) & valid[:, None, None, :]
        hit[:, np.arange(M), :, np.arange(M)] = False
        any_hit = hit.any(axis=3) & valid[:, :, None]  # (F, M, Q)
        hidden[rows[valid]] |= any_hit[valid]
    return hidden


def project_truth(traj: Trajectories, cam: Camera, camera: str, truth: dict, occlusion: StaticOcclusion | None
                  ) -> CameraTruth:
    """Per-frame truth of ``cam`` projected from the trajectories (see the module docstring)."""
    start, fps, n = session_frames(truth)
    radius_of = {s["shopper"]: float(s.get("radius_m") or 0.22) for s in truth.get("shoppers", [])}
    k = np.rint((traj.t - start) * fps).astype(int)
    keep = (k >= 0) & (k < n)
    idx = np.flatnonzero(keep)
    k = k[idx]
    radius = np.array([radius_of.get(s, 0.22) for s in traj.shopper[idx]]) * 0.8
    body = _body_points(traj.xy[idx], traj.head[idx], radius)  # (R, P, 3)
    joints = np.stack([traj.head[idx], traj.lwrist[idx], traj.rwrist[idx]], axis=1)  # (R, 3, 3)
    R, P = body.shape[:2]
    allpts = np.concatenate([body, joints], axis=1)  # (R, P + 3, 3)
    flat = allpts.reshape(-1, 3)
    uv, ok = cam.project(flat)
    if occlusion is not None and ok.any():
        sel = np.flatnonzero(ok)
        ok[sel] = occlusion.visible(cam.position, flat[sel])
    uv = uv.reshape(R, P + 3, 2)
    ok = ok.reshape(R, P + 3)
    ok &= ~_hidden_by_others(cam.position, allpts, k, traj.xy[idx], traj.head[idx], radius / 0.8)
    vis = ok[:, :P].mean(axis=1)
    x = np.where(ok, uv[..., 0], np.nan)
    y = np.where(ok, uv[..., 1], np.nan)
    seen = ok.any(axis=1) & (ok[:, :P].sum(axis=1) >= 2)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with no visible point: dropped below
        box = np.column_stack([np.nanmin(x, axis=1), np.nanmin(y, axis=1), np.nanmax(x, axis=1),
                               np.nanmax(y, axis=1)])
    pad = np.maximum(2.0, 0.08 * np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]))
    box = box + np.column_stack([-pad, -pad, pad, pad])
    box[:, 0::2] = np.clip(box[:, 0::2], 0, cam.width)
    box[:, 1::2] = np.clip(box[:, 1::2], 0, cam.height)
    kp = np.concatenate([uv[:, P:], ok[:, P:, None].astype(float)], axis=2)
    seen &= np.all(np.isfinite(box), axis=1) & (box[:, 2] - box[:, 0] >= 2) & (box[:, 3] - box[:, 1] >= 2)
    rows = np.flatnonzero(seen)
    frame = k[rows] + 1
    shopper = np.array([shopper_number(s) for s in traj.shopper[idx][rows]], int)
    order = np.lexsort((shopper, frame))
    rows = rows[order]
    out = CameraTruth(camera, "projected", start + np.arange(n) / fps, _delivered(truth, camera, n),
                      frame[order], shopper[order], box[rows], vis[rows], np.nan_to_num(kp[rows]))
    return out


def camera_truths(session, cameras: list[str] | None = None) -> dict[str, CameraTruth]:
    """Per-camera truth of a session (``sim.session.Session``): the MOT files where the session has them,
    else projected from the trajectories."""
    folder = Path(session.path).parent
    cams = cameras or list(session.truth["session"].get("cameras") or session.cameras)
    out: dict[str, CameraTruth] = {}
    traj = None
    occlusion = None
    for cid in cams:
        mot = folder / "truth" / f"{cid}.txt"
        if mot.is_file():
            out[cid] = read_mot_truth(mot, cid, session.truth)
            continue
        if traj is None:
            path = folder / "truth" / "trajectories.csv"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the session has neither truth/{cid}.txt nor trajectories")
            traj = read_trajectories(path)
            occlusion = StaticOcclusion(session.store)
        out[cid] = project_truth(traj, session.cameras[cid], cid, session.truth, occlusion)
    return out


# ------------------------------------------------------------------------------------------------ noisy tracks
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass
class TrackStats:
    """What the noise did to one camera's tracks."""

    frames: int = 0
    detections: int = 0
    missed: int = 0
    dropouts: int = 0
    new_ids: int = 0
    fragments: int = 0
    switches: int = 0
    keypoints: int = 0
    keypoints_missed: int = 0
    hidden_reported: int = 0


def shopper_colours(truth: dict, cfg: PerceptionConfig) -> dict[int, np.ndarray]:
    """Each shopper's colour as the cameras would measure it on average (L*a*b*), by MOT id; empty when the
    session does not record the shirts (simulated before they were) or colours are off."""
    nz = cfg.tracks
    out: dict[int, np.ndarray] = {}
    if not nz.colour:
        return out
    for s in truth.get("shoppers", []):
        if not s.get("shirt_bgr"):
            continue
        lab = bgr_to_lab(np.array([s["shirt_bgr"]], float))[0]
        spread = rng_for(cfg.seed, _STREAM_COLOUR, s["shopper"]).normal(0.0, 1.0, 3) * nz.colour_spread
        out[shopper_number(s["shopper"])] = lab * nz.colour_scale + nz.colour_offset + spread
    return out


def _colours(ct: CameraTruth, rows: np.ndarray, base: dict[int, np.ndarray], nz: TrackNoise, seed: int
             ) -> np.ndarray | None:
    """Measured colours (m, 3) of detections ``rows`` (NaN where the shopper has none), or None."""
    if not base or not len(rows):
        return None
    rng = rng_for(seed, _STREAM_COLOUR, f"detections:{ct.camera}")
    who = ct.shopper[rows].astype(int)
    out = np.full((len(rows), 3), np.nan)
    offsets: dict[int, np.ndarray] = {}
    for k in np.unique(who):
        if int(k) in base:
            off = rng_for(seed, _STREAM_COLOUR, f"{ct.camera}:{int(k)}").normal(0.0, 1.0, 3) * nz.colour_camera_sd
            offsets[int(k)] = base[int(k)] + off
    has = np.array([int(k) in offsets for k in who])
    if not has.any():
        return None
    mean = np.array([offsets.get(int(k), np.zeros(3)) for k in who])
    p_out = np.where(ct.vis[rows] < nz.low_visible, nz.colour_outlier_low_visible, nz.colour_outlier)
    outlier = rng.random(len(rows)) < p_out
    sd = np.where(outlier[:, None], nz.colour_outlier_sd, nz.colour_sd)
    col = mean + rng.normal(0.0, 1.0, (len(rows), 3)) * sd
    col[:, 0] = np.clip(col[:, 0], 0.0, 100.0)
    col[:, 1:] = np.clip(col[:, 1:], -127.0, 127.0)
    out[has] = col[has]
    return out


def noisy_tracks(ct: CameraTruth, cam: Camera, cfg: PerceptionConfig, source: str | None = None,
                 colours: dict[int, np.ndarray] | None = None) -> tuple[list[tuple[float, TracksMsg]], TrackStats]:
    """One camera's published tracks: ``(publish time, message)`` per delivered frame, in order.

    Two passes: who is detected with which track id, frame by frame (the noise that has memory: dropouts,
    fragments, switches); then the per-detection noise, floor projection and rays for all frames at once.
    ``colours`` (:func:`shopper_colours`) gives each shopper's upper-body colour; each detection's is drawn
    around it (a stream of its own: the other noise does not change with it)."""
    nz = cfg.tracks
    rng = rng_for(cfg.seed, _STREAM_TRACKS, ct.camera)
    lat_rng = rng_for(cfg.seed, _STREAM_LATENCY, ct.camera)
    fps = 1.0 / float(np.median(np.diff(ct.frame_ts))) if ct.n_frames > 1 else 10.0
    latency = float(lat_rng.uniform(*nz.latency_s))
    source = source or f"camera-{ct.camera}"
    stats = TrackStats()
    tid: dict[int, int] = {}
    last_seen: dict[int, int] = {}
    drop_left: dict[int, int] = {}
    close_before: set[tuple[int, int]] = set()
    next_id = 1
    p_drop = nz.dropout_per_s / fps
    p_frag = nz.fragment_per_s / fps
    gap_frames = nz.fragment_after_s * fps
    frames: list[int] = []
    det_rows: list[int] = []
    det_ids: list[int] = []
    det_frame: list[int] = []
    for n, sl in ct.rows():
        stats.frames += 1
        frames.append(n)
        rows = []
        for i in range(sl.start, sl.stop):
            s = int(ct.shopper[i])
            vis = float(ct.vis[i])
            if vis < nz.min_visible:
                continue
            if drop_left.get(s, 0) > 0:
                drop_left[s] -= 1
                stats.missed += 1
                continue
            if rng.random() < p_drop:
                drop_left[s] = max(0, round(rng.uniform(*nz.dropout_s) * fps) - 1)
                stats.dropouts += 1
                stats.missed += 1
                continue
            miss = nz.detection_miss + (nz.low_visible_miss if vis < nz.low_visible else 0.0)
            if rng.random() < miss:
                stats.missed += 1
                continue
            rows.append(i)
        for i in rows:
            s = int(ct.shopper[i])
            fresh = s not in tid
            if fresh or n - last_seen[s] > gap_frames or rng.random() < p_frag:
                if not fresh:
                    stats.fragments += 1
                tid[s] = next_id
                next_id += 1
                stats.new_ids += 1
            last_seen[s] = n
        close_now: set[tuple[int, int]] = set()
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                ia, ib = rows[a], rows[b]
                if _iou(ct.box[ia], ct.box[ib]) >= nz.switch_iou:
                    pair = (int(ct.shopper[ia]), int(ct.shopper[ib]))
                    close_now.add(pair)
                    if pair not in close_before and rng.random() < nz.switch_p:
                        tid[pair[0]], tid[pair[1]] = tid[pair[1]], tid[pair[0]]
                        stats.switches += 1
        close_before = close_now
        det_rows.extend(rows)
        det_ids.extend(tid[int(ct.shopper[i])] for i in rows)
        det_frame.extend([n] * len(rows))
    tracks = _tracks(ct, cam, np.asarray(det_rows, int), det_ids, cfg, rng, stats)
    cols = _colours(ct, np.asarray(det_rows, int), colours or {}, cfg.tracks, cfg.seed)
    if cols is not None:
        for t, c in zip(tracks, np.round(cols, 1).tolist(), strict=True):
            if t is not None and c[0] == c[0]:  # NaN: no colour for this shopper
                t["colour"] = c
    by_frame: dict[int, list[dict]] = {}
    for n, t in zip(det_frame, tracks, strict=True):
        if t is not None:
            by_frame.setdefault(n, []).append(t)
            stats.detections += 1
    out: list[tuple[float, TracksMsg]] = []
    jitter = np.abs(lat_rng.normal(0.0, nz.latency_jitter_s, len(frames)))
    last_pub = -math.inf
    for seq, n in enumerate(frames):
        ts = float(ct.frame_ts[n - 1])
        pub = max(last_pub, ts + latency + float(jitter[seq]))
        last_pub = pub
        doc = {"source": source, "seq": seq, "ts": round(ts, 6), "camera": ct.camera, "frame": n,
               "tracks": by_frame.get(n, [])}
        out.append((pub, TracksMsg.model_validate_json(to_json(doc))))  # validated, as a receiver would
    return out, stats


def _tracks(ct: CameraTruth, cam: Camera, rows: np.ndarray, ids: list[int], cfg: PerceptionConfig,
            rng: np.random.Generator, stats: TrackStats) -> list[dict | None]:
    """Wire tracks (as JSON-ready dicts) of detections ``rows`` of ``ct``, all frames at once; None where the
    head ray misses the floor (the pipeline leaves those out)."""
    m = len(rows)
    if m == 0:
        return []
    nz = cfg.tracks
    W, H = cam.width, cam.height
    px_scale = W / _REF_WIDTH
    boxes = ct.box[rows].astype(float)
    size = np.column_stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    boxes = boxes + rng.normal(0.0, 1.0, (m, 4)) * nz.box_rel_sd * np.tile(size, 2)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, W)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, H)
    boxes = np.column_stack([np.minimum(boxes[:, 0], boxes[:, 2]), np.minimum(boxes[:, 1], boxes[:, 3]),
                             np.maximum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 1], boxes[:, 3])])
    # keypoints: visible ones reported (or missed), hidden ones sometimes guessed
    truth_kp = ct.kp[rows]  # (m, 3, 3)
    visible = truth_kp[:, :, 2] > 0.5
    u01 = rng.random((m, 3))
    report = np.where(visible, u01 >= nz.keypoint_miss, u01 < nz.hidden_report)
    sd = np.where(visible, nz.keypoint_px_sd, nz.hidden_px_sd) * px_scale
    uv = truth_kp[:, :, :2] + rng.normal(0.0, 1.0, (m, 3, 2)) * sd[:, :, None]
    lo_v, hi_v = nz.visible_conf
    lo_h, hi_h = nz.hidden_conf
    c01 = rng.random((m, 3))
    conf = np.where(visible, lo_v + (hi_v - lo_v) * c01, lo_h + (hi_h - lo_h) * c01)
    inside = (uv[:, :, 0] >= 0) & (uv[:, :, 0] <= W) & (uv[:, :, 1] >= 0) & (uv[:, :, 1] <= H)
    report &= inside & (conf >= cfg.min_keypoint_conf)
    stats.keypoints += int(visible.sum())
    stats.keypoints_missed += int((visible & ~report).sum())
    stats.hidden_reported += int((~visible & report).sum())
    heads = np.concatenate([uv[:, 0], np.where(report[:, 0], conf[:, 0], 0.0)[:, None]], axis=1)
    proj = floor_positions(cam, boxes, heads, cfg.projection)
    ray_o = np.zeros((m, 3, 3))
    ray_d = np.zeros((m, 3, 3))
    rr, jj = np.nonzero(report)
    if rr.size:
        ray_o[rr, jj], ray_d[rr, jj] = keypoint_rays(cam, uv[rr, jj])
    confs = rng.uniform(*nz.track_conf, m)
    boxes = np.round(boxes, 1)
    uv = np.round(uv, 2)
    conf = np.round(conf, 3)
    out: list[dict | None] = []
    for r in range(m):
        if not proj.ok[r]:
            out.append(None)
            continue
        fl, cv = proj.floor[r], proj.cov[r]
        t = {"id": int(ids[r]), "box": boxes[r].tolist(), "conf": round(float(confs[r]), 3),
             "floor": fl.tolist(), "floor_cov": cv.tolist()}
        for j in np.flatnonzero(report[r]):
            t[KEYPOINTS[j]] = {"px": uv[r, j].tolist(), "conf": float(conf[r, j]),
                               "ray": {"origin": ray_o[r, j].tolist(), "dir": ray_d[r, j].tolist()}}
        out.append(t)
    return out


# ------------------------------------------------------------------------------------------------ shelf events
@dataclass
class ShelfStats:
    true_events: int = 0
    changes: int = 0
    merged: int = 0
    spilled: int = 0
    missed: int = 0
    events: int = 0
    sub_events: int = 0


@dataclass
class _Change:
    shelf: str
    events: list[dict]
    t_start: float
    t_end: float


def shelf_events(store: Store, truth: dict, cfg: PerceptionConfig, source: str = SHELF_SOURCE
                 ) -> tuple[list[tuple[float, ShelfEventMsg]], ShelfStats]:
    """The shelf events a gateway would publish for the session's true events: ``(publish time, message)``
    in publish order (see the module docstring)."""
    nz = cfg.shelf
    # seeded per session too: the draws go to the changes in shelf order, and a scripted case (neighbours at
    # the same two lanes early on) would otherwise get the same noise in every session
    sess = truth.get("session", {})
    key = f"{sess.get('preset', '')}:{sess.get('seed', '')}"
    rng = rng_for(cfg.seed, _STREAM_SHELF, key)
    rng_step = rng_for(cfg.seed, _STREAM_STEP, key)  # a stream of its own for the step times and ends
    stats = ShelfStats(true_events=len(truth.get("events", [])))
    by_shelf: dict[str, list[dict]] = {}
    for ev in sorted(truth.get("events", []), key=lambda e: (e["t_start"], e["event_id"])):
        by_shelf.setdefault(ev["shelf"], []).append(ev)
    changes: list[_Change] = []
    for shelf in sorted(by_shelf):
        cur: _Change | None = None
        for ev in by_shelf[shelf]:
            if cur is not None and ev["t_start"] <= cur.t_end + nz.merge_gap_s:
                cur.events.append(ev)
                cur.t_end = max(cur.t_end, ev["t_end"])
                stats.merged += 1
                continue
            cur = _Change(shelf, [ev], ev["t_start"], ev["t_end"])
            changes.append(cur)
    stats.changes = len(changes)
    # noise drawn in a fixed order (by shelf, then time), identification in emission order
    planned = []
    for ch in changes:
        lanes = [ln.id for ln in store.shelves[ch.shelf].lanes]
        pos = {ln: j for j, ln in enumerate(lanes)}
        delta = np.zeros(len(lanes))
        steps = np.full((len(lanes), 2), np.nan)
        for ev in ch.events:
            j = pos.get(ev["lanes"][0])
            if j is None:
                log.warning("true event %s: lane %s is not on shelf %s", ev["event_id"], ev["lanes"][0], ch.shelf)
                continue
            g = float(ev["grams"])
            if rng.random() < nz.spill_p and len(lanes) > 1:
                nb = j + (1 if (j == 0 or (j < len(lanes) - 1 and rng.random() < 0.5)) else -1)
                part = g * rng.uniform(*nz.spill_fraction)
                delta[nb] += part
                g -= part
                stats.spilled += 1
                steps[nb] = _step(ev, nz, rng_step)
            delta[j] += g
            steps[j] = _step(ev, nz, rng_step)
        moved = np.abs(delta) > 1e-9
        delta[moved] += rng.normal(0.0, nz.weight_sd_g, int(moved.sum()))
        t0 = ch.t_start + float(rng.normal(0.0, nz.time_sd_s))
        settled = ch.t_end + float(rng.normal(0.0, nz.time_sd_s))
        emit = max(settled, t0 + 0.1) + nz.emit_lag_s + abs(float(rng.normal(0.0, nz.emit_jitter_s)))
        t1 = max(_end(ch, nz, rng_step), t0 + 0.1)
        emit = max(emit, t1 + nz.emit_jitter_s)
        missed = rng.random() < nz.miss_p
        planned.append((emit, ch, lanes, delta, t0, t1, missed, steps))
    planned.sort(key=lambda p: (p[0], p[1].shelf))
    identifier = Identifier(Planogram.from_store(store))
    out: list[tuple[float, ShelfEventMsg]] = []
    seq = 0
    for emit, ch, lanes, delta, t0, t1, missed, steps in planned:
        if missed:
            stats.missed += 1
            continue
        sd = np.full(len(lanes), nz.weight_sd_g)
        involved = np.abs(delta) >= max(3.0, 6.0 * nz.weight_sd_g)
        if not involved.any():
            continue
        change = ShelfChange(ch.shelf, lanes, round(t0, 4), round(t1, 4), round(emit, 4), delta, sd, involved,
                             t_step=steps)
        parts = identifier.identify(change, learn=True)
        base = event_id(ch.shelf, change.t_start)
        for r in parts:
            msg = _event_msg(r, base, source, seq)
            if msg is None:
                continue
            seq += 1
            out.append((emit, msg))
            stats.events += 1
            stats.sub_events += int(r.parts > 1)
    return out, stats


def _end(ch: _Change, nz: ShelfNoise, rng: np.random.Generator) -> float:
    """When a gateway finds the shelf at rest after the change ``ch``: soon after the last hand let go (the
    swing and creep that the true ``t_end`` waits out are within its noise); the true end for a truth file
    older than ``t_release``."""
    if any("t_release" not in ev for ev in ch.events):
        return ch.t_end
    release = max(float(ev["t_release"]) for ev in ch.events)
    return release + nz.end_after_release_s + float(rng.exponential(nz.end_tail_s))


def _step(ev: dict, nz: ShelfNoise, rng: np.random.Generator) -> float:
    """The step time a gateway would find for the true event ``ev``: when the goods left or reached the plates
    (``t_change``), a little late; NaN (no step time) for a truth file older than ``t_change``."""
    lag = nz.step_lag_s + float(rng.normal(0.0, nz.step_sd_s))
    return float(ev["t_change"]) + lag if "t_change" in ev else math.nan


def _event_msg(r: Identified, base: str, source: str, seq: int) -> ShelfEventMsg | None:
    """The wire message of an identified (sub-)event, as the gateway writes it."""
    ch = r.change
    eid = base if r.parts == 1 else f"{base}.{r.part + 1}"
    if abs(r.total_g) < 1e-6:
        return None
    lanes = sorted(r.lanes, key=lambda kv: -abs(kv[1]))[:64]
    return ShelfEventMsg(
        source=source, seq=seq, ts=ch.t_end, shelf=ch.shelf, event_id=eid,
        parent_id=base if r.parts > 1 else None, action=r.action, t_start=ch.t_start, t_end=ch.t_end,
        t_step=step_time(r, 0.0), lanes=[LaneDelta(lane=ln, delta_g=round(dg, 2)) for ln, dg in lanes],
        delta_g=round(r.total_g, 2),
        candidates=[Candidate(sku=c.sku, qty=c.qty, p=round(min(1.0, c.p), 4), foreign=c.foreign)
                    for c in r.candidates[:32]],
    )


MAX_SHELF_MARKS = 256  # StatusMsg.shelf_watermarks holds at most this many


def shelf_heartbeats(events: list[tuple[float, ShelfEventMsg]], t_from: float, t_to: float, every: float,
                     source: str = SHELF_SOURCE, shelves: list[str] | None = None
                     ) -> list[tuple[float, StatusMsg]]:
    """The gateway's watermark heartbeats for ``events`` (publish time, message): one at every multiple ``t`` of
    ``every`` from ``t_from`` to ``t_to``, published at ``t``, whose watermark is ``t`` or the earliest
    ``t_start`` of an event not yet published at ``t`` (an event published at ``t`` goes before it); and, like
    the gateway, each shelf's own watermark, of its own events only, for the ``shelves`` given and those of
    the events (at most the message's 256)."""
    grid = np.arange(math.ceil(t_from / every), math.floor(t_to / every) + 1) * every
    ids = sorted(set(shelves or []) | {m.shelf for _, m in events})
    per = {sid: grid.copy() for sid in ids} if len(ids) <= MAX_SHELF_MARKS else {}
    mark = grid.copy()
    for t_pub, m in events:
        lo, hi = np.searchsorted(grid, m.t_start, "right"), np.searchsorted(grid, t_pub, "left")
        mark[lo:hi] = np.minimum(mark[lo:hi], m.t_start)
        if per:
            per[m.shelf][lo:hi] = np.minimum(per[m.shelf][lo:hi], m.t_start)
    return [(float(t), StatusMsg(source=source, seq=0, ts=float(t), device=source, kind="shelf", state="online",
                                 watermark=float(w),
                                 shelf_watermarks={sid: float(a[i]) for sid, a in per.items()}))
            for i, (t, w) in enumerate(zip(grid, mark, strict=True))]


def _numbered(events: list[tuple[float, ShelfEventMsg]], beats: list[tuple[float, StatusMsg]]
              ) -> tuple[list[tuple[float, ShelfEventMsg]], list[tuple[float, StatusMsg]]]:
    """Events and heartbeats of the shelf source numbered together in publish order (heartbeats after the
    events of the same instant)."""
    order = sorted([(t, 0, i) for i, (t, _) in enumerate(events)] + [(t, 1, i) for i, (t, _) in enumerate(beats)])
    ev, hb = list(events), list(beats)
    for seq, (t, kind, i) in enumerate(order):
        if kind == 0:
            ev[i] = (t, ev[i][1].model_copy(update={"seq": seq}))
        else:
            hb[i] = (t, hb[i][1].model_copy(update={"seq": seq}))
    return ev, hb


# ------------------------------------------------------------------------------------------------ everything
@dataclass
class Perceived:
    """A session's truth perception: the messages with their publish times, and what was done to them."""

    tracks: dict[str, list[tuple[float, TracksMsg]]]
    events: list[tuple[float, ShelfEventMsg]]
    truths: dict[str, CameraTruth]
    track_stats: dict[str, TrackStats]
    shelf_stats: ShelfStats | None
    heartbeats: list[tuple[float, StatusMsg]] = field(default_factory=list)  # the shelf source's watermark

    def feed(self) -> list[tuple[float, BaseModel]]:
        """Every message, in publish order (ties: events after tracks, heartbeats after events, then by source
        and seq)."""
        items: list[tuple[float, int, str, int, BaseModel]] = []
        for msgs in self.tracks.values():
            items.extend((t, 1, m.source, m.seq, m) for t, m in msgs)
        items.extend((t, 2, m.source, m.seq, m) for t, m in self.events)
        items.extend((t, 3, m.source, m.seq, m) for t, m in self.heartbeats)
        items.sort(key=lambda x: x[:4])
        return [(t, m) for t, _, _, _, m in items]


def perceive(session, config: PerceptionConfig | None = None, cameras: list[str] | None = None,
             with_shelf: bool = True) -> Perceived:
    """Truth perception of a ``sim.session.Session``: tracks of every camera, and (``with_shelf``) the shelf
    events."""
    cfg = config or PerceptionConfig()
    truths = camera_truths(session, cameras)
    colours = shopper_colours(session.truth, cfg)
    tracks, tstats = {}, {}
    for cid, ct in truths.items():
        tracks[cid], tstats[cid] = noisy_tracks(ct, session.cameras[cid], cfg, colours=colours)
    events, sstats, beats = [], None, []
    if with_shelf:
        events, sstats = shelf_events(session.store, session.truth, cfg)
        times = [t for msgs in tracks.values() for t, _ in msgs] + [t for t, _ in events]
        if cfg.shelf.heartbeat_s > 0 and times:
            beats = shelf_heartbeats(events, min(times), max(times), cfg.shelf.heartbeat_s,
                                     shelves=sorted(session.store.shelves))
            events, beats = _numbered(events, beats)
    return Perceived(tracks, events, truths, tstats, sstats, beats)
