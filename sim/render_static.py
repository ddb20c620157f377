"""One camera's view of the static world, computed once: every pixel's ray (``Camera.ray_map``) is cast
against the room (floor, walls, ceiling) and the shelf solids, giving a colour image, the distance along
the ray to the first surface (the depth the bodies are tested against), the surface kind and, for floor
pixels, the floor point (for the shoppers' shadows).

Colours are anti-aliased by casting ``supersample``² rays per pixel (offsets interpolated from the ray
map) where a pixel borders another surface or a strong contrast (elsewhere the centre ray's colour is
already right); depth, kind and floor points come from the pixel-centre ray.  Fisheye pixels beyond the lens's 90°
are black and get depth 0, so nothing is ever drawn there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.camera import Camera
from sim.render_scene import (
    KIND_CEILING,
    KIND_FIXTURE,
    KIND_FLOOR,
    KIND_NONE,
    KIND_PANEL,
    KIND_PRODUCT,
    KIND_WALL,
    Scene,
    Solid,
)

log = logging.getLogger(__name__)

STATIC_LIGHT = np.array([0.25, 0.35, 1.0]) / np.linalg.norm([0.25, 0.35, 1.0])


@dataclass
class StaticView:
    """Per-camera static buffers; flat arrays are indexed by ``row * width + col``."""

    camera: Camera
    image: np.ndarray       # (H, W, 3) uint8
    depth: np.ndarray       # (H*W,) float32, metres along the ray; 0 where nothing may be drawn
    kind: np.ndarray        # (H*W,) int8 surface kind
    floor_xy: np.ndarray    # (H*W, 2) float32 floor point of floor pixels (far away, 1e4 m, elsewhere)
    dirs: tuple[np.ndarray, np.ndarray, np.ndarray]  # ray direction components, each (H*W,) float32
    scratch: np.ndarray = None  # (H*W,) int32 buffer the body rasteriser may overwrite

    def __post_init__(self) -> None:
        if self.scratch is None:
            self.scratch = np.zeros(self.camera.width * self.camera.height, np.int32)

    @property
    def origin(self) -> np.ndarray:
        return self.camera.position


def _slab(o: np.ndarray, inv: tuple[np.ndarray, np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances of rays (origin ``o``, inverse direction components ``inv``) through the
    axis-aligned box ``lo``..``hi`` (all in one frame)."""
    tn = tf = None
    for k in range(3):
        a = (lo[k] - o[k]) * inv[k]
        b = (hi[k] - o[k]) * inv[k]
        n, f = np.minimum(a, b), np.maximum(a, b)
        tn = n if tn is None else np.maximum(tn, n)
        tf = f if tf is None else np.minimum(tf, f)
    return tn, tf


def _entry_face(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The face (0..5: -x, +x, -y, +y, -z, +z) through which rays ``d`` (N, 3, box frame) enter the box."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(np.abs(d) < 1e-9, 1e-9, d)
        near = np.where(dd > 0, (lo - o) / dd, (hi - o) / dd)
    axis = np.argmax(near, axis=1)
    comp = d[np.arange(len(d)), axis]
    return (axis * 2 + (comp < 0)).astype(np.int8)  # a ray going -x enters through the +x face


def _to_frame(v: np.ndarray, yaw: float) -> np.ndarray:
    """Store-frame vectors (N, 3) into a frame turned by ``yaw`` about z."""
    if yaw == 0:
        return v
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([v[:, 0] * c + v[:, 1] * s, -v[:, 0] * s + v[:, 1] * c, v[:, 2]], axis=1)


def _inverse(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore"):
        return tuple((1.0 / np.where(np.abs(d[:, k]) < 1e-9, 1e-9, d[:, k])).astype(np.float32)
                     for k in range(3))


def _local_point(o: np.ndarray, d: np.ndarray, t: np.ndarray, s: Solid) -> np.ndarray:
    p = o + d * t[:, None] - s.center
    c, sn = np.cos(s.yaw), np.sin(s.yaw)
    return np.stack([p[:, 0] * c + p[:, 1] * sn, -p[:, 0] * sn + p[:, 1] * c, p[:, 2]], axis=1)


def _face_normal(face: np.ndarray, yaw: float) -> np.ndarray:
    n = np.zeros((len(face), 3))
    axis = face // 2
    n[np.arange(len(face)), axis] = np.where(face % 2 == 1, 1.0, -1.0)
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([n[:, 0] * c - n[:, 1] * s, n[:, 0] * s + n[:, 1] * c, n[:, 2]], axis=1)


def _hash01(*ints: np.ndarray) -> np.ndarray:
    h = np.zeros(np.shape(ints[0]), np.int64)
    for k, v in enumerate(ints):
        h ^= (np.asarray(v, np.int64) * (73856093, 19349663, 83492791, 2654435761)[k % 4]) & 0xFFFFFF
    h = (h * 2654435761) >> 9
    return (h & 0xFF).astype(np.float32) / 255.0


def _product_colour(s: Solid, p: np.ndarray, face: np.ndarray, sid: int) -> np.ndarray:
    """Rows of goods: item cells with dark gaps, a label/pattern on the sides, lids on top."""
    h = s.half
    axis = face // 2
    out = np.empty((len(p), 3), np.float32)
    out[:] = s.color
    # cell index along both horizontal axes
    nxy = np.maximum(1, np.round(2 * h[:2] / s.item)).astype(np.int64)
    fx = (p[:, 0] + h[0]) / (2 * h[0]) * nxy[0]
    fy = (p[:, 1] + h[1]) / (2 * h[1]) * nxy[1]
    ix, iy = np.floor(fx), np.floor(fy)
    rx, ry = fx - ix, fy - iy
    gapx = 0.006 * nxy[0] / (2 * h[0])
    gapy = 0.006 * nxy[1] / (2 * h[1])
    vz = (p[:, 2] + h[2]) / (2 * h[2])
    jitter = 0.9 + 0.2 * _hash01(ix, iy, np.full(len(p), sid))
    side = axis < 2
    across = np.where(axis == 0, ry, rx)          # position across the item on a side face
    gap_side = np.where(axis == 0, (ry < gapy) | (ry > 1 - gapy), (rx < gapx) | (rx > 1 - gapx))
    if s.style == 0:
        pattern = side & (vz > 0.3) & (vz < 0.65)
    elif s.style == 1:
        pattern = side & (vz > 0.55)
    else:
        pattern = side & (across > 0.3) & (across < 0.55)
    out[pattern] = s.color2
    out[side & (vz > 0.9)] *= 0.7                  # lids
    top = axis == 2
    lid = top & (np.hypot(rx - 0.5, ry - 0.5) < 0.3)
    out[lid] = 0.5 * s.color2 + 0.5 * s.color
    gap = (top & ((rx < gapx) | (rx > 1 - gapx) | (ry < gapy) | (ry > 1 - gapy))) | (side & gap_side)
    out *= jitter[:, None]
    out[gap] *= 0.35
    return out


def sample_texture(tex: np.ndarray, u: np.ndarray, v: np.ndarray, cols: int = 1024) -> np.ndarray:
    """Bilinear samples (N, 3) float32 of ``tex`` at texel coordinates ``u`` (column), ``v`` (row)."""
    n = len(u)
    rows = max(1, -(-n // cols))
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n] = u
    my[:n] = v
    out = cv2.remap(tex, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 3)[:n].astype(np.float32)


def trace(scene: Scene, origin: np.ndarray, d: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cast rays ``d`` (N, 3 unit) from ``origin``: distance, kind, colour (N, 3 float32), floor points and
    the index of the solid hit (-1 for the room)."""
    o = np.asarray(origin, float)
    d = np.asarray(d, np.float32)
    n = len(d)
    sx, sy = scene.size
    lo = np.minimum([0.0, 0.0, 0.0], o - 0.05)
    hi = np.maximum([sx, sy, max(scene.ceiling, o[2] + 0.05)], o + 0.05)
    inv_all = _inverse(d)
    t = None
    axis = np.zeros(n, np.int8)
    for k in range(3):  # leaving the room: the nearest of the three exit planes
        tk = np.where(inv_all[k] > 0, np.float32(hi[k] - o[k]), np.float32(lo[k] - o[k])) * inv_all[k]
        if t is None:
            t = tk
        else:
            nearer = tk < t
            t = np.where(nearer, tk, t)
            axis[nearer] = k
    kind = np.where(axis == 2, np.where(d[:, 2] < 0, KIND_FLOOR, KIND_CEILING), KIND_WALL).astype(np.int8)
    owner = np.full(n, -1, np.int32)
    solids: list[Solid] = []
    for g in scene.groups:
        b = g.bound
        og = _to_frame((o - b.center)[None], b.yaw)[0]
        dg = _to_frame(d, b.yaw) if b.yaw else d
        tn, tf = _slab(og, _inverse(dg) if b.yaw else inv_all, -b.half, b.half)
        cand = np.nonzero((tn <= tf) & (tf > 1e-4) & (tn < t))[0]
        if cand.size == 0:
            solids.extend(g.solids)
            continue
        dc = dg[cand]
        inv = _inverse(dc)
        tc = t[cand]
        oc = owner[cand]
        for s in g.solids:
            if abs(np.sin(s.yaw - b.yaw)) < 1e-9:  # same frame as the unit (or turned by 180 degrees)
                so = _to_frame((s.center - b.center)[None], b.yaw)[0]
                tn, tf = _slab(og - so, inv, -s.half, s.half)
            else:
                sd = _to_frame(d[cand], s.yaw).astype(np.float32)
                tn, tf = _slab(_to_frame((o - s.center)[None], s.yaw)[0], _inverse(sd), -s.half, s.half)
            better = (tn <= tf) & (tn > 1e-4) & (tn < tc)
            tc = np.where(better, tn, tc)
            oc = np.where(better, len(solids), oc)
            solids.append(s)
        t[cand] = tc
        owner[cand] = oc
    if solids:
        kinds = np.array([s.kind for s in solids], np.int8)
        kind = np.where(owner >= 0, kinds[np.maximum(owner, 0)], kind)
    colour = np.empty((n, 3), np.float32)
    P = o + d * t[:, None]
    # floor: sample the baked texture
    floor_xy = np.full((n, 2), np.nan, np.float32)
    fl = np.nonzero(kind == KIND_FLOOR)[0]
    if fl.size:
        floor_xy[fl] = P[fl, :2]
        colour[fl] = sample_texture(scene.floor_texture, P[fl, 0] / scene.floor_res - 0.5,
                                    P[fl, 1] / scene.floor_res - 0.5)
    # walls: paint, a skirting board, a colour band, panel seams
    wl = np.nonzero(kind == KIND_WALL)[0]
    if wl.size:
        z = P[wl, 2]
        along = np.where(axis[wl] == 0, P[wl, 1], P[wl, 0])
        c = np.broadcast_to(scene.wall_color, (wl.size, 3)).copy()
        c[(z > 1.9) & (z < 2.25)] = scene.band_color
        c[z < 0.1] = (60, 60, 60)
        c[np.abs(np.mod(along, 1.2) - 0.6) > 0.592] *= 0.8
        shade = 0.72 + 0.15 * np.clip(z / scene.ceiling, 0, 1)
        colour[wl] = c * shade[:, None]
    # ceiling: tiles with bright lamp panels
    cl = np.nonzero(kind == KIND_CEILING)[0]
    if cl.size:
        c = np.full((cl.size, 3), 200.0, np.float32)
        if len(scene.lamps):  # lamps on a regular grid: distance to the nearest by modular arithmetic
            step, first = scene.lamp_step, scene.lamps[0]
            dlx = np.abs(np.mod(P[cl, 0] - first[0] + step / 2, step) - step / 2)
            dly = np.abs(np.mod(P[cl, 1] - first[1] + step / 2, step) - step / 2)
            c[np.maximum(dlx, dly) < 0.3] = 255.0
        grid = (np.abs(np.mod(P[cl, 0], 0.6) - 0.3) > 0.29) | (np.abs(np.mod(P[cl, 1], 0.6) - 0.3) > 0.29)
        c[grid] = 160.0
        colour[cl] = c
    # solids: flat fixtures, textured products, shaded by face
    for sid in np.unique(owner[owner >= 0]):
        s = solids[sid]
        idx = np.nonzero(owner == sid)[0]
        f = _entry_face(_to_frame((o - s.center)[None], s.yaw)[0], _to_frame(d[idx], s.yaw), -s.half, s.half)
        nrm = _face_normal(f, s.yaw)
        shade = (0.55 + 0.45 * np.clip(nrm @ STATIC_LIGHT, 0, 1)) * s.light
        if s.kind == KIND_PRODUCT:
            c = _product_colour(s, _local_point(o, d[idx], t[idx], s), f, int(sid))
        elif s.kind == KIND_PANEL:
            lp = _local_point(o, d[idx], t[idx], s)
            c = np.broadcast_to(s.color * 0.85, (idx.size, 3)).copy()
            c[np.abs(np.mod(lp[:, 0] + lp[:, 1], 0.05) - 0.025) > 0.022] *= 0.8
        else:
            c = np.broadcast_to(s.color, (idx.size, 3)).copy()
            edge = f // 2 != 2
            c[edge] *= 0.92
        colour[idx] = c * shade[:, None].astype(np.float32)
    return t, kind, colour, floor_xy, owner


def build_static_view(scene: Scene, camera: Camera, supersample: int = 2) -> StaticView:
    """Ray-cast ``scene`` for every pixel of ``camera`` (see the module docstring)."""
    W, H = camera.width, camera.height
    rays = camera.ray_map()                                 # (H, W, 3) float64
    o = camera.position
    flat = rays.reshape(-1, 3)
    t, kind, colour, floor_xy, owner = trace(scene, o, flat)
    if supersample > 1:
        # anti-alias where it shows: pixels at a change of surface or with a strong local contrast get
        # supersample^2 rays (offsets interpolated from the ray map); the rest keep their centre ray
        surf = (owner.astype(np.int64) * 8 + kind).reshape(H, W)
        lum = colour.reshape(H, W, 3).max(axis=2)
        edge = np.zeros((H, W), bool)
        for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                     ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
            e = (surf[a] != surf[b]) | (np.abs(lum[a] - lum[b]) > 10)
            edge[a] |= e
            edge[b] |= e
        idx = np.nonzero(edge.ravel())[0]
        du = np.gradient(rays, axis=1).reshape(-1, 3)[idx]
        dv = np.gradient(rays, axis=0).reshape(-1, 3)[idx]
        base = flat[idx]
        offs = (np.arange(supersample) + 0.5) / supersample - 0.5
        acc = np.zeros((idx.size, 3), np.float32)
        for oy in offs:
            for ox in offs:
                sub = base + ox * du + oy * dv
                sub /= np.linalg.norm(sub, axis=1, keepdims=True)
                acc += trace(scene, o, sub)[2]
        colour[idx] = acc / supersample ** 2
    # rays a fisheye clipped at 90 degrees off-axis are not real: black, and nothing drawn there
    off_axis = flat @ camera.R[2]
    invalid = off_axis < 1e-4
    colour[invalid] = 0.0
    t = np.where(invalid, 0.0, t).astype(np.float32)
    kind[invalid] = KIND_NONE
    image = np.clip(colour, 0, 255).astype(np.uint8).reshape(H, W, 3)
    floor_xy[invalid | np.isnan(floor_xy[:, 0])] = 1e4
    f32 = flat.astype(np.float32)
    dirs = (np.ascontiguousarray(f32[:, 0]), np.ascontiguousarray(f32[:, 1]), np.ascontiguousarray(f32[:, 2]))
    log.debug("static view %s: %d floor, %d shelf pixels", camera.id, int(np.sum(kind == KIND_FLOOR)),
              int(np.sum((kind == KIND_PRODUCT) | (kind == KIND_FIXTURE))))
    return StaticView(camera, image, t, kind, floor_xy, dirs)
