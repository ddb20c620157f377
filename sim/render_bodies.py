"""Shoppers as capsules and spheres, ray-cast per pixel in narrow spans around each part's projection.

:func:`body_parts` turns a frame's bodies into one flat table of parts (vectorised over bodies): a torso of
two capsules (wider than deep), shoulders, neck, head (hair or a cap on top and at the back, skin at the
face), arms, hands, legs, feet, an item in the active hand, a basket, and per-shopper details the
appearance leaves open (sleeves, an open jacket, stripes, long hair, a backpack; fixed by the shopper id).
:func:`rasterize` casts the rays of the pixels near each part (from the static view's ray map, so pinhole
distortion and fisheye come out exactly as the camera model says) against its capsule (exact ray-capsule
intersection), depth-tests against the static scene and between bodies (nearest wins), shades the winners
(Lambert, a light from above) and writes them into the image.

Candidate pixels per part are row runs inside a stadium around its projected axis whose radius bounds the
projected end spheres (through the lens's local stretch and skew) and the bend of the projected axis; a
test compares the result with far wider spans.  Per-frame cost is proportional to the parts' projected
area; per full frame there is only the label buffer and the depth buffer copy.  Not thread-safe (each
static view's scratch buffer is shared by its frames).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from sim.body import Body, J
from sim.render_scene import sku_colours
from sim.render_static import StaticView

BODY_LIGHT = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])
NEAR = 0.05             # nothing nearer the camera than this is drawn, metres


@dataclass
class Parts:
    """Every capsule of a frame (a sphere is a capsule with a negligible axis)."""

    pa: np.ndarray        # (P, 3) axis start
    pb: np.ndarray        # (P, 3) axis end
    r: np.ndarray         # (P,) radius
    body: np.ndarray      # (P,) index into the frame's bodies
    c1: np.ndarray        # (P, 3) colour, BGR float
    c2: np.ndarray        # (P, 3) second colour, used where the surface normal . pat < thr
    pat: np.ndarray       # (P, 3)
    thr: np.ndarray       # (P,)
    stripe: np.ndarray    # (P,) stripe period along the axis in metres, 0 for none
    sphere: np.ndarray | None = None  # (B, 4) per body: a bounding sphere's centre and radius

    def __len__(self) -> int:
        return len(self.r)

    def select(self, keep: np.ndarray) -> Parts:
        return Parts(*(getattr(self, f)[keep] for f in PART_FIELDS), sphere=self.sphere)


PART_FIELDS = ("pa", "pb", "r", "body", "c1", "c2", "pat", "thr", "stripe")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


@dataclass(frozen=True)
class _Traits:
    """Clothing details the appearance leaves open, fixed per shopper id (so a shopper looks the same in
    every camera and frame): sleeves, shoes, shirt stripes, an open jacket, a cap, long hair, a backpack."""

    long_sleeves: bool
    shoes: int
    stripe: float
    basket: int
    jacket: tuple[int, int, int] | None
    cap: tuple[int, int, int] | None
    long_hair: bool
    backpack: tuple[int, int, int] | None


_GARMENTS = ((30, 30, 35), (120, 70, 30), (40, 40, 120), (90, 100, 40), (160, 160, 165), (30, 60, 100),
             (200, 200, 205), (50, 120, 170))


def _traits(shopper: str) -> _Traits:
    h = hashlib.sha256(shopper.encode()).digest()
    garment = lambda k: _GARMENTS[h[k] % len(_GARMENTS)]
    return _Traits(long_sleeves=h[0] % 2 == 0, shoes=h[1] % 3, stripe=(0.0, 0.0, 0.07, 0.11)[h[2] % 4],
                   basket=h[3] % 3, jacket=garment(5) if h[4] % 4 == 0 else None,
                   cap=garment(7) if h[6] % 6 == 0 else None, long_hair=h[8] % 3 == 0,
                   backpack=garment(10) if h[9] % 6 == 0 else None)


_SHOES = np.float32([[25, 25, 30], [220, 220, 225], [40, 60, 110]])
_BASKETS = np.float32([[40, 40, 190], [170, 90, 30], [40, 140, 40]])


def body_parts(bodies: list[Body]) -> Parts:
    """The parts table of ``bodies`` (see the module docstring); the order of parts is by body."""
    B = len(bodies)
    if B == 0:
        z3, z1 = np.zeros((0, 3)), np.zeros(0)
        return Parts(z3, z3, z1, np.zeros(0, np.int64), z3, z3, z3, z1, z1, np.zeros((0, 4)))
    jt = np.stack([np.asarray(b.joints, float) for b in bodies])           # (B, 15, 3)
    ap = [b.appearance for b in bodies]
    rt = np.array([a.torso_radius for a in ap])
    ra = np.array([a.arm_radius for a in ap])
    rl = np.array([a.leg_radius for a in ap])
    rh = np.array([a.head_radius for a in ap])
    shirt = np.float32([a.shirt for a in ap])
    trousers = np.float32([a.trousers for a in ap])
    skin = np.float32([a.skin for a in ap])
    hair = np.float32([a.hair for a in ap])
    traits = [_traits(b.shopper) for b in bodies]
    jacket = np.float32([t.jacket or (0, 0, 0) for t in traits])
    has_jacket = np.array([t.jacket is not None for t in traits])
    outer = np.where(has_jacket[:, None], jacket, shirt)       # what covers the torso's back and the arms
    sleeve = np.where(np.array([t.long_sleeves for t in traits])[:, None] | has_jacket[:, None], outer, skin)
    shoes = _SHOES[[t.shoes for t in traits]]
    stripe = np.array([0.0 if t.jacket else t.stripe for t in traits])
    basket_c = _BASKETS[[t.basket for t in traits]]
    cap = np.float32([t.cap or (0, 0, 0) for t in traits])
    has_cap = np.array([t.cap is not None for t in traits])
    long_hair = np.array([t.long_hair and t.cap is None for t in traits])
    pack = np.float32([t.backpack or (0, 0, 0) for t in traits])
    has_pack = np.array([t.backpack is not None for t in traits])

    def j(name: str) -> np.ndarray:
        return jt[:, J[name]]

    up = _unit(j("neck") - j("pelvis"))
    lr = j("lshoulder") - j("rshoulder")
    left = _unit(lr - np.sum(lr * up, axis=1, keepdims=True) * up)
    fwd = np.cross(left, up)
    scale = rt / 0.17
    zero3 = np.zeros((B, 3))
    no_pat = np.zeros(B)
    table: list[tuple] = []

    def add(pa, pb, r, c1, c2=None, pat=None, thr=None, stripes=None):
        table.append((pa, pb, r, c1, c1 if c2 is None else c2, zero3 if pat is None else pat,
                      no_pat if thr is None else thr, no_pat if stripes is None else stripes))

    tiny = up * 1e-4  # a sphere's axis
    smid = (j("lshoulder") + j("rshoulder")) / 2
    rc = 0.7 * rt
    top = smid - up * (0.5 * rc)[:, None]
    bottom = j("pelvis") + up * 0.02
    # an open jacket shows the shirt in a strip down the front (normal . forward > 0.8)
    front_pat = np.where(has_jacket[:, None], -fwd, 0.0)
    front_thr = np.where(has_jacket, -0.8, 0.0)
    for sgn in (1.0, -1.0):
        off = left * (sgn * 0.4 * rt)[:, None]
        add(top + off, bottom + off, rc, outer, shirt, front_pat, front_thr, stripes=stripe)
    add(j("lshoulder"), j("rshoulder"), 0.42 * rt, outer)
    add(j("neck"), (j("neck") + j("head")) / 2, 0.045 * scale, skin)
    # head: hair (or a cap) on top and at the back, the face in front
    head_pat = _unit(0.6 * up - 0.8 * fwd)
    crown = np.where(has_cap[:, None], cap, hair)
    add(j("head") - tiny, j("head") + tiny, rh, crown, skin, head_pat, np.full(B, -0.25))
    brim = j("head") + up * (0.35 * rh)[:, None] + fwd * (0.75 * rh)[:, None]
    add(brim, brim + fwd * (0.55 * rh)[:, None], np.where(has_cap, 0.28 * rh, 0.0), cap)
    nape = j("head") - fwd * (0.35 * rh)[:, None] - up * (0.45 * rh)[:, None]
    add(nape - up * 0.05, nape + up * 0.02, np.where(long_hair, 0.8 * rh, 0.0), hair)
    for s in "lr":
        add(j(s + "shoulder"), j(s + "elbow"), ra, outer)
        add(j(s + "elbow"), j(s + "wrist"), 0.85 * ra, sleeve)
        hand = j(s + "wrist") + _unit(j(s + "wrist") - j(s + "elbow")) * 0.05
        add(hand - tiny, hand + tiny, 0.045 * scale, skin)
    # a backpack on the upper back
    back = smid - fwd * (0.7 * rt + 0.06)[:, None]
    add(back - up * 0.08, back - up * 0.32, np.where(has_pack, 0.6 * rt, 0.0), pack, pack * 0.6, up,
        np.full(B, 0.5))
    fwd_h = _unit(fwd * np.array([1.0, 1.0, 0.0]) + np.array([1e-6, 0, 0]))
    for s in "lr":
        add(j(s + "hip"), j(s + "knee"), rl, trousers)
        add(j(s + "knee"), j(s + "ankle"), 0.8 * rl, trousers)
        add(j(s + "ankle") - up * 0.03, j(s + "ankle") - up * 0.03 + fwd_h * 0.15, 0.045 * scale, shoes)
    # the active hand (the one farther from the body's axis) holds the item; a basket hangs from the other
    axis_pt = lambda p: j("pelvis") + np.sum((p - j("pelvis")) * up, axis=1, keepdims=True) * up
    reach_l = np.linalg.norm(j("lwrist") - axis_pt(j("lwrist")), axis=1)
    reach_r = np.linalg.norm(j("rwrist") - axis_pt(j("rwrist")), axis=1)
    active_r = reach_r >= reach_l
    act = np.where(active_r[:, None], j("rwrist"), j("lwrist"))
    act_el = np.where(active_r[:, None], j("relbow"), j("lelbow"))
    other = np.where(active_r[:, None], j("lwrist"), j("rwrist"))
    held_r = np.array([0.0 if b.holding is None else 0.045 for b in bodies])
    held_c = np.float32([sku_colours(b.holding)[0] if b.holding else (0, 0, 0) for b in bodies])
    held_c2 = np.float32([sku_colours(b.holding)[1] if b.holding else (0, 0, 0) for b in bodies])
    centre = act + _unit(act - act_el) * 0.09
    add(centre - up * 0.04, centre + up * 0.04, held_r, held_c, held_c2, fwd, np.full(B, 0.3))
    bas = np.array([0.09 if a.carries_basket else 0.0 for a in ap])
    bc = other - up * 0.16
    add(bc - fwd_h * 0.13, bc + fwd_h * 0.13, bas, basket_c, basket_c * 0.55, up, np.full(B, -0.5))

    P = len(table)
    cols = list(zip(*table))
    stack3 = lambda k: np.stack(cols[k], axis=1).reshape(B * P, 3)
    stack1 = lambda k: np.stack(cols[k], axis=1).reshape(B * P)
    parts = Parts(stack3(0), stack3(1), stack1(2), np.repeat(np.arange(B), P), stack3(3).astype(np.float32),
                  stack3(4).astype(np.float32), stack3(5), stack1(6), stack1(7))
    parts = parts.select(parts.r > 0)
    ends = np.concatenate([parts.pa, parts.pb])
    body2 = np.concatenate([parts.body, parts.body])
    cnt = np.maximum(np.bincount(body2, minlength=B), 1)
    centre = np.stack([np.bincount(body2, ends[:, k], minlength=B) for k in range(3)], axis=1) / cnt[:, None]
    rad = np.zeros(B)
    np.maximum.at(rad, body2, np.linalg.norm(ends - centre[body2], axis=1) + np.concatenate([parts.r, parts.r]))
    parts.sphere = np.concatenate([centre, rad[:, None]], axis=1)
    return parts


@dataclass
class Raster:
    """What :func:`rasterize` drew: a label buffer (body index per pixel, -1 for none) and, per body, its
    silhouette pixel count and box (unoccluded, inside the image), visible pixel count and box, and an
    estimate of its projected outline's box from the parts' end discs (not clipped to the image; slightly
    generous; NaN when none of it is in front)."""

    label: np.ndarray        # (H*W,) int16
    depth: np.ndarray        # (H*W,) float32: static depth with the bodies drawn in
    silhouette_px: np.ndarray
    silhouette_box: np.ndarray  # (B, 4) x1, y1, x2, y2 (pixel edges); NaN for none
    visible_px: np.ndarray
    visible_box: np.ndarray
    outline_box: np.ndarray


def _in_model(cam, xc: np.ndarray) -> np.ndarray:
    """Camera-frame points whose direction lies where the lens model is valid (its distortion still grows
    with the angle; ``Camera`` keeps that limit as ``_r_max``, a normalised radius)."""
    r_max = getattr(cam, "_r_max", np.inf)
    if not np.isfinite(r_max):
        return np.ones(len(xc), bool)
    return np.hypot(xc[:, 0], xc[:, 1]) < r_max * np.maximum(xc[:, 2], 0)


def _discs(view: StaticView, parts: Parts
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each part's projection as a stadium: the projected axis ends (P, 2, 2), a radius in pixels that
    covers the part's silhouette (the end spheres' projected radii through the lens's local scale, widened
    by the bend of the projected axis, plus a margin), a mask of parts wholly representable (in front of
    the camera and inside the lens model's range), a mask of parts only partly so (drawn over the whole
    image: the per-pixel ray test is exact anyway), and the projected axis ends' discs' radii (P, 2)."""
    cam = view.camera
    C = view.origin
    P = len(parts)
    ends = np.stack([parts.pa, parts.pb], axis=1).reshape(-1, 3)                  # (2P, 3)
    r = np.repeat(parts.r, 2)
    D = ends - C
    dist = np.linalg.norm(D, axis=1)
    w = D / np.maximum(dist, 1e-9)[:, None]
    ref = np.where(np.abs(w[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    u1 = _unit(np.cross(w, ref))
    u2 = np.cross(w, u1)
    rr = r[:, None]
    pts = np.concatenate([ends, ends + u1 * rr, ends - u1 * rr, ends + u2 * rr, ends - u2 * rr,
                          (parts.pa + parts.pb) / 2])
    uv, _ = cam.project(pts)
    xc = cam.to_camera(pts)
    good = (xc[:, 2] > NEAR) & _in_model(cam, xc) & np.all(np.isfinite(uv), 1)
    n2 = 2 * P
    c_uv, m_uv = uv[:n2], uv[5 * n2:]
    p1, m1, p2, m2 = (uv[k * n2:(k + 1) * n2] for k in (1, 2, 3, 4))
    ratio = np.clip(r / np.maximum(dist, 1e-9), 0, 0.99)
    widen = np.arcsin(ratio) / np.maximum(np.arctan(ratio), 1e-12)   # a sphere's true angular radius
    v1, v2 = (p1 - m1) / 2, (p2 - m2) / 2    # images of two perpendicular radii: the lens's local 2x2 map
    s11, s22, s12 = np.sum(v1 * v1, 1), np.sum(v2 * v2, 1), np.sum(v1 * v2, 1)
    stretch = np.sqrt((s11 + s22 + np.sqrt((s11 - s22) ** 2 + 4 * s12 ** 2)) / 2)  # its largest singular value
    # the lens stretches one side of a sphere more than the other: widen by the worst one-sided excess
    skew = np.ones(len(ends))
    for q_plus, q_minus, sq in ((p1, m1, s11), (p2, m2, s22)):
        one_side = np.maximum(np.linalg.norm(q_plus - c_uv, axis=1), np.linalg.norm(q_minus - c_uv, axis=1))
        skew = np.maximum(skew, one_side / np.maximum(np.sqrt(sq), 1e-9))
    rad = (stretch * skew * widen * 1.06 + 1.0).reshape(P, 2)
    g = np.ones((P, 2), bool)
    for k in range(5):
        g &= good[k * n2:(k + 1) * n2].reshape(P, 2)
    ok = g.all(axis=1) & good[5 * n2:]
    c_uv = c_uv.reshape(P, 2, 2)
    bend = np.linalg.norm(m_uv - c_uv.mean(axis=1), axis=1)
    R = np.where(ok, rad.max(axis=1) + bend + 1.0, 0.0)
    inside_cam = dist.reshape(P, 2).min(axis=1) <= parts.r * 1.05
    partial = (~ok & (g.any(axis=1) | good[5 * n2:])) | inside_cam
    return c_uv, R, ok & ~partial, partial, rad


def _cull(view: StaticView, parts: Parts, B: int) -> Parts:
    """Drop the parts of bodies whose bounding sphere is certainly outside the image."""
    if parts.sphere is None:
        return parts
    cam = view.camera
    centre, rad = parts.sphere[:, :3], parts.sphere[:, 3]
    D = view.origin - centre
    dist = np.linalg.norm(D, axis=1)
    zc = cam.to_camera(centre)[:, 2]
    keep = zc > -rad          # not wholly behind the camera
    sure = keep & (zc - rad > NEAR) & (dist > rad * 1.05)
    if sure.any():
        idx = np.nonzero(sure)[0]
        w = D[idx] / dist[idx, None]
        ref = np.where(np.abs(w[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
        u1 = _unit(np.cross(w, ref))
        u2 = np.cross(w, u1)
        ratio = rad[idx] / dist[idx]
        cc = centre[idx] + D[idx] * (ratio ** 2)[:, None]
        rho = rad[idx] * np.sqrt(1 - ratio ** 2) / np.cos(np.pi / 8)
        ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        pts = (cc[:, None] + rho[:, None, None] * (np.cos(ang)[None, :, None] * u1[:, None]
                                                   + np.sin(ang)[None, :, None] * u2[:, None])).reshape(-1, 3)
        uv, _ = cam.project(pts)
        xc = cam.to_camera(pts)
        valid = ((xc[:, 2] > NEAR) & _in_model(cam, xc) & np.all(np.isfinite(uv), axis=1)).reshape(-1, 8).all(1)
        uv = uv.reshape(-1, 8, 2)
        off = ((uv[..., 0].max(axis=1) < 0) | (uv[..., 0].min(axis=1) > cam.width)
               | (uv[..., 1].max(axis=1) < 0) | (uv[..., 1].min(axis=1) > cam.height))
        keep[idx[valid & off]] = False
    sel = keep[parts.body]
    return parts if sel.all() else parts.select(sel)


def _spans(axis_uv: np.ndarray, R: np.ndarray, ok: np.ndarray, partial: np.ndarray, W: int, H: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pixels of every part: per image row, the run of pixel centres within distance ``R`` of the
    part's projected axis (a stadium that covers its silhouette, see :func:`_discs`).  Returns flat pixel
    indices and their rows, ordered by part then row, and the number of entries per part.  Parts only
    partly representable get the whole image."""
    P = len(R)
    a = axis_uv[:, 0]
    b = axis_uv[:, 1]
    ab = b - a
    L = np.linalg.norm(ab, axis=1)
    u = ab / np.maximum(L, 1e-9)[:, None]
    big = 1e9
    v_lo = np.minimum(a[:, 1], b[:, 1]) - R
    v_hi = np.maximum(a[:, 1], b[:, 1]) + R
    with np.errstate(invalid="ignore"):
        y0 = np.clip(np.floor(np.nan_to_num(v_lo, nan=H)), 0, H).astype(np.int64)
        y1 = np.clip(np.ceil(np.nan_to_num(v_hi, nan=0)) + 1, 0, H).astype(np.int64)
    y0[~ok], y1[~ok] = 0, 0
    y0[partial], y1[partial] = 0, H
    nrows = np.maximum(y1 - y0, 0)
    pair_part = np.repeat(np.arange(P), nrows)
    if pair_part.size == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(P, np.int64)
    row = y0[pair_part] + (np.arange(pair_part.size) - np.repeat(np.cumsum(nrows) - nrows, nrows))
    yc = row + 0.5
    ax, ay = a[pair_part, 0], a[pair_part, 1]
    bx, by = b[pair_part, 0], b[pair_part, 1]
    r = R[pair_part]
    lo = np.full(pair_part.size, big)
    hi = np.full(pair_part.size, -big)
    for cx, cy in ((ax, ay), (bx, by)):   # the two end discs
        dy = yc - cy
        w = np.sqrt(np.maximum(r * r - dy * dy, 0))
        inside = np.abs(dy) <= r
        lo = np.where(inside, np.minimum(lo, cx - w), lo)
        hi = np.where(inside, np.maximum(hi, cx + w), hi)
    # the band between them: |n.(p-a)| <= r and 0 <= u.(p-a) <= L, both linear in x
    ux, uy = u[pair_part, 0], u[pair_part, 1]
    Lp = L[pair_part]
    dy = yc - ay
    with np.errstate(divide="ignore", invalid="ignore"):
        nx, ny = -uy, ux
        k1 = np.where(np.abs(nx) > 1e-9, (-r - ny * dy) / nx, -big)
        k2 = np.where(np.abs(nx) > 1e-9, (r - ny * dy) / nx, big)
        ok1 = (np.abs(nx) > 1e-9) | (np.abs(ny * dy) <= r)
        m1 = np.where(np.abs(ux) > 1e-9, (0 - uy * dy) / ux, -big)
        m2 = np.where(np.abs(ux) > 1e-9, (Lp - uy * dy) / ux, big)
        ok2 = (np.abs(ux) > 1e-9) | ((uy * dy >= 0) & (uy * dy <= Lp))
    blo = np.maximum(np.minimum(k1, k2), np.minimum(m1, m2)) + ax
    bhi = np.minimum(np.maximum(k1, k2), np.maximum(m1, m2)) + ax
    band = ok1 & ok2 & (blo <= bhi) & (Lp > 1e-6)
    lo = np.where(band, np.minimum(lo, blo), lo)
    hi = np.where(band, np.maximum(hi, bhi), hi)
    full = partial[pair_part]
    lo = np.where(full, 0.5, lo)
    hi = np.where(full, W - 0.5, hi)
    c0 = np.clip(np.ceil(lo - 0.5), 0, W).astype(np.int64)
    c1 = np.clip(np.floor(hi - 0.5) + 1, 0, W).astype(np.int64)
    keep = c1 > c0
    start = (row * W + c0)[keep]
    n = (c1 - c0)[keep]
    counts = np.bincount(pair_part[keep], weights=n, minlength=P).astype(np.int64)
    return _ranges(start, n), np.repeat(row[keep].astype(np.int32), n), counts


def _ranges(start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start[i], start[i] + n[i])`` (all ``n`` > 0), by one cumulative sum."""
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, np.int32)
    inc = np.ones(total, np.int32)
    first = np.cumsum(n) - n
    inc[0] = start[0]
    inc[first[1:]] = start[1:] - (start[:-1] + n[:-1] - 1)
    return np.cumsum(inc, dtype=np.int32)


def rasterize(view: StaticView, parts: Parts, n_bodies: int, image: np.ndarray) -> Raster:
    """Draw ``parts`` into ``image`` ((H, W, 3) uint8, changed in place) with the depth test; see
    :class:`Raster` for what comes back."""
    cam = view.camera
    W, H = cam.width, cam.height
    B = n_bodies
    nan4 = np.full((B, 4), np.nan)
    label = np.full(W * H, -1, np.int16)
    zbuf = view.depth.copy()
    empty = Raster(label, zbuf, np.zeros(B, np.int64), nan4.copy(), np.zeros(B, np.int64), nan4.copy(),
                   nan4.copy())
    if len(parts) == 0:
        return empty
    parts = _cull(view, parts, B)
    if len(parts) == 0:
        return empty
    axis_uv, R, ok, partial, rad = _discs(view, parts)
    # the outline box per body (an estimate from the parts' end discs; exact boxes come from the pixels)
    outline = nan4.copy()
    for k, (agg, src) in enumerate(((np.fmin, (axis_uv[..., 0] - rad).min(axis=1)),
                                    (np.fmin, (axis_uv[..., 1] - rad).min(axis=1)),
                                    (np.fmax, (axis_uv[..., 0] + rad).max(axis=1)),
                                    (np.fmax, (axis_uv[..., 1] + rad).max(axis=1)))):
        col = np.full(B, np.nan)
        agg.at(col, parts.body[ok], src[ok])
        outline[:, k] = col
    pix, row, counts = _spans(axis_uv, R, ok, partial, W, H)
    N = len(pix)
    if N == 0:
        empty.outline_box = outline
        return empty
    part_of = np.repeat(np.arange(len(parts), dtype=np.int32), counts)

    def per_entry(v: np.ndarray) -> np.ndarray:  # a per-part constant for every entry (entries run by part)
        return np.repeat(v.astype(np.float32), counts)

    # ray-capsule intersection (Inigo Quilez's capsule formulation), per entry, float32
    C = view.origin
    ba = (parts.pb - parts.pa)
    oa = C - parts.pa
    baba = np.einsum("ij,ij->i", ba, ba)
    baoa = np.einsum("ij,ij->i", ba, oa)
    oaoa = np.einsum("ij,ij->i", oa, oa)
    r2 = parts.r ** 2
    ob = oa - ba
    dx, dy, dz = (comp[pix] for comp in view.dirs)
    bard = dx * per_entry(ba[:, 0])
    bard += dy * per_entry(ba[:, 1])
    bard += dz * per_entry(ba[:, 2])
    rdoa = dx * per_entry(oa[:, 0])
    rdoa += dy * per_entry(oa[:, 1])
    rdoa += dz * per_entry(oa[:, 2])
    baba_e = per_entry(baba)
    a = baba_e - bard * bard
    b = baba_e * rdoa
    b -= per_entry(baoa) * bard
    h = b * b
    h -= a * per_entry(baba * oaoa - baoa * baoa - r2 * baba)
    inf = np.float32(np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_body = (-b - np.sqrt(h)) / a
        y = t_body * bard + per_entry(baoa)
        t_body[~((h >= 0) & (a > 1e-12) & (y > 0) & (y < baba_e))] = inf
        ha = rdoa * rdoa - per_entry(oaoa - r2)
        t = -rdoa - np.sqrt(ha)                 # sphere at the axis start
        t[~(ha >= 0)] = inf
        bb = rdoa - bard
        hb = bb * bb - per_entry(np.einsum("ij,ij->i", ob, ob) - r2)
        t_b = -bb - np.sqrt(hb)                 # sphere at the axis end
        t_b[~(hb >= 0)] = inf
    np.minimum(t, t_body, out=t)
    np.minimum(t, t_b, out=t)
    hit_idx = np.nonzero((t > NEAR) & (t < inf))[0]
    # silhouettes (ignoring occlusion) per body, for the visible fraction and boxes
    stamp = view.scratch
    body_of = parts.body.astype(np.int32)
    sil_px, sil_box = _per_body_extent(pix[hit_idx], row[hit_idx], body_of[part_of[hit_idx]], B, W, stamp)
    valid = hit_idx[t[hit_idx] < view.depth[pix[hit_idx]]]
    tv, pv = t[valid], pix[valid]
    np.minimum.at(zbuf, pv, tv)
    win = tv <= zbuf[pv]
    sel = valid[win]
    tw, pw, partw = tv[win], pv[win], part_of[sel]
    bodyw = body_of[partw]
    label[pw] = bodyw
    vis_px, vis_box = _per_body_extent(pw, row[sel], bodyw, B, W, stamp)
    # shading of the winners: the normal is (hit point - nearest axis point) / r
    dxw, dyw, dzw = dx[sel], dy[sel], dz[sel]
    g = lambda v: v.astype(np.float32)[partw]
    with np.errstate(invalid="ignore", divide="ignore"):
        yc = np.clip((g(baoa) + tw * bard[sel]) / g(np.maximum(baba, 1e-12)), 0, 1)
    rinv = g(1.0 / parts.r)

    def n_dot(v: np.ndarray) -> np.ndarray:
        """Normal . v per winner, ``v`` one vector (3,) or one per part (P, 3)."""
        vv = np.broadcast_to(np.asarray(v, float), (len(parts), 3))
        dv = dxw * g(vv[:, 0]) + dyw * g(vv[:, 1]) + dzw * g(vv[:, 2])
        return (g(np.einsum("ij,ij->i", oa, vv)) + tw * dv - yc * g(np.einsum("ij,ij->i", ba, vv))) * rinv

    shade = np.clip(n_dot(BODY_LIGHT), 0, 1)
    shade *= 0.68
    shade += 0.42
    colour = parts.c1[partw]
    second = n_dot(parts.pat) < g(parts.thr)
    colour[second] = parts.c2[partw[second]]
    period = g(parts.stripe)
    striped = np.nonzero(period > 0)[0]
    if striped.size:
        along = yc[striped] * g(np.sqrt(baba))[striped]
        dark = np.floor(along / period[striped]).astype(np.int64) % 2 == 1
        shade[striped[dark]] *= 0.72
    colour *= shade[:, None]
    np.clip(colour, 0, 255, out=colour)
    image.reshape(-1, 3)[pw] = colour.astype(np.uint8)
    return Raster(label, zbuf, sil_px, sil_box, vis_px, vis_box, outline)


def _per_body_extent(pix: np.ndarray, row: np.ndarray, body: np.ndarray, B: int, W: int, stamp: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pixel count and pixel-edge box (x1, y1, x2, y2) per body of (pixel, row, body) entries sorted
    by body.  ``stamp`` is an (H*W,) int scratch buffer: writing each entry's index to its pixel and reading
    it back leaves exactly one entry per distinct pixel (the last written), whatever the buffer held."""
    box = np.full((B, 4), np.nan)
    if pix.size == 0:
        return np.zeros(B, np.int64), box
    bounds = np.searchsorted(body, np.arange(B + 1))
    idx = np.arange(pix.size, dtype=stamp.dtype)
    first = np.zeros(pix.size, bool)
    for i in range(B):  # per body, so a pixel two bodies share counts for each
        s, e = bounds[i], bounds[i + 1]
        if e > s:
            stamp[pix[s:e]] = idx[s:e]
            first[s:e] = stamp[pix[s:e]] == idx[s:e]
    count = np.bincount(body[first], minlength=B)
    col = pix - row * W
    nz = np.nonzero(bounds[1:] > bounds[:-1])[0]
    st = bounds[nz]
    box[nz, 0] = np.minimum.reduceat(col, st)
    box[nz, 1] = np.minimum.reduceat(row, st)
    box[nz, 2] = np.maximum.reduceat(col, st) + 1
    box[nz, 3] = np.maximum.reduceat(row, st) + 1
    return count, box
