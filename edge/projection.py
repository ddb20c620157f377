"""Floor projection of tracked people, for ceiling cameras.

A ceiling camera sees people from above, so the bottom of a box is not where the feet are.  The floor position
is taken where the ray through the head keypoint meets the plane of a typical head height (the head is above
the feet for an upright person); its covariance comes from the spread of head heights (a shift along the ray's
horizontal direction, larger far from the camera's axis), the keypoint's pixel noise and the body's lean.
Without a confident head keypoint the box centre's ray at mid-body height is used, with a larger covariance.
So it is where the head keypoint disagrees with the box: the two floor points of an upright person seen by a
fisheye camera looking down lie within half a metre of each other (true boxes and heads: 99 % within 0.6 m),
but a detector near the fisheye's rim, where a person lies radially across the image, may put the head at the
feet's end, a couple of metres off on the floor.  Such a head (``head_box_max_m`` per camera model; none for
pinhole cameras, whose oblique views spread the box along the line of sight) is not used.
Wrists are published as rays (camera centre and unit direction in the store frame) for fusion to reason about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.camera import Camera, ray_plane


@dataclass(frozen=True)
class ProjectionConfig:
    head_height_m: float = 1.60
    head_height_sd_m: float = 0.12
    body_height_m: float = 1.0  # where the box-centre ray is cut when no head is seen
    body_height_sd_m: float = 0.35
    keypoint_px_sd: float = 3.0
    box_px_sd: float = 12.0
    lean_sd_m: float = 0.10
    min_head_conf: float = 0.3
    # per camera model: the most a head keypoint's floor point may be from its box centre's to be used
    head_box_max_m: tuple[tuple[str, float], ...] = (("fisheye", 0.9),)


@dataclass
class Projected:
    floor: np.ndarray  # (N, 2)
    cov: np.ndarray  # (N, 3): xx, xy, yy
    ok: np.ndarray  # (N,) bool: the ray met the plane in front of the camera
    head: np.ndarray | None = None  # (N,) bool: the head keypoint was used (confident, agreeing with the box)


def _cov(cam: Camera, dirs: np.ndarray, dist: np.ndarray, h_sd: float | np.ndarray, px_sd: float | np.ndarray,
         lean_sd: float) -> np.ndarray:
    """Floor covariance ``(N, 3)`` xx, xy, yy of points on rays ``dirs`` at ``dist`` metres, for a height spread
    ``h_sd`` and a pixel spread ``px_sd`` (each per ray or one for all) and the body's lean."""
    dz = np.maximum(np.abs(dirs[:, 2]), 1e-3)
    v = dirs[:, :2] / dz[:, None]  # horizontal shift per metre of height error
    f = float(np.sqrt(cam.K[0, 0] * cam.K[1, 1]))
    iso = (dist * px_sd / f / dz) ** 2 + lean_sd ** 2
    xx = h_sd ** 2 * v[:, 0] ** 2 + iso
    yy = h_sd ** 2 * v[:, 1] ** 2 + iso
    xy = h_sd ** 2 * v[:, 0] * v[:, 1]
    return np.stack([xx, xy, yy], axis=1)


def floor_positions(cam: Camera, boxes: np.ndarray, heads: np.ndarray | None,
                    cfg: ProjectionConfig = ProjectionConfig()) -> Projected:
    """Floor positions of people from their boxes ``(N, 4)`` and head keypoints ``(N, 3)`` (u, v, conf)."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return Projected(np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0, bool))
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    use_head = np.zeros(n, bool)
    px = centre.copy()
    if heads is not None:
        heads = np.asarray(heads, float).reshape(-1, 3)
        use_head = heads[:, 2] >= cfg.min_head_conf
        px[use_head] = heads[use_head, :2]
    height = np.where(use_head, cfg.head_height_m, cfg.body_height_m)
    limit = dict(cfg.head_box_max_m).get(cam.model)
    # a head is checked against its box's floor point where the camera model asks for it: the heads' and
    # those box centres' rays in one call
    idx = np.flatnonzero(use_head) if limit is not None else np.zeros(0, np.int64)
    o_all, d_all = cam.pixel_to_ray(np.concatenate([px, centre[idx]]) if len(idx) else px)
    p_all, ok_all = ray_plane(o_all, d_all, np.concatenate([height, np.full(len(idx), cfg.body_height_m)]))
    origins, dirs, pts, ok = o_all[:n], d_all[:n], p_all[:n], ok_all[:n]
    if len(idx):  # a head far from its box's floor point: the box instead
        o_box, d_box, p_box, ok_box = o_all[n:], d_all[n:], p_all[n:], ok_all[n:]
        bad = ok_box & ~(np.hypot(*(pts[idx, :2] - p_box[:, :2]).T) <= limit)
        k = idx[bad]
        use_head[k] = False
        pts[k], ok[k], origins[k], dirs[k] = p_box[bad], True, o_box[bad], d_box[bad]
    dist = np.linalg.norm(pts - origins, axis=1)
    cov = _cov(cam, dirs, dist, np.where(use_head, cfg.head_height_sd_m, cfg.body_height_sd_m),
               np.where(use_head, cfg.keypoint_px_sd, cfg.box_px_sd), cfg.lean_sd_m)
    return Projected(pts[:, :2], cov, ok, use_head)


def keypoint_rays(cam: Camera, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays (origins, unit dirs), each ``(N, 3)``, through keypoints ``(N, 2)`` in pixels."""
    return cam.pixel_to_ray(np.asarray(keypoints, float).reshape(-1, 2))
