"""Checking a calibrated camera against floor markers (``walkout calibrate check``): the reprojection RMS
(pixels) and the floor error (cm) of the markers in an image, and an overlay a person can judge at a glance.

The overlay shows the detected markers (green outlines, with ids), where the calibration puts their known
corners (red crosses), the floor grid every 0.5 m (white; the store's origin axes in red and green),
and, when a store is given, every lane's box (yellow) drawn through the camera, lens distortion included:
if the calibration is right the red crosses sit on the green corners and the grid and boxes lie straight
along the floor and the shelves.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.camera import Camera
from calibration.extrinsics import MarkerDetection, detect_markers, floor_errors, refine_corners
from calibration.intrinsics import CV_TO_MODEL, CalibrationError
from calibration.markers import MarkerLayout
from calibration.store import Store

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    camera: str
    ids: list[int]
    rms_px: float
    floor_errors_m: np.ndarray
    per_marker: dict[int, dict[str, float]] = field(default_factory=dict)
    unknown_ids: list[int] = field(default_factory=list)

    @property
    def floor_mean_cm(self) -> float:
        return float(np.mean(self.floor_errors_m) * 100)

    @property
    def floor_max_cm(self) -> float:
        return float(np.max(self.floor_errors_m) * 100)

    def summary(self) -> dict:
        return {
            "camera": self.camera,
            "markers": self.ids,
            "rms_px": round(self.rms_px, 4),
            "floor_error_mean_cm": round(self.floor_mean_cm, 3),
            "floor_error_max_cm": round(self.floor_max_cm, 3),
            "per_marker": {str(k): {kk: round(vv, 4) for kk, vv in v.items()}
                           for k, v in self.per_marker.items()},
            "unknown_ids": self.unknown_ids,
        }


def check_detection(camera: Camera, detection: MarkerDetection, layout: MarkerLayout,
                    ids: list[int] | None = None) -> CheckReport:
    """Reprojection RMS and floor errors of the detected markers (all known ones, or only ``ids``)."""
    known = {m.id: m for m in layout.markers}
    seen = [int(i) for i in detection.ids]
    unknown = sorted(i for i in seen if i not in known)
    use = sorted(i for i in seen if i in known and (ids is None or i in ids))
    if not use:
        wanted = (f" of the requested ids {sorted(ids)}" if ids is not None
                  else " of the marker file's markers")
        raise CalibrationError(f"no markers{wanted} found in the image (seen: {seen})")
    det = detection.select(use)
    uv = det.model_corners()                               # (K, 4, 2)
    truth = np.stack([known[i].corners() for i in use])    # (K, 4, 3)
    proj, _ = camera.project(truth.reshape(-1, 3))
    res = np.linalg.norm(proj.reshape(-1, 4, 2) - uv, axis=2)
    err = floor_errors(camera, uv.reshape(-1, 2), truth.reshape(-1, 3)).reshape(-1, 4)
    per = {i: {"rms_px": float(np.sqrt(np.mean(res[k] ** 2))), "floor_cm": float(np.mean(err[k]) * 100)}
           for k, i in enumerate(use)}
    return CheckReport(camera.id, use, float(np.sqrt(np.mean(res ** 2))), err.ravel(), per, unknown)


def check_image(camera: Camera, image: np.ndarray, layout: MarkerLayout, ids: list[int] | None = None
                ) -> tuple[CheckReport, MarkerDetection]:
    if (image.shape[1], image.shape[0]) != camera.size:
        raise CalibrationError(f"image size {image.shape[1]}x{image.shape[0]} differs from the camera's "
                               f"{camera.width}x{camera.height}")
    detection = refine_corners(image, detect_markers(image, layout.dictionary), camera)
    return check_detection(camera, detection, layout, ids), detection


# ---------------------------------------------------------------------------------------------- drawing
_SHIFT = 4  # sub-pixel bits for cv2 drawing


def _pts(uv_model: np.ndarray) -> np.ndarray:
    """Model pixels -> fixed-point OpenCV drawing coordinates."""
    return np.round((uv_model - CV_TO_MODEL) * (1 << _SHIFT)).astype(np.int32)


def draw_polyline3d(image: np.ndarray, camera: Camera, points: np.ndarray, color: tuple[int, int, int],
                    thickness: int = 1, step_m: float = 0.05) -> None:
    """Draw the 3D polyline ``points`` (store frame) through ``camera``, densified every ``step_m`` so that
    lens distortion bends it as it should; pieces out of view are left out."""
    pts = np.asarray(points, float)
    dense = [pts[:1]]
    for a, b in itertools.pairwise(pts):
        n = max(int(np.ceil(np.linalg.norm(b - a) / step_m)), 1)
        dense.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
    dense = np.concatenate(dense)
    uv, ok = camera.project(dense)
    margin = 2.0
    ok &= (uv[:, 0] > -margin) & (uv[:, 0] < camera.width + margin)
    run: list[np.ndarray] = []
    for p, good in zip(uv, ok, strict=True):
        if good:
            run.append(p)
            continue
        if len(run) > 1:
            cv2.polylines(image, [_pts(np.array(run))], False, color, thickness, cv2.LINE_AA, _SHIFT)
        run = []
    if len(run) > 1:
        cv2.polylines(image, [_pts(np.array(run))], False, color, thickness, cv2.LINE_AA, _SHIFT)


def draw_box(image: np.ndarray, camera: Camera, corners: np.ndarray, color: tuple[int, int, int],
             thickness: int = 1) -> None:
    """The 12 edges of a box given by its 8 corners in :meth:`calibration.store.Box.corners` order."""
    edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    for a, b in edges:
        draw_polyline3d(image, camera, corners[[a, b]], color, thickness, step_m=0.03)


def draw_floor_grid(image: np.ndarray, camera: Camera, bounds: tuple[float, float, float, float],
                    step: float = 0.5) -> None:
    x0, y0, x1, y1 = bounds
    xs = np.arange(np.ceil(x0 / step) * step, x1 + 1e-9, step)
    ys = np.arange(np.ceil(y0 / step) * step, y1 + 1e-9, step)
    for x in xs:
        color = (0, 0, 230) if abs(x) < 1e-9 else (235, 235, 235)
        draw_polyline3d(image, camera, np.array([[x, y0, 0.0], [x, y1, 0.0]]), color, 1)
    for y in ys:
        color = (0, 200, 0) if abs(y) < 1e-9 else (235, 235, 235)
        draw_polyline3d(image, camera, np.array([[x0, y, 0.0], [x1, y, 0.0]]), color, 1)


def overlay(image: np.ndarray, camera: Camera, layout: MarkerLayout, detection: MarkerDetection,
            report: CheckReport | None = None, store: Store | None = None, grid_step: float = 0.5
            ) -> np.ndarray:
    """The check overlay as a BGR image (see the module docstring)."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if store is not None:
        sx, sy = store.store.size
        bounds = (0.0, 0.0, float(sx), float(sy))
    else:
        xy = np.concatenate([m.corners()[:, :2] for m in layout.markers])
        lo, hi = xy.min(axis=0) - 1.0, xy.max(axis=0) + 1.0
        bounds = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    draw_floor_grid(out, camera, bounds, grid_step)
    if store is not None:
        for _, _, lane in store.iter_lanes():
            draw_box(out, camera, lane.box.corners(), (0, 215, 255), 1)
    for i, c in zip(detection.ids, detection.model_corners(), strict=True):
        cv2.polylines(out, [_pts(c)], True, (0, 220, 0), 1, cv2.LINE_AA, _SHIFT)
        org = tuple(int(v) for v in (c.mean(axis=0) - CV_TO_MODEL))
        cv2.putText(out, str(int(i)), org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 220, 0), 1, cv2.LINE_AA)
    known = {m.id: m for m in layout.markers}
    for i in detection.ids:                 # where the calibration puts the corners of the markers it sees
        m = known.get(int(i))
        if m is None:
            continue
        uv, ok = camera.project(m.corners())
        for p, good in zip(uv, ok, strict=True):
            if good:
                q = p - CV_TO_MODEL
                a = (round(q[0]), round(q[1]))
                cv2.drawMarker(out, a, (0, 0, 255), cv2.MARKER_CROSS, 7, 1, cv2.LINE_AA)
    lines = [f"camera {camera.id}"]
    if report is not None:
        lines.append(f"{len(report.ids)} markers  RMS {report.rms_px:.2f} px")
        lines.append(f"floor error mean {report.floor_mean_cm:.2f} cm  max {report.floor_max_cm:.2f} cm")
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] for t in lines)
    box = out[0:8 + 17 * len(lines), 0:12 + width]
    box[:] = (box * 0.35).astype(out.dtype)
    y = 16
    for text in lines:
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        y += 17
    return out


__all__ = ["CheckReport", "check_detection", "check_image", "draw_box", "draw_floor_grid", "draw_polyline3d",
           "overlay"]
