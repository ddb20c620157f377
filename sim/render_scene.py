"""The simulator's static world as the renderer sees it: solids (shelf fixtures and per-lane product blocks),
the room, and a baked floor texture (tiles, gate and exit paint, ArUco floor markers, light pools and the
contact shadows of the shelf units).

Built once per renderer from the store description; every camera then ray-casts it once
(:mod:`sim.render_static`).  The fixture geometry (uprights, boards, plinth, back panel) is derived from the
lanes' boxes, since the store description only holds the lanes.  Colours are BGR floats in 0..255.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.markers import ARUCO_DICT, MarkerLayout
from calibration.store import Store

log = logging.getLogger(__name__)

# Surface kinds, per pixel in a static view.
KIND_NONE, KIND_FLOOR, KIND_WALL, KIND_CEILING, KIND_FIXTURE, KIND_PRODUCT, KIND_PANEL = range(7)

BOARD_THICKNESS = 0.025
UPRIGHT_THICKNESS = 0.035
PANEL_THICKNESS = 0.02
FLOOR_TEXTURE_TEXELS = 8_000_000  # cap on the baked floor texture's size

_FLOOR_PALETTES = (  # (tile colour BGR, grout colour BGR)
    ((196, 198, 196), (150, 152, 150)),
    ((170, 184, 198), (128, 138, 150)),
    ((214, 214, 210), (170, 170, 168)),
    ((140, 150, 162), (100, 106, 114)),
    ((182, 176, 166), (130, 126, 120)),
    ((120, 128, 126), (86, 90, 90)),
)
_WALL_COLOURS = ((205, 208, 210), (180, 196, 214), (214, 206, 190), (190, 200, 190), (170, 170, 176))
_FIXTURE_COLOURS = ((196, 198, 200), (70, 72, 76), (150, 160, 170), (225, 225, 222), (60, 90, 140))
_BAND_COLOURS = ((40, 120, 200), (150, 80, 30), (60, 150, 60), (40, 40, 170), (120, 60, 120))


def sku_colours(sku: str) -> tuple[np.ndarray, np.ndarray, int, float]:
    """A SKU's look, stable across runs and processes: main colour, label colour (BGR floats), pattern style
    (0 label band, 1 two-tone, 2 stripes) and item size in metres.  Used for the shelves and for an item in
    a shopper's hand, so a held item looks like its lane."""
    h = hashlib.sha256(sku.encode()).digest()
    hue = h[0] * 180 // 256
    sat = 110 + h[1] % 140
    val = 90 + h[2] % 160
    main = cv2.cvtColor(np.uint8([[[hue, sat, val]]]), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    hue2 = (hue + 50 + h[3] % 80) % 180
    label = cv2.cvtColor(np.uint8([[[hue2, h[4] % 120, 170 + h[5] % 80]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return main, label.astype(np.float32), h[6] % 3, 0.06 + (h[7] % 7) * 0.01


@dataclass
class Solid:
    """A box turned by ``yaw`` (radians) about the vertical axis through ``center``."""

    center: np.ndarray
    half: np.ndarray
    yaw: float
    kind: int
    color: np.ndarray
    color2: np.ndarray | None = None
    light: float = 1.0       # ambient factor (goods under a shelf board get less light)
    style: int = 0
    item: float = 0.08       # product item size, metres

    def corners(self) -> np.ndarray:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        return (signs * self.half) @ rot.T + self.center


@dataclass
class Group:
    """One shelf unit: a bounding solid (for culling) and its parts."""

    bound: Solid
    solids: list[Solid]


@dataclass
class Scene:
    size: tuple[float, float]
    ceiling: float
    groups: list[Group]
    floor_texture: np.ndarray       # (Ty, Tx, 3) uint8, texel (i, j) covers floor around ((j+.5)*res, (i+.5)*res)
    floor_res: float                # metres per texel
    wall_color: np.ndarray
    band_color: np.ndarray
    lamps: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    lamp_step: float = 2.4

    @property
    def solids(self) -> list[Solid]:
        return [s for g in self.groups for s in g.solids]


def _rot2(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def _unit_solids(store: Store, unit, fixture_color: np.ndarray, rng: np.random.Generator) -> Group:
    """Shelf-unit fixture (plinth, boards, uprights, back panel) and product blocks, derived from its lanes."""
    lanes = [ln for s in unit.shelves for ln in s.lanes]
    yaw = np.radians(lanes[0].box.yaw_deg)
    R = _rot2(yaw)
    corners = np.concatenate([ln.box.corners() for ln in lanes])
    origin = corners[:, :2].mean(axis=0)
    local = (corners[:, :2] - origin) @ R  # into the unit frame
    lx0, ly0 = local.min(axis=0)
    lx1, ly1 = local.max(axis=0)
    long_x = (lx1 - lx0) >= (ly1 - ly0)
    top = float(corners[:, 2].max()) + 0.08
    z_low = float(corners[:, 2].min())
    solids: list[Solid] = []
    fixture = fixture_color

    def add_local(x0, x1, y0, y1, z0, z1, kind=KIND_FIXTURE, color=None, light=1.0):
        if x1 - x0 <= 1e-4 or y1 - y0 <= 1e-4 or z1 - z0 <= 1e-4:
            return
        c_local = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        c_world = origin + R @ c_local
        solids.append(Solid(np.array([c_world[0], c_world[1], (z0 + z1) / 2]),
                            np.array([(x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2]), yaw, kind,
                            np.asarray(fixture if color is None else color, np.float32), light=light))

    # plinth under the lowest shelf
    if z_low - BOARD_THICKNESS > 0.03:
        add_local(lx0, lx1, ly0, ly1, 0.0, z_low - BOARD_THICKNESS, light=0.7)
    # a board under each shelf, as long as the unit and as deep as the shelf's lanes
    n_shelves = len(unit.shelves)
    for si, shelf in enumerate(unit.shelves):
        c = np.concatenate([ln.box.corners() for ln in shelf.lanes])
        loc = (c[:, :2] - origin) @ R
        z0 = float(c[:, 2].min())
        sx0, sy0 = loc.min(axis=0)
        sx1, sy1 = loc.max(axis=0)
        if long_x:
            sx0, sx1 = lx0, lx1
        else:
            sy0, sy1 = ly0, ly1
        add_local(sx0, sx1, sy0, sy1, max(0.0, z0 - BOARD_THICKNESS), z0)
        light = 1.0 if si == n_shelves - 1 else 0.8
        for ln in shelf.lanes:
            main, label, style, item = sku_colours(ln.sku) if ln.sku else (
                np.float32([90, 90, 90]), np.float32([90, 90, 90]), 0, 0.1)
            b = ln.box
            half = b.half_size.copy()
            half[:2] = np.maximum(half[:2] - 0.004, half[:2] * 0.5)  # a thin gap between neighbouring lanes
            if ln.sku is None:
                continue
            solids.append(Solid(b.center.copy(), half, np.radians(b.yaw_deg), KIND_PRODUCT, main, label,
                                light=light, style=style, item=item))
    # uprights at both ends of the long axis, a back panel on the side away from the aisle
    t = UPRIGHT_THICKNESS
    if long_x:
        add_local(lx0 - t, lx0, ly0, ly1, 0.0, top)
        add_local(lx1, lx1 + t, ly0, ly1, 0.0, top)
    else:
        add_local(lx0, lx1, ly0 - t, ly0, 0.0, top)
        add_local(lx0, lx1, ly1, ly1 + t, 0.0, top)
    panel = _panel_position(store, lanes, origin, R, (lx0, lx1, ly0, ly1), long_x)
    if panel is not None:
        a, b = panel
        if long_x:
            add_local(lx0, lx1, a, b, 0.0, top, kind=KIND_PANEL, light=0.9)
        else:
            add_local(a, b, ly0, ly1, 0.0, top, kind=KIND_PANEL, light=0.9)
    allc = np.concatenate([s.corners() for s in solids])
    loc = (allc[:, :2] - origin) @ R
    bx0, by0 = loc.min(axis=0) - 0.01
    bx1, by1 = loc.max(axis=0) + 0.01
    cb = origin + R @ np.array([(bx0 + bx1) / 2, (by0 + by1) / 2])
    bound = Solid(np.array([cb[0], cb[1], allc[:, 2].max() / 2 + 0.005]),
                  np.array([(bx1 - bx0) / 2, (by1 - by0) / 2, allc[:, 2].max() / 2 + 0.01]), yaw,
                  KIND_FIXTURE, fixture)
    return Group(bound, solids)


def _panel_position(store: Store, lanes, origin, R, extent, long_x: bool) -> tuple[float, float] | None:
    """Across-axis interval of the back panel: in the gap between the two faces of a double-sided unit, else
    on the long side nearer a wall (the aisle is on the other)."""
    lx0, lx1, ly0, ly1 = extent
    axis = 1 if long_x else 0
    ivs = []
    for ln in lanes:
        loc = (ln.box.corners()[:, :2] - origin) @ R
        ivs.append((loc[:, axis].min(), loc[:, axis].max()))
    ivs.sort()
    reach = ivs[0][1]
    for a, b in ivs[1:]:
        if a - reach > 0.015:  # a gap across the unit: double-sided
            mid = (a + reach) / 2
            w = min(a - reach, PANEL_THICKNESS * 2)
            return mid - w / 2, mid + w / 2
        reach = max(reach, b)
    lo, hi = (ly0, ly1) if long_x else (lx0, lx1)
    sx, sy = store.store.size

    def side_point(v: float, along: float) -> np.ndarray:
        a0, a1 = (lx0, lx1) if long_x else (ly0, ly1)
        a = a0 + (a1 - a0) * along
        return origin + R @ (np.array([a, v]) if long_x else np.array([v, a]))

    def blocked(v: float, out: float) -> bool:
        """A side is the back when the floor just beyond it is taken (other goods, or off the floor)."""
        pts = np.array([side_point(v + out * 0.3, f) for f in (0.25, 0.5, 0.75)])
        off = (pts[:, 0] < 0) | (pts[:, 1] < 0) | (pts[:, 0] > sx) | (pts[:, 1] > sy)
        return bool(np.any(off) or np.any(_in_lanes(store, pts)))

    def wall_distance(v: float) -> float:
        p = side_point(v, 0.5)
        return float(min(p[0], sx - p[0], p[1], sy - p[1]))

    back_lo, back_hi = blocked(lo, -1.0), blocked(hi, 1.0)
    if back_lo != back_hi:
        use_lo = back_lo
    else:
        use_lo = wall_distance(lo) <= wall_distance(hi)
    if use_lo:
        return lo - PANEL_THICKNESS, lo
    return hi, hi + PANEL_THICKNESS


def _in_lanes(store: Store, pts: np.ndarray) -> np.ndarray:
    """Which floor points (N, 2) lie inside some lane's footprint."""
    out = np.zeros(len(pts), bool)
    for _, _, ln in store.iter_lanes():
        b = ln.box
        c, s = np.cos(np.radians(b.yaw_deg)), np.sin(np.radians(b.yaw_deg))
        d = pts - b.center[:2]
        local = np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1)
        out |= np.all(np.abs(local) <= b.half_size[:2], axis=1)
    return out


def _bake_floor(store: Store, markers: MarkerLayout | None, groups: list[Group], lamps: np.ndarray,
                rng: np.random.Generator, variety: bool) -> tuple[np.ndarray, float]:
    sx, sy = store.store.size
    res = max(0.005, float(np.sqrt(sx * sy / FLOOR_TEXTURE_TEXELS)))
    nx, ny = int(np.ceil(sx / res)), int(np.ceil(sy / res))
    tile_c, grout_c = _FLOOR_PALETTES[int(rng.integers(len(_FLOOR_PALETTES))) if variety else 0]
    tile = float(rng.choice([0.4, 0.5, 0.6])) if variety else 0.6
    xs = ((np.arange(nx) + 0.5) * res).astype(np.float32)
    ys = ((np.arange(ny) + 0.5) * res).astype(np.float32)
    ix = np.floor(xs / tile).astype(np.int64)
    iy = np.floor(ys / tile).astype(np.int64)
    # per-tile shade jitter (a hash of the tile index), grout lines 8 mm wide
    hx = (ix * 73856093) & 0xFFFF
    hy = (iy * 19349663) & 0xFFFF
    jitter = (((hx[None, :] ^ hy[:, None]) * 2654435761 >> 7) & 0xFF).astype(np.float32) / 255.0
    shade = 0.94 + 0.08 * jitter
    gx = np.abs(xs - (ix + 0.5) * tile) > tile / 2 - 0.004
    gy = np.abs(ys - (iy + 0.5) * tile) > tile / 2 - 0.004
    grout = gx[None, :] | gy[:, None]
    tex = np.empty((ny, nx, 3), np.float32)
    tex[:] = np.asarray(tile_c, np.float32)
    tex *= shade[..., None]
    tex[grout] = np.asarray(grout_c, np.float32)
    # fine speckle so flat tiles are not perfectly flat
    speck = cv2.resize(rng.normal(0, 4.0, (max(2, ny // 4), max(2, nx // 4))).astype(np.float32), (nx, ny),
                       interpolation=cv2.INTER_LINEAR)
    tex += speck[..., None]
    # gate and exit paint: a coloured mat with diagonal stripes and a white border
    for regions, colour, stripe in (([g.region for g in store.gates], (70, 150, 60), (50, 110, 40)),
                                    ([e.region for e in store.exits], (60, 90, 200), (40, 50, 150))):
        for reg in regions:
            j0, j1 = int(reg.min[0] / res), int(np.ceil(reg.max[0] / res))
            i0, i1 = int(reg.min[1] / res), int(np.ceil(reg.max[1] / res))
            sub = tex[i0:i1, j0:j1]
            ii, jj = np.mgrid[i0:i1, j0:j1]
            diag = ((ii + jj) * res / 0.15).astype(np.int64) % 2 == 0
            sub[:] = np.where(diag[..., None], np.float32(colour), np.float32(stripe))
            b = max(1, int(0.05 / res))
            for sl in (np.s_[:b, :], np.s_[-b:, :], np.s_[:, :b], np.s_[:, -b:]):
                sub[sl] = 235.0
    # contact shadows around each shelf unit's footprint
    for g in groups:
        bd = g.bound
        R = _rot2(bd.yaw)
        rad = float(np.hypot(bd.half[0], bd.half[1])) + 0.3
        j0, j1 = max(0, int((bd.center[0] - rad) / res)), min(nx, int((bd.center[0] + rad) / res) + 1)
        i0, i1 = max(0, int((bd.center[1] - rad) / res)), min(ny, int((bd.center[1] + rad) / res) + 1)
        if j1 <= j0 or i1 <= i0:
            continue
        px = np.stack(np.meshgrid(xs[j0:j1], ys[i0:i1]), axis=-1) - bd.center[:2]
        loc = np.abs(px @ R)  # into the unit frame
        d = np.hypot(*np.moveaxis(np.maximum(loc - bd.half[:2], 0), -1, 0))
        tex[i0:i1, j0:j1] *= (1.0 - 0.45 * np.exp(-d / 0.09))[..., None].astype(np.float32)
    # light pools under the ceiling lamps
    gxx, gyy = np.meshgrid(xs[::8], ys[::8])
    light = np.zeros_like(gxx)
    for lx, ly in lamps:
        light += np.exp(-((gxx - lx) ** 2 + (gyy - ly) ** 2) / (2 * 1.3 ** 2))
    light = 0.78 + 0.3 * light / max(float(light.max()), 1e-6)
    tex *= cv2.resize(light.astype(np.float32), (nx, ny), interpolation=cv2.INTER_LINEAR)[..., None]
    # ArUco floor markers (after the light, so they keep full contrast for calibration)
    if markers is not None:
        dictionary = cv2.aruco.getPredefinedDictionary(ARUCO_DICT)
        for m in markers.markers:
            bits = cv2.aruco.generateImageMarker(dictionary, int(m.id), 6)  # 6x6 cells, 1 px per cell
            cells = np.pad(bits, 1, constant_values=255)                     # + a white quiet zone
            h = m.size / 2 * 8 / 6
            rad = h * 1.5
            j0, j1 = max(0, int((m.center[0] - rad) / res)), min(nx, int((m.center[0] + rad) / res) + 1)
            i0, i1 = max(0, int((m.center[1] - rad) / res)), min(ny, int((m.center[1] + rad) / res) + 1)
            if j1 <= j0 or i1 <= i0:
                continue
            px = np.stack(np.meshgrid(xs[j0:j1], ys[i0:i1]), axis=-1) - np.asarray(m.center)
            c, s = np.cos(np.radians(m.yaw_deg)), np.sin(np.radians(m.yaw_deg))
            lx = px[..., 0] * c + px[..., 1] * s     # marker frame (inverse of FloorMarker.corners' rotation)
            ly = -px[..., 0] * s + px[..., 1] * c
            col = np.floor((lx + h) / (2 * h) * 8).astype(np.int64)
            row = np.floor((h - ly) / (2 * h) * 8).astype(np.int64)
            inside = (col >= 0) & (col < 8) & (row >= 0) & (row < 8)
            val = np.where(inside, cells[np.clip(row, 0, 7), np.clip(col, 0, 7)], 0)
            sub = tex[i0:i1, j0:j1]
            sub[inside] = np.where(val[inside, None] > 127, np.float32(228), np.float32(28))
    return np.clip(tex, 0, 255).astype(np.uint8), res


def build_scene(store: Store, markers: MarkerLayout | None, rng: np.random.Generator,
                variety: bool = True) -> Scene:
    """The renderer's static world for a store; colours vary with ``rng`` when ``variety`` is set."""
    pick = (lambda seq: seq[int(rng.integers(len(seq)))]) if variety else (lambda seq: seq[0])
    fixture = np.asarray(pick(_FIXTURE_COLOURS), np.float32)
    groups = [_unit_solids(store, u, fixture, rng) for u in store.shelf_units]
    sx, sy = store.store.size
    step = 2.4
    lamps = np.array([(x, y) for x in np.arange(step / 2, sx, step) for y in np.arange(step / 2, sy, step)])
    tex, res = _bake_floor(store, markers, groups, lamps, rng, variety)
    return Scene((float(sx), float(sy)), float(store.store.ceiling_m), groups, tex, res,
                 np.asarray(pick(_WALL_COLOURS), np.float32), np.asarray(pick(_BAND_COLOURS), np.float32),
                 lamps, step)
