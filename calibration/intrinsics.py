"""Intrinsic calibration from ChArUco board images (``walkout calibrate intrinsics``).

Corners are found with OpenCV's ``CharucoDetector`` (OpenCV >= 4.7) and the lens is fitted with
``cv2.calibrateCamera`` (pinhole, OpenCV's k1 k2 p1 p2 k3) or ``cv2.fisheye.calibrate`` (k1..k4).  The result
is a camera file (:class:`calibration.camera.CameraFile`) with the RMS reprojection error in pixels and an
identity pose; ``walkout calibrate extrinsics`` fills in the pose.

Pixel convention: OpenCV's detectors put pixel centres on integer coordinates; the camera model
(:mod:`calibration.camera`) puts them at ``i + 0.5`` (the image spans ``[0, W] x [0, H]``).  Detected corners
are shifted by :data:`CV_TO_MODEL` before fitting, so the principal point in the file is in the model's
convention and a detection projected back lands where OpenCV saw it.
"""

from __future__ import annotations

import datetime as _dt
import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibration.camera import Camera
from calibration.config import load_model

log = logging.getLogger(__name__)

CV_TO_MODEL = 0.5  # add to an OpenCV pixel coordinate to get the camera model's coordinate
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class CalibrationError(ValueError):
    """A calibration that cannot be made from the given inputs (the message says why); no file is written."""


# ---------------------------------------------------------------------------------------------- the board
class BoardSpec(BaseModel):
    """A ChArUco board (YAML file for ``--board``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    squares_x: int = Field(7, ge=3, le=64, title="Squares across")
    squares_y: int = Field(5, ge=3, le=64, title="Squares down")
    square_m: float = Field(0.04, gt=0.001, le=1.0, title="Square side, metres")
    marker_m: float = Field(0.03, gt=0.001, le=1.0, title="Marker side, metres")
    dictionary: str = Field("DICT_5X5_100", title="ArUco dictionary", pattern=r"^DICT_[A-Z0-9_]+$")

    @model_validator(mode="after")
    def _check(self) -> BoardSpec:
        if self.marker_m >= self.square_m:
            raise ValueError("marker_m must be smaller than square_m")
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r}")
        need = (self.squares_x * self.squares_y) // 2
        if need > _dictionary_size(self.dictionary):
            raise ValueError(f"{self.dictionary} has too few markers for a {self.squares_x}x{self.squares_y} "
                             "board")
        return self

    def board(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m,
                                      dictionary)

    @property
    def size_m(self) -> tuple[float, float]:
        """Board width and height in metres (the chessboard area; origin at its top-left corner, x right,
        y down, z into the board)."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    @property
    def corner_count(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)


def _dictionary_size(name: str) -> int:
    digits = name.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else 1000


def load_board(path: str | Path) -> BoardSpec:
    return load_model(BoardSpec, path)


# ---------------------------------------------------------------------------------------------- detection
@dataclass
class BoardView:
    """The ChArUco corners found in one image: ids, object points ``(N, 3)`` and OpenCV pixels ``(N, 2)``."""

    name: str
    ids: np.ndarray
    object_points: np.ndarray
    image_points: np.ndarray


def detect_board(image: np.ndarray, spec: BoardSpec, name: str = "<image>") -> BoardView | None:
    """ChArUco corners in ``image`` (grey or BGR), or None when the board is not found."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    board = spec.board()
    params = cv2.aruco.CharucoParameters()
    params.minMarkers = 2
    detector = cv2.aruco.CharucoDetector(board, params)
    corners, ids, _, _ = detector.detectBoard(grey)
    if ids is None or len(ids) == 0:
        return None
    obj, img = board.matchImagePoints(corners, ids)
    return BoardView(name, ids.ravel().astype(int), obj.reshape(-1, 3).astype(float),
                     img.reshape(-1, 2).astype(float))


def list_images(source: str | Path) -> list[Path]:
    """Image files in a folder, or matching a glob pattern, sorted."""
    src = str(source)
    if Path(src).is_dir():
        files = [p for p in Path(src).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [Path(p) for p in glob.glob(src)]
    return sorted(files)


# ---------------------------------------------------------------------------------------------- fitting
@dataclass
class IntrinsicResult:
    camera: Camera
    rms_px: float
    views: list[BoardView]
    per_view_rms_px: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def calibrate_views(views: list[BoardView], size: tuple[int, int], model: Literal["pinhole", "fisheye"],
                    camera_id: str = "camera", min_views: int = 5, min_corners: int = 8) -> IntrinsicResult:
    """Fit the lens to board views; raises :class:`CalibrationError` with the reason when it cannot."""
    usable = [v for v in views if len(v.ids) >= min_corners]
    skipped = [v.name for v in views if len(v.ids) < min_corners]
    if len(usable) < min_views:
        raise CalibrationError(
            f"too few usable board views: {len(usable)} with at least {min_corners} corners, need {min_views}"
            + (f" (too few corners in: {', '.join(skipped)})" if skipped else ""))
    obj = [v.object_points.astype(np.float64).reshape(-1, 1, 3) for v in usable]
    img = [(v.image_points + CV_TO_MODEL).astype(np.float64).reshape(-1, 1, 2) for v in usable]
    w, h = size
    if model == "fisheye":
        K0 = np.array([[w / 2.0, 0, w / 2.0], [0, w / 2.0, h / 2.0], [0, 0, 1]])
        flags = _fisheye_flag("CALIB_RECOMPUTE_EXTRINSIC") | _fisheye_flag("CALIB_FIX_SKEW")
        criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
        try:
            rms, K, D, rvecs, tvecs = cv2.fisheye.calibrate(
                [o.reshape(1, -1, 3) for o in obj], [i.reshape(1, -1, 2) for i in img], (w, h), K0,
                np.zeros((4, 1)), flags=flags, criteria=criteria)
        except cv2.error as exc:
            raise CalibrationError(f"fisheye calibration failed: {_cv_message(exc)}") from None
        dist = D.ravel()
    else:
        criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
        obj32 = [o.astype(np.float32) for o in obj]
        img32 = [i.astype(np.float32) for i in img]
        try:
            rms, K, D, rvecs, tvecs = cv2.calibrateCamera(obj32, img32, (w, h), None, None, criteria=criteria)
        except cv2.error as exc:
            raise CalibrationError(f"pinhole calibration failed: {_cv_message(exc)}") from None
        dist = D.ravel()[:5]
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(dist)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise CalibrationError("calibration diverged (non-finite or negative focal length)")
    cam = Camera(camera_id, model, w, h, K, dist, np.eye(3), np.zeros(3))
    cam.meta = {"rms_px": float(rms), "calibrated_at": _dt.date.today().isoformat()}
    per_view = []
    for v, rv, tv in zip(usable, rvecs, tvecs, strict=True):
        posed = Camera.from_pose(camera_id, model, (w, h), K, dist, np.ravel(rv), np.ravel(tv))
        uv, _ = posed.project(v.object_points)
        per_view.append(float(np.sqrt(np.mean(np.sum((uv - (v.image_points + CV_TO_MODEL)) ** 2, axis=1)))))
    return IntrinsicResult(cam, float(rms), usable, per_view, skipped)


def calibrate_images(paths: list[Path], spec: BoardSpec, model: Literal["pinhole", "fisheye"],
                     camera_id: str = "camera", min_views: int = 5, min_corners: int = 8) -> IntrinsicResult:
    """Detect the board in every image and fit; all images must have the same size."""
    if not paths:
        raise CalibrationError("no images given")
    views: list[BoardView] = []
    missing: list[str] = []
    size: tuple[int, int] | None = None
    for p in paths:
        image = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise CalibrationError(f"{p}: cannot read the image")
        this = (image.shape[1], image.shape[0])
        if size is None:
            size = this
        elif this != size:
            raise CalibrationError(f"{p}: image size {this[0]}x{this[1]} differs from {size[0]}x{size[1]}")
        view = detect_board(image, spec, p.name)
        if view is None:
            missing.append(p.name)
            log.info("%s: board not found", p)
        else:
            views.append(view)
    if not views:
        raise CalibrationError(f"board not found in any of the {len(paths)} images (is the board spec right? "
                               f"{spec.squares_x}x{spec.squares_y} squares, {spec.dictionary})")
    result = calibrate_views(views, size, model, camera_id, min_views, min_corners)
    result.skipped = missing + result.skipped
    return result


def _fisheye_flag(name: str) -> int:
    """A fisheye calibration flag: ``cv2.fisheye.X`` in OpenCV 4, the unified ``cv2.X`` in OpenCV 5."""
    value = getattr(cv2.fisheye, name, None)
    return int(value if value is not None else getattr(cv2, name))


def _cv_message(exc: cv2.error) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else "OpenCV error"


__all__ = [
    "CV_TO_MODEL", "BoardSpec", "BoardView", "CalibrationError", "IntrinsicResult", "calibrate_images",
    "calibrate_views", "detect_board", "list_images", "load_board",
]
