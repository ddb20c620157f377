"""Extrinsic calibration from floor ArUco markers whose store positions are known
(``walkout calibrate extrinsics``).

The markers are found with ``cv2.aruco.ArucoDetector`` (sub-pixel corners).  Some of them are held out; the
pose is solved from the rest: every corner is turned into a normalised image coordinate through the camera's
own lens model (so a fisheye is handled exactly like a pinhole), an initial pose comes from OpenCV's planar
PnP (IPPE, with SQPnP as a fallback), and it is refined by least squares on the pixel reprojection error
through the same lens model.  The held-out markers then say how far off the floor positions are: their
detected corners are cast back onto the floor through the solved camera and compared with the known corners.

A pose that cannot be trusted is refused with the reason (:class:`CalibrationError`): too few markers, markers
(nearly) on one line, a camera below the floor or markers behind it, or a fit whose error is too large.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import least_squares

from calibration.camera import Camera
from calibration.intrinsics import CV_TO_MODEL, CalibrationError
from calibration.markers import MarkerLayout

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- detection
@dataclass
class MarkerDetection:
    """ArUco markers found in an image: ids ``(K,)`` and corners ``(K, 4, 2)`` in OpenCV pixels (centres on
    integers), in ArUco order (top-left, top-right, bottom-right, bottom-left of the marker image)."""

    ids: np.ndarray
    corners: np.ndarray

    def model_corners(self) -> np.ndarray:
        """Corners in the camera model's pixel convention (see :data:`CV_TO_MODEL`)."""
        return self.corners + CV_TO_MODEL

    def select(self, ids: list[int] | np.ndarray) -> MarkerDetection:
        pos = {int(i): k for k, i in enumerate(self.ids)}
        idx = [pos[int(i)] for i in ids]
        return MarkerDetection(self.ids[idx], self.corners[idx])


def detect_markers(image: np.ndarray, dictionary: str = "DICT_4X4_250") -> MarkerDetection:
    """Every marker of ``dictionary`` in ``image`` (grey or BGR); duplicates of one id are all dropped
    (an id seen twice cannot be told apart)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if not hasattr(cv2.aruco, dictionary):
        raise CalibrationError(f"unknown ArUco dictionary {dictionary!r}")
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    params.cornerRefinementWinSize = 4
    params.cornerRefinementMaxIterations = 50
    params.cornerRefinementMinAccuracy = 0.005
    aruco_dict = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    detector = cv2.aruco.ArucoDetector(aruco_dict, params)
    corners, ids, _ = detector.detectMarkers(grey)
    if ids is None or len(ids) == 0:
        return MarkerDetection(np.zeros(0, int), np.zeros((0, 4, 2)))
    ids = ids.ravel().astype(int)
    corners = np.array([c.reshape(4, 2) for c in corners], float)
    uniq, counts = np.unique(ids, return_counts=True)
    dup = set(uniq[counts > 1].tolist())
    if dup:
        log.warning("marker ids seen more than once, ignored: %s", sorted(dup))
    keep = np.array([i not in dup for i in ids])
    order = np.argsort(ids[keep], kind="stable")
    return MarkerDetection(ids[keep][order], corners[keep][order])


def refine_corners(image: np.ndarray, detection: MarkerDetection, camera: Camera | None = None,
                   rounds: int = 3) -> MarkerDetection:
    """Re-locate every marker's four corners as the intersections of its four outer edges.

    ArUco's own corner refinement is biased on small markers seen at a slant (a corner far from 90 degrees
    comes out up to a pixel or two inside the square).  Here each side's edge is measured at many points
    along its middle (the gradient-weighted centroid of a short profile across the edge, re-centred until it
    settles), the points are taken through ``camera``'s lens model to normalised coordinates where the side is
    a straight line (pixel coordinates when no camera is given), a line is fitted to each side, and adjacent
    lines are intersected.  A side that cannot be measured (off the image) keeps the detector's corners."""
    if len(detection.ids) == 0:
        return detection
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = grey.astype(np.float32)
    lens = lens_of(camera) if camera is not None else None
    out = detection.corners.copy()
    for k in range(len(detection.ids)):
        corners = detection.corners[k].copy()
        for _ in range(rounds):
            refined = _refine_quad(grey, corners, lens)
            if refined is None:
                break
            moved = np.max(np.linalg.norm(refined - corners, axis=1))
            corners = refined
            if moved < 0.01:
                break
        out[k] = corners
    return MarkerDetection(detection.ids.copy(), out)


def _sample(grey: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``grey`` at OpenCV pixel coordinates ``(..., 2)``; NaN outside."""
    h, w = grey.shape
    x, y = xy[..., 0], xy[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
    fx = np.clip(x - x0, 0, 1)
    fy = np.clip(y - y0, 0, 1)
    v = ((1 - fy) * ((1 - fx) * grey[y0, x0] + fx * grey[y0, x0 + 1])
         + fy * ((1 - fx) * grey[y0 + 1, x0] + fx * grey[y0 + 1, x0 + 1]))
    return np.where(inside, v, np.nan)


def _edge_points(grey: np.ndarray, a: np.ndarray, b: np.ndarray, outward: np.ndarray, half_width: float
                 ) -> np.ndarray:
    """Sub-pixel points on the dark-to-bright edge near the segment ``a``-``b`` (OpenCV pixels)."""
    length = float(np.linalg.norm(b - a))
    n_pts = int(np.clip(length / 1.0, 4, 80))
    t = np.linspace(0.2, 0.8, n_pts)
    base = a[None, :] + t[:, None] * (b - a)[None, :]
    step = 0.2
    s = np.arange(-half_width, half_width + 1e-9, step)
    offset = np.zeros(n_pts)
    for _ in range(4):
        pos = base[:, None, :] + (offset[:, None] + s[None, :])[..., None] * outward[None, None, :]
        prof = _sample(grey, pos)                                   # (n, S)
        grad = np.diff(prof, axis=1)                                # dark inside -> bright outside: > 0
        mids = (s[:-1] + s[1:]) / 2
        g = np.where(np.isfinite(grad), np.maximum(grad, 0.0), 0.0)
        total = g.sum(axis=1)
        shift = np.where(total > 0, (g * mids[None, :]).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0)
        offset = offset + np.clip(shift, -half_width / 2, half_width / 2)
        if np.max(np.abs(shift)) < 0.005:
            break
    good = np.isfinite(prof).all(axis=1) & (total > 0) & (np.abs(offset) < 2 * half_width)
    return (base + offset[:, None] * outward[None, :])[good]


def _fit_line(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Total-least-squares line through points: (a point on it, unit direction); drops far outliers once."""
    if len(points) < 3:
        return None
    for _ in range(2):
        c = points.mean(axis=0)
        _, _, vt = np.linalg.svd(points - c)
        d = vt[0]
        normal = np.array([-d[1], d[0]])
        r = np.abs((points - c) @ normal)
        keep = r <= max(3 * np.median(r), 1e-9)
        if keep.all() or keep.sum() < 3:
            break
        points = points[keep]
    return c, d


def _refine_quad(grey: np.ndarray, corners: np.ndarray, lens: Camera | None) -> np.ndarray | None:
    side = np.mean(np.linalg.norm(corners - np.roll(corners, -1, axis=0), axis=1))
    half_width = float(np.clip(side / 6.0 * 0.45, 0.8, 3.0))    # stay within one cell of the edge
    centre = corners.mean(axis=0)
    lines = []
    for k in range(4):
        a, b = corners[k], corners[(k + 1) % 4]
        d = (b - a) / max(np.linalg.norm(b - a), 1e-9)
        outward = np.array([-d[1], d[0]])
        if outward @ ((a + b) / 2 - centre) < 0:
            outward = -outward
        pts = _edge_points(grey, a, b, outward, half_width)
        if lens is not None and len(pts):
            pts, ok = _normalised(lens, pts + CV_TO_MODEL)
            pts = pts[ok]
        line = _fit_line(pts)
        if line is None:
            return None
        lines.append(line)
    new = np.empty((4, 2))
    for k in range(4):
        (p1, d1), (p2, d2) = lines[(k - 1) % 4], lines[k]
        A = np.array([d1, -d2]).T
        if abs(np.linalg.det(A)) < 1e-9:
            return None
        s = np.linalg.solve(A, p2 - p1)
        new[k] = p1 + s[0] * d1
    if lens is not None:
        uv, _ = lens.project(np.concatenate([new, np.ones((4, 1))], axis=1))
        new = uv - CV_TO_MODEL
    if not np.all(np.isfinite(new)) or np.max(np.linalg.norm(new - corners, axis=1)) > max(3.0, side / 4):
        return None
    return new


# ---------------------------------------------------------------------------------------------- the fit
@dataclass
class ExtrinsicResult:
    camera: Camera
    used_ids: list[int]
    held_out_ids: list[int]
    rms_px: float                        # reprojection RMS of the markers used for the fit
    holdout_rms_px: float | None         # reprojection RMS of the held-out markers
    floor_errors_m: np.ndarray           # floor error of every held-out corner, metres
    unknown_ids: list[int] = field(default_factory=list)   # seen but not in the marker file
    missing_ids: list[int] = field(default_factory=list)   # in the marker file but not seen

    @property
    def floor_mean_cm(self) -> float | None:
        return float(np.mean(self.floor_errors_m) * 100) if self.floor_errors_m.size else None

    @property
    def floor_max_cm(self) -> float | None:
        return float(np.max(self.floor_errors_m) * 100) if self.floor_errors_m.size else None

    def summary(self) -> dict:
        return {
            "camera": self.camera.id,
            "markers_used": self.used_ids,
            "markers_held_out": self.held_out_ids,
            "rms_px": round(self.rms_px, 4),
            "holdout_rms_px": None if self.holdout_rms_px is None else round(self.holdout_rms_px, 4),
            "floor_error_mean_cm": None if self.floor_mean_cm is None else round(self.floor_mean_cm, 3),
            "floor_error_max_cm": None if self.floor_max_cm is None else round(self.floor_max_cm, 3),
            "camera_position_m": [round(float(v), 4) for v in self.camera.position],
            "unknown_ids": self.unknown_ids,
            "markers_not_seen": len(self.missing_ids),
        }


def split_holdout(ids: list[int], fraction: float, min_fit: int) -> tuple[list[int], list[int]]:
    """Choose the held-out markers: ``fraction`` of them (at least one), spread evenly through the sorted
    ids (the marker files number markers row by row, so this spreads them over the floor), keeping at least
    ``min_fit`` to fit.  Returns ``(fit, held_out)``."""
    ids = sorted(ids)
    n = len(ids)
    if fraction <= 0:
        return ids, []
    n_hold = max(1, round(n * fraction))
    n_hold = min(n_hold, n - min_fit)
    if n_hold <= 0:
        return ids, []
    picks = np.unique(np.round(np.linspace(0, n - 1, n_hold + 2)[1:-1]).astype(int))
    held = [ids[i] for i in picks]
    return [i for i in ids if i not in held], held


def check_spread(points_xy: np.ndarray, marker_size: float, min_ratio: float = 0.08) -> None:
    """Refuse marker centres that lie (nearly) on one line: the pose about that line is then not
    determined."""
    c = points_xy - points_xy.mean(axis=0)
    s = np.linalg.svd(c, compute_uv=False) / np.sqrt(max(len(points_xy), 1))
    if len(points_xy) < 3 or s[1] < max(min_ratio * s[0], marker_size / 2):
        raise CalibrationError(
            f"degenerate marker layout: the {len(points_xy)} fit markers lie (nearly) on one line "
            f"(spread {s[0]:.2f} m along it, {s[1]:.3f} m across); the camera pose is not determined - "
            "use markers spread over the floor")


def lens_of(camera: Camera) -> Camera:
    """The camera's lens alone: the same intrinsics at the identity pose (store frame = camera frame)."""
    return Camera(camera.id, camera.model, camera.width, camera.height, camera.K, camera.dist, np.eye(3),
                  np.zeros(3), fps=camera.fps)


def _normalised(lens: Camera, uv_model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model pixels -> normalised image coordinates through an identity-posed lens (:func:`lens_of`), and a
    mask of usable ones."""
    _, d = lens.pixel_to_ray(uv_model)
    ok = d[:, 2] > 1e-6
    xy = d[:, :2] / np.where(ok, d[:, 2], 1.0)[:, None]
    return xy, ok


def _initial_pose(obj: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose from normalised coordinates (K = I): IPPE for planar targets (both solutions tried), SQPnP too;
    the one with the smallest error wins."""
    candidates = []
    for flag in (cv2.SOLVEPNP_IPPE, cv2.SOLVEPNP_SQPNP):
        try:
            n, rvecs, tvecs, _ = cv2.solvePnPGeneric(obj.astype(np.float64), norm.astype(np.float64),
                                                     np.eye(3), None, flags=flag)
        except cv2.error as exc:
            log.debug("solvePnPGeneric flag %s failed: %s", flag, exc)
            continue
        for rv, tv in zip(rvecs[:n], tvecs[:n], strict=True):
            R, _ = cv2.Rodrigues(rv)
            Xc = obj @ R.T + tv.ravel()
            if np.any(Xc[:, 2] <= 0):
                continue
            err = np.mean(np.sum((Xc[:, :2] / Xc[:, 2:] - norm) ** 2, axis=1))
            candidates.append((err, rv.ravel(), tv.ravel()))
    if not candidates:
        raise CalibrationError("no pose puts the markers in front of the camera (are the marker positions or "
                               "the camera's intrinsics right?)")
    _, rv, tv = min(candidates, key=lambda c: c[0])
    return rv, tv


def refine_pose(camera: Camera, obj: np.ndarray, uv_model: np.ndarray, rvec: np.ndarray, tvec: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares pose on the pixel reprojection error through ``camera``'s lens model."""
    lens = lens_of(camera)

    def residual(p: np.ndarray) -> np.ndarray:
        R, _ = cv2.Rodrigues(p[:3].reshape(3, 1))
        Xc = obj @ R.T + p[3:]
        uv, _ = lens.project(Xc)
        r = (uv - uv_model).ravel()
        return np.where(np.repeat(Xc[:, 2] > 0, 2), r, 1e3)

    sol = least_squares(residual, np.concatenate([rvec, tvec]), method="lm", xtol=1e-15, ftol=1e-15,
                        gtol=1e-15, max_nfev=2000)
    return sol.x[:3], sol.x[3:]


def _rms(camera: Camera, obj: np.ndarray, uv_model: np.ndarray) -> float:
    uv, _ = camera.project(obj)
    return float(np.sqrt(np.mean(np.sum((uv - uv_model) ** 2, axis=1))))


def solve_extrinsics(camera: Camera, detection: MarkerDetection, layout: MarkerLayout, holdout: float = 0.25,
                     min_markers: int = 3, max_rms_px: float = 2.0) -> ExtrinsicResult:
    """Solve ``camera``'s pose (its intrinsics are kept) from the detected floor markers.

    At least ``min_markers`` markers are used for the fit and, when there are more, ``holdout`` of them are
    kept back to measure the floor error.  Raises :class:`CalibrationError` with the reason on bad input."""
    known = {m.id: m for m in layout.markers}
    seen = [int(i) for i in detection.ids]
    unknown = sorted(i for i in seen if i not in known)
    usable = sorted(i for i in seen if i in known)
    missing = sorted(i for i in known if i not in seen)
    if not seen:
        raise CalibrationError("no floor markers found in the image")
    if len(usable) < min_markers:
        extra = f"; ids {unknown} are not in the marker file" if unknown else ""
        raise CalibrationError(f"too few floor markers: found {len(usable)} of the marker file's markers "
                               f"({usable}), need at least {min_markers}{extra}")
    fit_ids, held_ids = split_holdout(usable, holdout, min_markers)
    fit_markers = [known[i] for i in fit_ids]
    check_spread(np.array([m.center for m in fit_markers]), min(m.size for m in fit_markers))

    fit_det = detection.select(fit_ids)
    obj = np.concatenate([m.corners() for m in fit_markers])
    uv = fit_det.model_corners().reshape(-1, 2)
    norm, ok = _normalised(lens_of(camera), uv)
    if not np.all(ok):
        raise CalibrationError("some marker corners are outside the lens model's field of view")
    rvec, tvec = _initial_pose(obj, norm)
    rvec, tvec = refine_pose(camera, obj, uv, rvec, tvec)
    posed = Camera.from_pose(camera.id, camera.model, camera.size, camera.K, camera.dist, rvec, tvec,
                             fps=camera.fps)
    posed.meta = dict(camera.meta)

    if posed.position[2] <= 0:
        raise CalibrationError(f"degenerate pose: the solved camera is {posed.position[2]:.2f} m, below the "
                               "floor (are the marker positions mirrored?)")
    if np.any(posed.to_camera(obj)[:, 2] <= 0):
        raise CalibrationError("degenerate pose: some markers end up behind the camera")
    rms = _rms(posed, obj, uv)
    if not np.isfinite(rms) or rms > max_rms_px:
        raise CalibrationError(f"pose fit failed: reprojection RMS {rms:.2f} px > {max_rms_px} px (wrong "
                               "marker positions or ids in the marker file, or wrong intrinsics?)")

    holdout_rms = None
    floor_err = np.zeros(0)
    if held_ids:
        held_det = detection.select(held_ids)
        held_obj = np.concatenate([known[i].corners() for i in held_ids])
        held_uv = held_det.model_corners().reshape(-1, 2)
        holdout_rms = _rms(posed, held_obj, held_uv)
        floor_err = floor_errors(posed, held_uv, held_obj)
    posed.meta.update({
        "extrinsic_rms_px": rms,
        "floor_error_cm": None if floor_err.size == 0 else float(np.mean(floor_err) * 100),
        "calibrated_at": _dt.date.today().isoformat(),
    })
    return ExtrinsicResult(posed, fit_ids, held_ids, rms, holdout_rms, floor_err, unknown, missing)


def calibrate_image(camera: Camera, image: np.ndarray, layout: MarkerLayout, holdout: float = 0.25,
                    min_markers: int = 3, max_rms_px: float = 2.0) -> ExtrinsicResult:
    """Detect the layout's markers in ``image``, refine their corners through ``camera``'s lens and solve the
    pose (see :func:`solve_extrinsics`)."""
    if image is None or image.size == 0:
        raise CalibrationError("empty image")
    if (image.shape[1], image.shape[0]) != camera.size:
        raise CalibrationError(f"image size {image.shape[1]}x{image.shape[0]} differs from the camera's "
                               f"{camera.width}x{camera.height}")
    detection = refine_corners(image, detect_markers(image, layout.dictionary), camera)
    return solve_extrinsics(camera, detection, layout, holdout, min_markers, max_rms_px)


def floor_errors(camera: Camera, uv_model: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Distance on the floor between where ``camera`` casts the pixels and the true floor points (metres);
    infinite where a ray misses the floor."""
    pts, hit = camera.pixel_to_plane(uv_model, np.asarray(truth)[:, 2])
    err = np.linalg.norm(pts[:, :2] - np.asarray(truth)[:, :2], axis=1)
    return np.where(hit, err, np.inf)


__all__ = ["ExtrinsicResult", "MarkerDetection", "calibrate_image", "check_spread", "detect_markers",
           "floor_errors", "lens_of", "refine_corners", "refine_pose", "solve_extrinsics", "split_holdout"]
