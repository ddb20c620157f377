"""Clothing colour of each tracked person: a cue that tells two people apart where their positions do not.

Where two shoppers pass close to each other, where one camera's tracker swaps their ids, or where a camera
picks a shopper up again after a gap, position alone cannot say who is who.  The colour of the upper body (the
shirt, seen from the ceiling) usually can.  No face, no identity beyond the visit: three numbers per track.

:func:`torso_colours` takes the frame, the tracks' boxes and head keypoints and returns, per box, the median
colour of a small patch on the chest in CIE L*a*b* (L 0..100, a and b about -128..127).  The median resists
the background and a neighbour's pixels that fall in the patch.  Boxes too small or outside the image give NaN
(no colour published).

Exposure and white balance change the lightness much more than the hue, so fusion compares the chroma
(a*, b*) with a tighter spread than L* (``fusion.config.FloorConfig.colour_sd``).
"""

from __future__ import annotations

import cv2
import numpy as np

# where the torso is: this far from the head keypoint towards the box centre (no head: this far down the box)
TOWARDS_CENTRE = 0.5
NO_HEAD_Y = 0.4
PATCH = 0.10  # half the side of the square patch, as a share of the box's longer side
MIN_PIXELS = 9  # fewer pixels in the patch than this: no colour
MIN_BOX_PX = 8  # a box whose longer side is shorter than this: no colour
# spread of one person's colour (L*, a*, b*) in one camera's frames (python -m bench.appearance): the camera
# tracker's unit of colour distance; fusion's ``colour_camera_sd`` is the same figure
CAMERA_SD = (4.0, 2.0, 2.7)


def torso_colours(image: np.ndarray, boxes: np.ndarray, heads: np.ndarray | None = None) -> np.ndarray:
    """Median L*a*b* colour of each box's torso patch, ``(n, 3)`` float; NaN rows where not measurable.

    ``image`` is an 8-bit BGR frame ``(H, W, 3)`` (a grey frame gives NaN: no colour to tell people apart);
    ``boxes`` ``(n, 4)`` ``x1, y1, x2, y2`` in its pixels; ``heads`` ``(n, 2)`` the head keypoints in pixels
    (NaN where not seen).  Seen from a ceiling camera a person lies in any direction in the image, so the
    torso is found from the head: the patch is centred ``TOWARDS_CENTRE`` of the way from the head to the box
    centre (the chest, whether the person stands upright in the image or lies across it)."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    n = len(boxes)
    out = np.full((n, 3), np.nan)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or not n:
        return out
    h, w = image.shape[:2]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    px, py = cx.copy(), boxes[:, 1] + NO_HEAD_Y * (boxes[:, 3] - boxes[:, 1])
    if heads is not None:
        hd = np.asarray(heads, float).reshape(-1, 2)
        ok = np.isfinite(hd).all(axis=1)
        px[ok] = hd[ok, 0] + TOWARDS_CENTRE * (cx[ok] - hd[ok, 0])
        py[ok] = hd[ok, 1] + TOWARDS_CENTRE * (cy[ok] - hd[ok, 1])
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    half = np.maximum(PATCH * side, 1.5)
    x0 = np.clip(np.floor(px - half), 0, w).astype(int)
    x1 = np.clip(np.ceil(px + half), 0, w).astype(int)
    y0 = np.clip(np.floor(py - half), 0, h).astype(int)
    y1 = np.clip(np.ceil(py + half), 0, h).astype(int)
    for i in range(n):
        if side[i] < MIN_BOX_PX or (x1[i] - x0[i]) * (y1[i] - y0[i]) < MIN_PIXELS:
            continue
        out[i] = channel_median(image[y0[i]:y1[i], x0[i]:x1[i]])
    ok = np.isfinite(out[:, 0])
    if ok.any():
        out[ok] = bgr_to_lab(out[ok])
    return out


def channel_median(patch: np.ndarray) -> np.ndarray:
    """Median of each channel of an image patch ``(h, w, 3)``, float ``(3,)``: ``np.median``'s value (the mean
    of the two middle values for an even count) from a partial sort, a few times faster on small patches."""
    px = patch.reshape(-1, 3)
    n = len(px)
    k = n // 2
    if n % 2:
        return np.partition(px, k, axis=0)[k].astype(float)
    part = np.partition(px, (k - 1, k), axis=0)
    return (part[k - 1].astype(float) + part[k]) / 2


def bgr_to_lab(bgr: np.ndarray) -> np.ndarray:
    """8-bit BGR colours ``(n, 3)`` (floats allowed) to CIE L*a*b* ``(n, 3)`` (D65; L 0..100)."""
    px = (np.asarray(bgr, np.float32).reshape(1, -1, 3) / 255.0).astype(np.float32)
    return cv2.cvtColor(px, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)


__all__ = ["CAMERA_SD", "bgr_to_lab", "channel_median", "torso_colours"]
