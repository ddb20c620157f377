"""Floor ArUco markers whose store positions are known: the extrinsic calibration's reference.

A marker file (YAML) lists markers by ArUco id with their centre on the floor (x, y in metres, store frame),
side length and yaw.  The simulator paints them on its floor; ``walkout calibrate extrinsics`` finds them in a
camera image and solves the camera pose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from calibration.config import load_model

ARUCO_DICT = cv2.aruco.DICT_4X4_250


class FloorMarker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    id: Annotated[int, Field(ge=0, lt=250)] = Field(title="ArUco id (DICT_4X4_250)")
    center: tuple[float, float] = Field(title="Centre", description="x, y on the floor, metres")
    size: float = Field(0.30, gt=0.02, le=2.0, title="Side length of the black square, metres")
    yaw_deg: float = Field(0.0, ge=-360, le=360, title="Rotation about z, degrees")

    def corners(self) -> np.ndarray:
        """The 4 corners (4, 3) at z = 0 in ArUco order: top-left, top-right, bottom-right, bottom-left
        as seen in the marker image, with the image's x along the marker's +x and image y along -y."""
        h = self.size / 2
        local = np.array([[-h, h], [h, h], [h, -h], [-h, -h]])
        c, s = np.cos(np.radians(self.yaw_deg)), np.sin(np.radians(self.yaw_deg))
        xy = local @ np.array([[c, s], [-s, c]]) + np.asarray(self.center)
        return np.concatenate([xy, np.zeros((4, 1))], axis=1)


class MarkerLayout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dictionary: str = Field("DICT_4X4_250", title="ArUco dictionary")
    markers: list[FloorMarker] = Field(min_length=1, max_length=250)


def marker_image(marker_id: int, pixels: int = 120) -> np.ndarray:
    """The marker's black-and-white image with a one-cell white quiet zone (uint8, square)."""
    dictionary = cv2.aruco.getPredefinedDictionary(ARUCO_DICT)
    inner = cv2.aruco.generateImageMarker(dictionary, int(marker_id), pixels)
    pad = pixels // 6
    return cv2.copyMakeBorder(inner, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)


def grid_layout(size_xy: tuple[float, float], spacing: float = 1.5, marker_size: float = 0.30,
                margin: float = 0.6, first_id: int = 0) -> MarkerLayout:
    """A regular grid of floor markers covering a floor of ``size_xy`` metres."""
    xs = np.arange(margin, size_xy[0] - margin + 1e-9, spacing)
    ys = np.arange(margin, size_xy[1] - margin + 1e-9, spacing)
    markers = []
    for i, (x, y) in enumerate((x, y) for y in ys for x in xs):
        if first_id + i >= 250:
            break
        markers.append(FloorMarker(id=first_id + i, center=(float(x), float(y)), size=marker_size))
    return MarkerLayout(markers=markers)


def load_layout(path: str | Path) -> MarkerLayout:
    return load_model(MarkerLayout, path)


def save_layout(layout: MarkerLayout, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(layout.model_dump(mode="json"), sort_keys=False))
