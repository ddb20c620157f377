"""The simulator's camera renderer: what each ceiling camera sees, with per-frame ground truth.

    renderer = Renderer(store, cameras, markers, seed=1, options=RenderOptions())
    frame = renderer.render("cam1", t, bodies)        # Frame: .image, .jpeg, .dropped, .truth

How a frame is made
-------------------
* Once per camera (on first use, or :meth:`Renderer.prepare`): every pixel's ray from ``Camera.ray_map``
  (so the lens model, pinhole distortion or fisheye, is the calibration code's own) is cast against the room,
  the shelf units and their goods, and the floor with its tiles, gate/exit paint and ArUco markers
  (:mod:`sim.render_scene`, :mod:`sim.render_static`): a colour image and a depth per pixel.
* Per frame: a soft shadow under each shopper, then every body part (capsules and spheres,
  :mod:`sim.render_bodies`) ray-cast inside its bounding box with a depth test against the static depth and
  between bodies; then the camera: mild blur, exposure and colour-temperature drift with occasional flicker,
  sensor noise, and JPEG compression (whose artefacts the image then carries).
* Truth is geometric: boxes come from the pixels actually drawn, keypoints from ``Camera.project`` of the
  joints, and a keypoint is visible when the pixel it projects to shows its own body (a shelf or another
  shopper in front hides it).

Determinism: everything random comes from per-camera ``numpy`` Generators seeded by ``(seed, camera id)``
and from the scene Generator seeded by ``seed``; the same seed and the same sequence of calls per camera
give the same bytes.  No wall clock, no global RNG.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibration.camera import Camera
from calibration.markers import MarkerLayout
from calibration.store import Store
from sim.body import Body, J
from sim.render_bodies import Parts, Raster, body_parts, rasterize
from sim.render_scene import Scene, build_scene
from sim.render_static import StaticView, build_static_view

log = logging.getLogger(__name__)


class RenderOptions(BaseModel):
    """Rendering settings (a scenario may carry them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    supersample: int = Field(2, ge=1, le=4, title="Static anti-aliasing",
                             description="Rays per pixel side for the static scene (1 = none)")
    drop_prob: float = Field(0.003, ge=0, le=1, title="Dropped-frame probability")
    flicker_prob: float = Field(0.01, ge=0, le=1, title="Flicker probability",
                                description="Chance per frame of a brief exposure dip or flash")
    lighting_drift: float = Field(1.0, ge=0, le=5, title="Lighting drift",
                                  description="Scale of the slow exposure and colour-temperature drift")
    noise: float = Field(1.0, ge=0, le=10, title="Sensor noise", description="Scale of each camera's noise")
    blur: float = Field(1.0, ge=0, le=5, title="Blur", description="Scale of each camera's optical blur")
    jpeg_quality: tuple[int, int] | None = Field(
        (75, 92), title="JPEG quality range",
        description="Each frame is JPEG-compressed at a quality drawn from this range; none: no compression")
    shadows: bool = Field(True, title="Shadows under shoppers")
    variety: bool = Field(True, title="Scene variety",
                          description="Floor, wall and fixture colours drawn from the seed")

    @model_validator(mode="after")
    def _check(self) -> RenderOptions:
        if self.jpeg_quality is not None:
            lo, hi = self.jpeg_quality
            if not 1 <= lo <= hi <= 100:
                raise ValueError("jpeg_quality: need 1 <= low <= high <= 100")
        return self


@dataclass(frozen=True)
class Keypoint:
    """A joint in pixels (continuous coordinates, pixel centres at +0.5, as ``Camera.project``).

    ``visible``: in front of the camera, inside the image, and the pixel shows this shopper (not a shelf or
    another shopper).  ``occluder``: '' (nothing), 'self' (its own body is in front, still visible),
    'static' (shelf, wall), 'body' (another shopper), 'outside' (off the image or behind the camera)."""

    x: float
    y: float
    visible: bool
    occluder: Literal["", "self", "static", "body", "outside"]

    def to_list(self) -> list:
        return [round(self.x, 2), round(self.y, 2), int(self.visible)]


@dataclass(frozen=True)
class BodyTruth:
    """One shopper at least partly visible in one frame.  Boxes are (x1, y1, x2, y2) in pixels, x2/y2 being
    the far pixel edges.  ``box``: the visible pixels' box; ``full_box``: the whole body's projection,
    occlusion ignored, not clipped to the image (so it may reach past the edges); ``box`` lies inside it.
    ``visible_fraction``: visible pixels over the body's unoccluded pixels in the image, times the share of
    the full box inside the image (so truncation at the edge counts as hidden)."""

    shopper: str
    box: tuple[float, float, float, float]
    full_box: tuple[float, float, float, float]
    head: Keypoint
    lwrist: Keypoint
    rwrist: Keypoint
    visible_fraction: float
    visible_px: int

    def to_dict(self) -> dict:
        return {"id": self.shopper, "box": [round(v, 1) for v in self.box],
                "full_box": [round(v, 1) for v in self.full_box],
                "head": self.head.to_list(), "lwrist": self.lwrist.to_list(), "rwrist": self.rwrist.to_list(),
                "visible_fraction": round(self.visible_fraction, 4), "visible_px": self.visible_px}


@dataclass
class Frame:
    """One rendered frame.  ``raw`` is the image before compression; ``jpeg`` the compressed bytes (None
    when compression is off); ``image`` is what a camera would deliver (the decoded JPEG, else ``raw``)."""

    camera: str
    t: float
    index: int
    dropped: bool
    truth: list[BodyTruth]
    raw: np.ndarray
    jpeg: bytes | None = None
    _decoded: np.ndarray | None = field(default=None, repr=False)

    @property
    def image(self) -> np.ndarray:
        if self.jpeg is None:
            return self.raw
        if self._decoded is None:
            self._decoded = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        return self._decoded

    def jpeg_bytes(self, quality: int = 90) -> bytes:
        """The JPEG to store: the frame's own when it was compressed, else ``raw`` encoded now."""
        if self.jpeg is not None:
            return self.jpeg
        ok, buf = cv2.imencode(".jpg", self.raw, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for camera {self.camera}")
        return buf.tobytes()


@dataclass
class _CameraState:
    view: StaticView
    rng: np.random.Generator
    exposure: float
    white: np.ndarray          # per-channel gain (B, G, R)
    drift: tuple[float, float, float]   # amplitude, period s, phase
    temp: tuple[float, float, float]
    noise_pos: np.ndarray | None
    noise_neg: np.ndarray | None
    blur_sigma: float
    frames: int = 0


NOISE_MARGIN = 16
KEYPOINT_JOINTS = [J["head"], J["lwrist"], J["rwrist"]]
SHADOW_JOINTS = [J["lknee"], J["rknee"], J["lankle"], J["rankle"], J["pelvis"]]


class Renderer:
    """Renders ``cameras``' views of ``store`` with shoppers; see the module docstring."""

    def __init__(self, store: Store, cameras: dict[str, Camera], markers: MarkerLayout | None = None,
                 seed: int = 0, options: RenderOptions | None = None):
        if not cameras:
            raise ValueError("Renderer: no cameras")
        self.store = store
        self.cameras = dict(cameras)
        self.markers = markers
        self.seed = int(seed)
        self.options = options or RenderOptions()
        self.scene: Scene = build_scene(store, markers, np.random.default_rng([self.seed, 0x5CE7E]),
                                        variety=self.options.variety)
        self._states: dict[str, _CameraState] = {}
        self._parts_key: tuple | None = None
        self._parts: Parts | None = None

    # ---- per-camera set-up
    def prepare(self, camera_ids: list[str] | None = None) -> None:
        """Build the static views now (otherwise each is built on its camera's first frame)."""
        for cid in camera_ids or list(self.cameras):
            self._state(cid)

    def static_view(self, camera_id: str) -> StaticView:
        return self._state(camera_id).view

    def _state(self, camera_id: str) -> _CameraState:
        st = self._states.get(camera_id)
        if st is not None:
            return st
        if camera_id not in self.cameras:
            raise KeyError(f"unknown camera {camera_id!r}; cameras: {sorted(self.cameras)}")
        cam = self.cameras[camera_id]
        view = build_static_view(self.scene, cam, self.options.supersample)
        rng = np.random.default_rng([self.seed, zlib.crc32(camera_id.encode())])
        o = self.options
        exposure = float(rng.uniform(0.88, 1.12))
        white = rng.uniform(0.94, 1.06, 3)
        drift = (float(rng.uniform(0.03, 0.08)) * o.lighting_drift, float(rng.uniform(30, 90)),
                 float(rng.uniform(0, 2 * np.pi)))
        temp = (float(rng.uniform(0.02, 0.06)) * o.lighting_drift, float(rng.uniform(60, 240)),
                float(rng.uniform(0, 2 * np.pi)))
        sigma = float(rng.uniform(1.5, 4.0)) * o.noise
        blur = float(rng.uniform(0.5, 0.9)) * o.blur
        noise_pos = noise_neg = None
        if sigma > 0:
            n = rng.normal(0.0, sigma, (cam.height + NOISE_MARGIN, cam.width + NOISE_MARGIN, 3))
            noise_pos = np.clip(np.rint(n), 0, 255).astype(np.uint8)
            noise_neg = np.clip(np.rint(-n), 0, 255).astype(np.uint8)
        st = _CameraState(view, rng, exposure, white, drift, temp, noise_pos, noise_neg, blur)
        self._states[camera_id] = st
        log.info("renderer: camera %s ready (%s %dx%d)", camera_id, cam.model, cam.width, cam.height)
        return st

    # ---- frames
    def _body_parts(self, t: float, bodies: list[Body]) -> Parts:
        """Parts of a frame's bodies, shared by the cameras rendering the same instant."""
        key = (float(t), tuple((b.shopper, b.holding, np.asarray(b.joints).tobytes()) for b in bodies))
        if key != self._parts_key:
            self._parts = body_parts(bodies)
            self._parts_key = key
        return self._parts

    def render(self, camera_id: str, t: float, bodies: list[Body], lighting: float | None = None) -> Frame:
        """Render camera ``camera_id`` at time ``t`` (seconds) with ``bodies``; ``lighting`` scales the
        store's light level (1 = normal) on top of the camera's own drift."""
        st = self._state(camera_id)
        o = self.options
        rng = st.rng
        # every per-frame random draw, always in this order, so the sequence never depends on the options
        u_drop, u_flicker, flick = rng.random(3)
        off_y, off_x = rng.integers(0, NOISE_MARGIN + 1, 2)
        q_draw = rng.random()
        view = st.view
        cam = view.camera
        img = view.image.copy()
        parts = self._body_parts(t, bodies)
        if o.shadows and bodies:
            self._shadows(view, img, bodies)
        raster = rasterize(view, parts, len(bodies), img)
        truth = self._truth(view, bodies, parts, raster)
        # the camera: optics, exposure and white balance, sensor noise, compression
        if st.blur_sigma > 0.05:
            k = 2 * int(np.ceil(2 * st.blur_sigma)) + 1
            img = cv2.GaussianBlur(img, (k, k), st.blur_sigma)
        gain = st.exposure * (1.0 if lighting is None else float(lighting))
        a, period, phase = st.drift
        gain *= 1.0 + a * np.sin(2 * np.pi * t / period + phase)
        if u_flicker < o.flicker_prob:
            gain *= 0.72 + 0.2 * flick if flick < 0.75 else 1.1 + 0.4 * (flick - 0.75)
        ta, tperiod, tphase = st.temp
        warm = ta * np.sin(2 * np.pi * t / tperiod + tphase)
        gains = gain * st.white * np.array([1.0 - warm, 1.0, 1.0 + warm])
        img = cv2.transform(img, np.diag(gains))  # per-channel gain, saturated to 0..255
        if st.noise_pos is not None:
            H, W = cam.height, cam.width
            img = cv2.add(img, st.noise_pos[off_y:off_y + H, off_x:off_x + W])
            img = cv2.subtract(img, st.noise_neg[NOISE_MARGIN - off_y:NOISE_MARGIN - off_y + H,
                                                 NOISE_MARGIN - off_x:NOISE_MARGIN - off_x + W])
        jpeg = None
        if o.jpeg_quality is not None:
            lo, hi = o.jpeg_quality
            q = lo + int(q_draw * (hi - lo + 1) * 0.999999)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for camera {camera_id}")
            jpeg = buf.tobytes()
        frame = Frame(camera_id, float(t), st.frames, bool(u_drop < o.drop_prob), truth, img, jpeg)
        st.frames += 1
        return frame

    def _shadows(self, view: StaticView, img: np.ndarray, bodies: list[Body]) -> None:
        """A soft dark disc on the floor under each shopper (floor pixels only)."""
        cam = view.camera
        H, W = cam.height, cam.width
        fxy = view.floor_xy.reshape(H, W, 2)
        ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        centre = np.stack([np.asarray(b.joints)[SHADOW_JOINTS, :2].mean(axis=0) for b in bodies])
        rad = np.array([0.5 * b.appearance.torso_radius / 0.17 for b in bodies])
        ring = np.concatenate([centre[:, None] + rad[:, None, None] * np.stack([np.cos(ang), np.sin(ang)], 1),
                               np.zeros((len(bodies), 8, 1))], axis=2).reshape(-1, 3)
        uv, _ = cam.project(ring)
        front = (cam.to_camera(ring)[:, 2] > 0.05).reshape(-1, 8).all(axis=1)
        uv = uv.reshape(-1, 8, 2)
        lo = np.floor(np.nan_to_num(uv.min(axis=1), nan=-1e9)).clip(-1, 1e6).astype(np.int64) - 1
        hi = np.ceil(np.nan_to_num(uv.max(axis=1), nan=-1e9)).clip(-1, 1e6).astype(np.int64) + 1
        for i in np.nonzero(front)[0]:
            x0, y0 = max(lo[i, 0], 0), max(lo[i, 1], 0)
            x1, y1 = min(hi[i, 0], W), min(hi[i, 1], H)
            if x1 <= x0 or y1 <= y0:
                continue
            sub = fxy[y0:y1, x0:x1]
            d2 = (sub[..., 0] - np.float32(centre[i, 0])) ** 2 + (sub[..., 1] - np.float32(centre[i, 1])) ** 2
            f = 1.0 - np.float32(0.45) * np.exp(d2 * np.float32(-1.0 / (2 * (0.4 * rad[i]) ** 2)))
            roi = img[y0:y1, x0:x1]
            roi[:] = roi * f[..., None]

    def _truth(self, view: StaticView, bodies: list[Body], parts: Parts, raster: Raster) -> list[BodyTruth]:
        cam = view.camera
        W, H = cam.width, cam.height
        out: list[BodyTruth] = []
        if not bodies:
            return out
        pts = np.stack([np.asarray(b.joints)[KEYPOINT_JOINTS] for b in bodies]).reshape(-1, 3)
        uv, inside = cam.project(pts)
        dist = np.linalg.norm(pts - view.origin, axis=1)
        col = np.clip(np.floor(np.nan_to_num(uv[:, 0])), 0, W - 1).astype(np.int64)
        row = np.clip(np.floor(np.nan_to_num(uv[:, 1])), 0, H - 1).astype(np.int64)
        pix = row * W + col
        lab = raster.label[pix]
        z = raster.depth[pix]
        for i, b in enumerate(bodies):
            if raster.visible_px[i] <= 0:
                continue
            kps = []
            for k in range(3):
                m = 3 * i + k
                own_r = b.appearance.head_radius if k == 0 else 0.06
                if not inside[m]:
                    occ = "outside"
                elif lab[m] == i:
                    occ = "self" if z[m] < dist[m] - own_r - 0.03 else ""
                elif lab[m] >= 0:
                    occ = "body"
                else:
                    occ = "static"
                kps.append(Keypoint(float(uv[m, 0]), float(uv[m, 1]), occ in ("", "self"), occ))
            vis = tuple(float(v) for v in raster.visible_box[i])
            sil = raster.silhouette_box[i]
            full = sil.tolist()
            if sil[0] <= 0 or sil[1] <= 0 or sil[2] >= W or sil[3] >= H:  # cut by the edge: the rest estimated
                full = np.fmin(raster.outline_box[i, :2], sil[:2]).tolist() + \
                    np.fmax(raster.outline_box[i, 2:], sil[2:]).tolist()
            fx0, fy0, fx1, fy1 = full
            area = max((fx1 - fx0) * (fy1 - fy0), 1e-9)
            in_area = max(min(fx1, W) - max(fx0, 0), 0) * max(min(fy1, H) - max(fy0, 0), 0)
            frac = raster.visible_px[i] / max(raster.silhouette_px[i], 1) * min(in_area / area, 1.0)
            out.append(BodyTruth(b.shopper, vis, tuple(float(v) for v in full), *kps,
                                 visible_fraction=float(frac), visible_px=int(raster.visible_px[i])))
        return out


__all__ = ["BodyTruth", "Frame", "Keypoint", "RenderOptions", "Renderer"]
