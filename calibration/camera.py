"""Camera models: pinhole with OpenCV's distortion, and fisheye (OpenCV's ``cv2.fisheye`` model).

The same code projects for the simulator's renderer, the calibration tool and the edge pipeline, so a point
rendered at a pixel is read back at the same place.  Conventions are OpenCV's: the pose is ``rvec``/``tvec``
taking store-frame points into the camera frame (x right, y down, z forward).  All functions are vectorised:
points come in as ``(N, 3)`` arrays, pixels as ``(N, 2)``.  Pixel coordinates are continuous with the image
spanning ``[0, W] x [0, H]``: pixel ``(i, j)``'s centre is ``(i + 0.5, j + 0.5)`` (OpenCV's corner detectors
put it on the integer; ``calibration.intrinsics.CV_TO_MODEL`` converts).

Distortion is evaluated here in numpy (the forward model is checked against ``cv2.projectPoints`` and
``cv2.fisheye.projectPoints`` in the tests) and inverted with Newton's method to 1e-12, which is what makes
pixel -> ray -> point round trips exact to well under a micrometre.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibration.config import load_model

log = logging.getLogger(__name__)

_EPS_Z = 1e-9


# ---------------------------------------------------------------------------------------------- file format
class PoseFile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rvec: tuple[float, float, float] = Field(title="Rotation", description="Rodrigues vector, store -> camera")
    tvec: tuple[float, float, float] = Field(title="Translation", description="metres, store -> camera")


class CameraFile(BaseModel):
    """One camera's calibration file (YAML)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
    model: Literal["pinhole", "fisheye"] = Field(title="Lens model")
    image_size: tuple[Annotated[int, Field(gt=0, le=20000)], Annotated[int, Field(gt=0, le=20000)]] = Field(
        title="Image size", description="width, height in pixels"
    )
    K: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]] = Field(
        title="Intrinsic matrix"
    )
    dist: list[float] = Field(
        default_factory=list, title="Distortion",
        description="pinhole: k1 k2 p1 p2 [k3 [k4 k5 k6]] (OpenCV order); fisheye: k1 k2 k3 k4",
    )
    pose: PoseFile = Field(title="Pose", description="store -> camera transform (OpenCV convention)")
    rms_px: float | None = Field(None, ge=0, title="Reprojection RMS of the intrinsic calibration, pixels")
    extrinsic_rms_px: float | None = Field(None, ge=0, title="Reprojection RMS of the pose fit, pixels")
    floor_error_cm: float | None = Field(None, ge=0, title="Mean floor error of held-out markers, cm")
    calibrated_at: str | None = Field(None, title="Date the calibration was made (ISO 8601)")
    fps: float = Field(10.0, gt=0, le=1000, title="Frame rate")

    @model_validator(mode="after")
    def _check(self) -> CameraFile:
        K = np.asarray(self.K, float)
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError("K: focal lengths fx, fy must be positive")
        if not (np.allclose(K[2], [0, 0, 1]) and K[1, 0] == 0):
            raise ValueError("K: must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
        n = len(self.dist)
        if self.model == "fisheye" and n not in (0, 4):
            raise ValueError("dist: a fisheye model takes 4 coefficients k1..k4")
        if self.model == "pinhole" and n not in (0, 4, 5, 8):
            raise ValueError("dist: a pinhole model takes 4, 5 or 8 coefficients")
        return self


# ---------------------------------------------------------------------------------------------- the model
@dataclass
class Camera:
    """A calibrated camera.  ``R``, ``t`` map store points to the camera frame: ``Xc = R @ X + t``."""

    id: str
    model: str  # "pinhole" | "fisheye"
    width: int
    height: int
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    fps: float = 10.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, float).reshape(3, 3)
        self.R = np.asarray(self.R, float).reshape(3, 3)
        self.t = np.asarray(self.t, float).reshape(3)
        d = np.asarray(self.dist, float).ravel()
        if self.model == "fisheye":
            self.dist = np.zeros(4) if d.size == 0 else d
        else:
            self.dist = np.concatenate([d, np.zeros(8 - d.size)]) if d.size < 8 else d[:8]
        if self.model not in ("pinhole", "fisheye"):
            raise ValueError(f"unknown camera model {self.model!r}")
        self._r_max = self._monotonic_radius()

    def _monotonic_radius(self) -> float:
        """Largest normalised radius (tan of the off-axis angle) where the radial distortion still grows;
        beyond it the model folds back and projections are not valid."""
        if self.model == "fisheye":
            th = np.linspace(0, np.pi / 2, 20001)[1:]
            k1, k2, k3, k4 = self.dist
            th2 = th * th
            d = 1 + th2 * (3 * k1 + th2 * (5 * k2 + th2 * (7 * k3 + th2 * 9 * k4)))
            bad = np.nonzero(d <= 0)[0]
            return float(np.tan(th[bad[0] - 1])) if bad.size else np.inf
        r = np.linspace(0, 10, 100001)[1:]
        xy = np.stack([r, np.zeros_like(r)], axis=1)
        rd = self._distort(xy)[:, 0] - self._distort(np.zeros((1, 2)))[0, 0]
        bad = np.nonzero(np.diff(rd) <= 0)[0]
        return float(r[bad[0]]) if bad.size else np.inf

    # ---- construction
    @classmethod
    def from_pose(cls, id: str, model: str, size: tuple[int, int], K, dist, rvec, tvec, **kw) -> Camera:
        R, _ = cv2.Rodrigues(np.asarray(rvec, float).reshape(3, 1))
        return cls(id, model, int(size[0]), int(size[1]), K, dist, R, np.asarray(tvec, float), **kw)

    @classmethod
    def look_at(cls, id: str, model: str, size: tuple[int, int], K, dist, position, target,
                up=(0.0, 1.0, 0.0), **kw) -> Camera:
        """A camera at ``position`` looking at ``target`` (store frame); image ``-y`` points along ``up``."""
        position = np.asarray(position, float)
        z = np.asarray(target, float) - position
        z /= np.linalg.norm(z)
        up = np.asarray(up, float)
        x = np.cross(z, up)
        if np.linalg.norm(x) < 1e-9:
            raise ValueError("look_at: up is parallel to the viewing direction")
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])  # rows: camera axes in store coordinates
        return cls(id, model, int(size[0]), int(size[1]), K, dist, R, -R @ position, **kw)

    @classmethod
    def from_file(cls, path: str | Path) -> Camera:
        f = load_model(CameraFile, path)
        cam = cls.from_pose(f.id, f.model, f.image_size, f.K, f.dist, f.pose.rvec, f.pose.tvec, fps=f.fps)
        cam.meta = {k: getattr(f, k) for k in ("rms_px", "extrinsic_rms_px", "floor_error_cm", "calibrated_at")}
        return cam

    def to_file_model(self) -> CameraFile:
        rvec, _ = cv2.Rodrigues(self.R)
        dist = self.dist if self.model == "fisheye" else self.dist[: 8 if np.any(self.dist[5:]) else 5]
        return CameraFile(
            id=self.id, model=self.model, image_size=(self.width, self.height),
            K=tuple(tuple(float(v) for v in row) for row in self.K),
            dist=[float(v) for v in dist],
            pose=PoseFile(rvec=tuple(float(v) for v in rvec.ravel()), tvec=tuple(float(v) for v in self.t)),
            fps=self.fps,
            calibrated_at=self.meta.get("calibrated_at") or _dt.date.today().isoformat(),
            **{k: self.meta.get(k) for k in ("rms_px", "extrinsic_rms_px", "floor_error_cm")},
        )

    def save(self, path: str | Path) -> None:
        data = self.to_file_model().model_dump(mode="json")
        data["K"] = [list(r) for r in data["K"]]
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))

    # ---- pose
    @property
    def rvec(self) -> np.ndarray:
        return cv2.Rodrigues(self.R)[0].ravel()

    @property
    def position(self) -> np.ndarray:
        """Camera centre in the store frame."""
        return -self.R.T @ self.t

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    # ---- distortion on normalised coordinates
    def _distort(self, xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        if self.model == "fisheye":
            k1, k2, k3, k4 = self.dist
            r = np.hypot(x, y)
            th = np.arctan(r)
            th2 = th * th
            thd = th * (1 + th2 * (k1 + th2 * (k2 + th2 * (k3 + th2 * k4))))
            scale = np.where(r > 1e-12, thd / np.maximum(r, 1e-300), 1.0)
            return xy * scale[:, None]
        k1, k2, p1, p2, k3, k4, k5, k6 = self.dist
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([xd, yd], axis=1)

    def _undistort(self, xyd: np.ndarray, iters: int = 50) -> np.ndarray:
        """Invert :meth:`_distort` (Newton; fisheye in 1-D on the angle, pinhole in 2-D)."""
        if self.model == "fisheye":
            k1, k2, k3, k4 = self.dist
            rd = np.hypot(xyd[:, 0], xyd[:, 1])
            th = np.clip(rd, 0, np.pi / 2 - 1e-6)
            for _ in range(iters):
                th2 = th * th
                f = th * (1 + th2 * (k1 + th2 * (k2 + th2 * (k3 + th2 * k4)))) - rd
                df = 1 + th2 * (3 * k1 + th2 * (5 * k2 + th2 * (7 * k3 + th2 * 9 * k4)))
                step = f / np.where(np.abs(df) < 1e-12, 1e-12, df)
                th = np.clip(th - step, 0, np.pi / 2 - 1e-9)
                if np.max(np.abs(step), initial=0) < 1e-14:
                    break
            r = np.tan(th)
            scale = np.where(rd > 1e-12, r / np.maximum(rd, 1e-300), 1.0)
            return xyd * scale[:, None]
        # Pinhole: 2-D Newton with the analytic Jacobian, iterating only the points not yet converged.
        xy = np.array(xyd, float, copy=True)
        active = np.arange(len(xy))
        for _ in range(iters):
            if active.size == 0:
                break
            p = xy[active]
            f = self._distort(p) - xyd[active]
            a, b, c, d = self._distort_jacobian(p)  # [[a, b], [c, d]] = d(xd, yd) / d(x, y)
            det = a * d - b * c
            det = np.where(np.abs(det) < 1e-12, 1e-12, det)
            dx = (d * f[:, 0] - b * f[:, 1]) / det
            dy = (-c * f[:, 0] + a * f[:, 1]) / det
            xy[active, 0] -= dx
            xy[active, 1] -= dy
            active = active[np.abs(dx) + np.abs(dy) >= 1e-15]
        return xy

    def _distort_jacobian(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Partial derivatives of the pinhole distortion: ``dxd/dx, dxd/dy, dyd/dx, dyd/dy``."""
        x, y = xy[:, 0], xy[:, 1]
        k1, k2, p1, p2, k3, k4, k5, k6 = self.dist
        r2 = x * x + y * y
        num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
        radial = num / den
        dnum = k1 + r2 * (2 * k2 + 3 * k3 * r2)
        dden = k4 + r2 * (2 * k5 + 3 * k6 * r2)
        dradial = (dnum * den - num * dden) / (den * den)     # d radial / d r2
        xy2 = 2 * x * y * dradial
        return (radial + 2 * x * x * dradial + 2 * p1 * y + 6 * p2 * x,
                xy2 + 2 * p1 * x + 2 * p2 * y,
                xy2 + 2 * p1 * x + 2 * p2 * y,
                radial + 2 * y * y * dradial + 6 * p1 * y + 2 * p2 * x)

    # ---- projection
    def to_camera(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, float).reshape(-1, 3) @ self.R.T + self.t

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store points ``(N, 3)`` -> pixels ``(N, 2)`` and a mask of points in front of the camera and
        inside the image."""
        Xc = self.to_camera(X)
        z = Xc[:, 2]
        front = z > _EPS_Z
        zs = np.where(front, z, 1.0)
        xy = Xc[:, :2] / zs[:, None]
        uv = self._to_pixels(self._distort(xy))
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= self.width) & (uv[:, 1] >= 0) & (uv[:, 1] <= self.height)
        in_model = np.hypot(xy[:, 0], xy[:, 1]) < self._r_max
        return uv, front & inside & in_model & np.all(np.isfinite(uv), axis=1)

    def _to_pixels(self, xyd: np.ndarray) -> np.ndarray:
        K = self.K
        u = K[0, 0] * xyd[:, 0] + K[0, 1] * xyd[:, 1] + K[0, 2]
        v = K[1, 1] * xyd[:, 1] + K[1, 2]
        return np.stack([u, v], axis=1)

    def _from_pixels(self, uv: np.ndarray) -> np.ndarray:
        K = self.K
        y = (uv[:, 1] - K[1, 2]) / K[1, 1]
        x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
        return np.stack([x, y], axis=1)

    def pixel_to_ray(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(N, 2)`` -> rays in the store frame: origins ``(N, 3)`` (the camera centre) and unit
        directions ``(N, 3)``."""
        uv = np.asarray(uv, float).reshape(-1, 2)
        xy = self._undistort(self._from_pixels(uv))
        d_cam = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
        d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
        dirs = d_cam @ self.R  # R^T applied to each row
        return np.broadcast_to(self.position, dirs.shape).copy(), dirs

    def pixel_to_plane(self, uv: np.ndarray, z: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Pixels -> their rays' intersections with the horizontal plane at height ``z`` (scalar or per
        point).  Returns points ``(N, 3)`` and a mask of rays that hit the plane in front of the camera."""
        o, d = self.pixel_to_ray(uv)
        return ray_plane(o, d, z)

    def ray_map(self) -> np.ndarray:
        """Unit ray directions in the store frame for every pixel centre, shape ``(H, W, 3)``."""
        u, v = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        _, d = self.pixel_to_ray(np.stack([u.ravel(), v.ravel()], axis=1))
        return d.reshape(self.height, self.width, 3)

    # ---- OpenCV interop
    def cv_project(self, X: np.ndarray) -> np.ndarray:
        """Projection through OpenCV itself (used to check the numpy model and by the calibration tool)."""
        X = np.asarray(X, float).reshape(-1, 1, 3)
        if self.model == "fisheye":
            uv, _ = cv2.fisheye.projectPoints(X, self.rvec.reshape(3, 1), self.t.reshape(3, 1), self.K, self.dist)
        else:
            uv, _ = cv2.projectPoints(X, self.rvec, self.t, self.K, self.dist)
        return uv.reshape(-1, 2)


def ray_plane(origins: np.ndarray, dirs: np.ndarray, z: float | np.ndarray = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Intersect rays with horizontal planes ``Z = z``; returns points ``(N, 3)`` and a hit mask
    (the plane lies ahead of the origin along the ray)."""
    o = np.asarray(origins, float).reshape(-1, 3)
    d = np.asarray(dirs, float).reshape(-1, 3)
    dz = d[:, 2]
    ok = np.abs(dz) > 1e-12
    s = (np.asarray(z, float) - o[:, 2]) / np.where(ok, dz, 1.0)
    ok &= s > 0
    return o + d * s[:, None], ok


def load_cameras(store, base_dir: Path | None = None) -> dict[str, Camera]:
    """Load every camera file a store description references."""
    from calibration.store import base_dir_of

    base = base_dir or base_dir_of(store) or Path(".")
    return {c.id: Camera.from_file(base / c.file) for c in store.cameras}
