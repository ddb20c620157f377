"""Calibration targets rendered through a :class:`calibration.camera.Camera`: a ChArUco board held in front of
the camera (for ``walkout calibrate intrinsics``) and the store floor with its ArUco markers (for
``walkout calibrate extrinsics``), with known truth.

Every pixel's ray (the camera model's own inverse, so pinhole and fisheye alike) is cast onto the board plane
or the floor and the target's texture is sampled bilinearly at ``supersample``² points per pixel, then the
image gets a mild blur and sensor noise.  Pixel ``(i, j)`` of the returned array (OpenCV's index, centre on
the integer) is the model's pixel ``(i + 0.5, j + 0.5)`` (see :data:`calibration.intrinsics.CV_TO_MODEL`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from calibration.camera import Camera
from calibration.intrinsics import BoardSpec
from calibration.markers import MarkerLayout, marker_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageOptions:
    """How the targets are imaged: anti-aliasing, optics blur and sensor noise (grey levels)."""

    supersample: int = 3
    blur_sigma_px: float = 0.6
    noise_sigma: float = 2.0
    background: int = 70
    floor_grey: int = 128
    board_texels_per_square: int = 60


# ---------------------------------------------------------------------------------------------- rays
@lru_cache(maxsize=8)
def _camera_rays(model: str, width: int, height: int, K: tuple, dist: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame unit rays on the pixel-centre grid with a one-pixel margin, ``(H + 2, W + 2, 3)``, and
    a mask of rays the lens model can form."""
    cam = Camera("rays", model, width, height, np.array(K).reshape(3, 3), np.array(dist), np.eye(3),
                 np.zeros(3))
    u, v = np.meshgrid(np.arange(-1, width + 1) + 0.5, np.arange(-1, height + 1) + 0.5)
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    _, d = cam.pixel_to_ray(uv)
    back, ok = cam.project(d)  # a ray the model folds back (beyond its valid field) does not return home
    ok = np.all(np.isfinite(d), axis=1) & (np.abs(back - uv).max(axis=1) < 1e-3) & (d[:, 2] > 1e-6)
    return d.reshape(height + 2, width + 2, 3), ok.reshape(height + 2, width + 2)


def camera_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """See :func:`_camera_rays` (cached on the camera's intrinsics)."""
    key = (camera.model, camera.width, camera.height, tuple(camera.K.ravel()), tuple(camera.dist.ravel()))
    return _camera_rays(*key)


def subpixel_rays(camera: Camera, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame unit rays (float32) at ``supersample``² points in every pixel, ``(S, H, W, 3)``, and their
    valid mask, interpolated bilinearly from the ray grid (the ray field is smooth; the error is far below a
    pixel).  Cached on the camera's intrinsics."""
    key = (camera.model, camera.width, camera.height, tuple(camera.K.ravel()), tuple(camera.dist.ravel()))
    return _subpixel_rays(*key, supersample)


@lru_cache(maxsize=2)
def _subpixel_rays(model: str, w: int, h: int, K: tuple, dist: tuple, supersample: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    grid, ok = _camera_rays(model, w, h, K, dist)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    out, valid = [], []
    for oy in offs:
        for ox in offs:
            # pixel (i, j)'s sample is at grid position (i + 1 + ox, j + 1 + oy)
            fx, fy = ox % 1.0, oy % 1.0
            ix, iy = int(np.floor(ox)) + 1, int(np.floor(oy)) + 1
            g00 = grid[iy:iy + h, ix:ix + w]
            g01 = grid[iy:iy + h, ix + 1:ix + 1 + w]
            g10 = grid[iy + 1:iy + 1 + h, ix:ix + w]
            g11 = grid[iy + 1:iy + 1 + h, ix + 1:ix + 1 + w]
            r = (1 - fy) * ((1 - fx) * g00 + fx * g01) + fy * ((1 - fx) * g10 + fx * g11)
            r /= np.linalg.norm(r, axis=2, keepdims=True)
            out.append(r.astype(np.float32))
            valid.append(ok[iy:iy + h, ix:ix + w] & ok[iy:iy + h, ix + 1:ix + 1 + w]
                         & ok[iy + 1:iy + 1 + h, ix:ix + w] & ok[iy + 1:iy + 1 + h, ix + 1:ix + 1 + w])
    return np.stack(out), np.stack(valid)


# ---------------------------------------------------------------------------------------------- sampling
def _sample(tex: np.ndarray, col: np.ndarray, row: np.ndarray, fill: float) -> np.ndarray:
    """Sample ``tex`` bilinearly at index coordinates (texel centres on integers); ``fill`` outside.
    ``cv2.remap`` places samples to 1/32 of a texel, far below a camera pixel for these textures."""
    shape = col.shape
    out = cv2.remap(tex.astype(np.float32, copy=False), col.reshape(-1, shape[-1]).astype(np.float32),
                    row.reshape(-1, shape[-1]).astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill))
    return out.reshape(shape)


def _finish(samples: np.ndarray, options: ImageOptions, rng: np.random.Generator) -> np.ndarray:
    """Average the subpixel samples, blur, add noise and quantise to uint8."""
    img = samples.mean(axis=0)
    if options.blur_sigma_px > 0:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), options.blur_sigma_px)
    if options.noise_sigma > 0:
        img = img + rng.normal(0.0, options.noise_sigma, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- the board
def board_texture(spec: BoardSpec, texels_per_square: int) -> tuple[np.ndarray, float, float]:
    """The board's image with a one-square white margin, as float, its texels per metre, and the margin
    in metres (board coordinate ``X`` is texture column ``(X + margin) * ppm - 0.5``)."""
    px = texels_per_square
    img = spec.board().generateImage((spec.squares_x * px, spec.squares_y * px), marginSize=0, borderBits=1)
    img = cv2.copyMakeBorder(img, px, px, px, px, cv2.BORDER_CONSTANT, value=255)
    # a printed board is not pure black and white
    tex = 25.0 + img.astype(np.float32) * (225.0 - 25.0) / 255.0
    return tex, px / spec.square_m, spec.square_m


def render_board(camera: Camera, spec: BoardSpec, rvec: np.ndarray, tvec: np.ndarray,
                 rng: np.random.Generator | None = None, options: ImageOptions = ImageOptions()
                 ) -> np.ndarray:
    """A grey image of the board seen by ``camera``'s lens; ``rvec``/``tvec`` take board coordinates (metres,
    origin at the chessboard's top-left corner, x right, y down) into the camera frame.  The camera's own
    pose is ignored."""
    rng = rng or np.random.default_rng(0)
    R, _ = cv2.Rodrigues(np.asarray(rvec, float).reshape(3, 1))
    R = R.astype(np.float32)
    t = np.asarray(tvec, np.float32).reshape(3)
    rays, valid = subpixel_rays(camera, options.supersample)
    n = R[:, 2]
    denom = rays @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (n @ t) / denom
    hit = valid & (np.abs(denom) > 1e-9) & (s > 0)
    P = rays * np.where(hit, s, 0.0)[..., None]
    local = (P - t) @ R                     # R^T (P - t), row vectors
    tex, ppm, margin = board_texture(spec, options.board_texels_per_square)
    col = (local[..., 0] + margin) * ppm - 0.5
    row = (local[..., 1] + margin) * ppm - 0.5
    samples = np.where(hit, _sample(tex, col, row, options.background), options.background)
    return _finish(samples, options, rng)


def board_poses(camera: Camera, spec: BoardSpec, count: int, rng: np.random.Generator,
                fill: tuple[float, float] = (0.35, 0.6), max_tilt_deg: float = 40.0,
                min_visible: float = 0.8) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` varied board poses (board -> camera ``rvec``, ``tvec``) spread over the image: the board
    spans ``fill`` of the image width, tilted up to ``max_tilt_deg``, with at least ``min_visible`` of its
    corners inside the image and in front of the lens."""
    bw, bh = spec.size_m
    corners = spec.board().getChessboardCorners().reshape(-1, 3).astype(float)
    cam0 = Camera("pose", camera.model, camera.width, camera.height, camera.K, camera.dist, np.eye(3),
                  np.zeros(3))
    out: list[tuple[np.ndarray, np.ndarray]] = []
    cells = [(i, j) for j in range(3) for i in range(3)]
    for _ in range(count * 200):
        if len(out) == count:
            break
        # spread the views over a 3 x 3 grid of image regions, tilting the board both ways about both axes
        k = len(out)
        ci, cj = cells[(k * 4) % 9]          # a stride that walks the grid non-adjacently
        u = (0.12 + (ci + rng.uniform(0.0, 1.0)) * 0.76 / 3) * camera.width
        v = (0.12 + (cj + rng.uniform(0.0, 1.0)) * 0.76 / 3) * camera.height
        _, d = cam0.pixel_to_ray(np.array([[u, v]]))
        frac = rng.uniform(*fill)
        focal = float(camera.K[0, 0])
        depth = focal * bw / (frac * camera.width)
        center = d[0] / d[0, 2] * depth
        # face the camera along the viewing ray, then tilt by up to max_tilt_deg about an axis in the board
        # whose direction turns a quarter from one view to the next, and spin about the normal
        z = d[0] / np.linalg.norm(d[0])
        x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        R0 = np.stack([x, np.cross(z, x), z], axis=1)           # columns: board x, y, z in the camera frame
        phi = np.radians(45.0 + 90.0 * (k % 4) + rng.uniform(-30, 30))
        theta = np.radians(rng.uniform(0.4 * max_tilt_deg, max_tilt_deg))
        tilt = cv2.Rodrigues(theta * np.array([np.cos(phi), np.sin(phi), 0.0]))[0]
        spin = cv2.Rodrigues(np.array([0.0, 0.0, np.radians(rng.uniform(-25, 25))]))[0]
        R = R0 @ tilt @ spin
        t = center - R @ np.array([bw / 2, bh / 2, 0.0])
        Xc = corners @ R.T + t
        if R[:, 2] @ t <= 0 or np.any(Xc[:, 2] <= 0.05):
            continue
        _, ok = cam0.project(Xc)
        if ok.mean() < min_visible:
            continue
        out.append((cv2.Rodrigues(R)[0].ravel(), t))
    if len(out) < count:
        raise ValueError(f"board_poses: found only {len(out)} of {count} poses; is the board too big for "
                         "the lens?")
    return out


# ---------------------------------------------------------------------------------------------- the floor
def floor_texture(layout: MarkerLayout, bounds: tuple[float, float, float, float], floor_grey: int,
                  max_texels: int = 4000) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The floor inside ``bounds`` (x0, y0, x1, y1 metres) with the layout's markers painted on (white quiet
    zone included), as float; its texels per metre; and its origin.  Texture column ``(x - x0) * ppm - 0.5``,
    row ``(y - y0) * ppm - 0.5``."""
    x0, y0, x1, y1 = bounds
    extent = max(x1 - x0, y1 - y0, 1e-3)
    ppm = min(1000.0, max_texels / extent)
    w = max(int(np.ceil((x1 - x0) * ppm)), 2)
    h = max(int(np.ceil((y1 - y0) * ppm)), 2)
    tex = np.full((h, w), float(floor_grey), np.float32)
    for m in layout.markers:
        inner = max(6 * int(np.ceil(m.size * ppm / 6)), 60)        # whole texels per marker cell
        img = marker_image(m.id, inner).astype(np.float32)
        side = m.size * img.shape[0] / inner                       # padded side in metres
        half = side / 2
        c, s = np.cos(np.radians(m.yaw_deg)), np.sin(np.radians(m.yaw_deg))
        # image x -> marker +x, image y -> marker -y; then yaw and centre; then texture coordinates
        src = np.float32([[-0.5, -0.5], [img.shape[1] - 0.5, -0.5], [-0.5, img.shape[0] - 0.5]])
        local = np.array([[-half, half], [half, half], [-half, -half]])
        world = local @ np.array([[c, s], [-s, c]]) + np.asarray(m.center)
        dst = np.stack([(world[:, 0] - x0) * ppm - 0.5, (world[:, 1] - y0) * ppm - 0.5], axis=1)
        far = dst[1] + dst[2] - dst[0]                             # the fourth corner
        quad = np.vstack([dst, far])
        c0, r0 = np.maximum(np.floor(quad.min(axis=0)).astype(int) - 2, 0)
        c1, r1 = np.minimum(np.ceil(quad.max(axis=0)).astype(int) + 3, [w, h])
        if c1 <= c0 or r1 <= r0:
            continue                                               # outside the textured area
        A = cv2.getAffineTransform(src, np.float32(dst - [c0, r0]))
        roi = tex[r0:r1, c0:c1]                                    # a view: warped in place
        cv2.warpAffine(img, A, (c1 - c0, r1 - r0), dst=roi, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
    return tex, ppm, (x0, y0)


def render_floor(camera: Camera, layout: MarkerLayout, rng: np.random.Generator | None = None,
                 options: ImageOptions = ImageOptions()) -> np.ndarray:
    """A grey image of the store floor (z = 0) with the layout's markers, seen from ``camera``'s pose."""
    rng = rng or np.random.default_rng(0)
    rays, valid = subpixel_rays(camera, options.supersample)
    dirs = rays @ camera.R.astype(np.float32)    # camera frame -> store frame (R^T d for row vectors)
    origin = camera.position.astype(np.float32)
    dz = dirs[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -origin[2] / dz
    hit = valid & (np.abs(dz) > 1e-9) & (s > 0)
    xy = origin[:2] + dirs[..., :2] * np.where(hit, s, 0.0)[..., None]
    marker_lo = np.min([m.corners()[:, :2].min(axis=0) - m.size for m in layout.markers], axis=0)
    marker_hi = np.max([m.corners()[:, :2].max(axis=0) + m.size for m in layout.markers], axis=0)
    if np.any(hit):
        seen_lo = xy[hit].min(axis=0)
        seen_hi = xy[hit].max(axis=0)
        lo = np.maximum(marker_lo, seen_lo)
        hi = np.minimum(marker_hi, seen_hi)
    else:
        lo, hi = marker_lo, marker_hi
    if np.any(hi <= lo):                           # no marker in view: plain floor
        samples = np.where(hit, float(options.floor_grey), float(options.background))
        return _finish(samples, options, rng)
    tex, ppm, (x0, y0) = floor_texture(layout, (lo[0], lo[1], hi[0], hi[1]), options.floor_grey)
    col = (xy[..., 0] - x0) * ppm - 0.5
    row = (xy[..., 1] - y0) * ppm - 0.5
    samples = np.where(hit, _sample(tex, col, row, float(options.floor_grey)), float(options.background))
    return _finish(samples, options, rng)


__all__ = ["ImageOptions", "board_poses", "board_texture", "camera_rays", "floor_texture", "render_board",
           "render_floor", "subpixel_rays"]
