"""Clothing colour of each tracked person: a cue that tells two people apart where their positions do not.

Where two shoppers pass close to each other, where one camera's tracker swaps their ids, or where a camera
picks a shopper up again after a gap, position alone cannot say who is who.  The colour of the upper body (the
shirt, seen from the ceiling) usually can.  No face, no identity beyond the visit: three numbers per track.

:func:`torso_colours` takes the frame, the tracks' boxes and head keypoints and returns, per box, the median
colour of a small patch on the chest in CIE L*a*b* (L 0..100, a and b about -128..127).  The median resists
the background and a neighbour's pixels that fall in the patch.  Boxes too small or outside the image give NaN
(no colour published).  :func:`leg_colours` does the same for a patch on the thighs, found the same way
(beyond the box centre, away from the head), and only where the camera sees the person lengthwise: from
straight above, the legs are hidden under the head and shoulders.  It is measured (``python -m
bench.appearance --part legs``), not published: as a second cue in the trackers it lost more than it won
(docs/fusion_tuning.md, session 31).

Exposure and white balance change the lightness much more than the hue, so fusion compares the chroma
(a*, b*) with a tighter spread than L* (``fusion.config.FloorConfig.colour_sd``).
"""

from __future__ import annotations

import cv2
import numpy as np

# where the torso is: this far from the head keypoint towards the box centre (no head: this far down the box)
TOWARDS_CENTRE = 0.5
NO_HEAD_Y = 0.4
# where the thighs are: this far from the head keypoint along the way to the box centre (beyond it: 1 is the
# centre, the hips of an upright person; no head: this far down the box)
LEGS_ALONG = 1.3
NO_HEAD_LEGS_Y = 0.65
# legs are measured only where the head is at least this far from the box centre, as a share of the box's
# longer side (the person lies lengthwise in the image; seen from above the centre is the head itself)
LEGS_MIN_SPAN = 0.25
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
    return _patch_colours(image, boxes, heads, TOWARDS_CENTRE, NO_HEAD_Y, 0.0)


def leg_colours(image: np.ndarray, boxes: np.ndarray, heads: np.ndarray | None = None) -> np.ndarray:
    """Median L*a*b* colour of each box's thigh patch, ``(n, 3)`` float; NaN rows where not measurable.

    As :func:`torso_colours`, with the patch ``LEGS_ALONG`` of the way from the head to the box centre (past
    the centre, away from the head); NaN where the head is nearer the box centre than ``LEGS_MIN_SPAN`` of the
    box's longer side (a person seen from above: the patch would show the shoulders)."""
    return _patch_colours(image, boxes, heads, LEGS_ALONG, NO_HEAD_LEGS_Y, LEGS_MIN_SPAN)


def _patch_colours(image: np.ndarray, boxes: np.ndarray, heads: np.ndarray | None, along: float,
                   no_head_y: float, min_span: float) -> np.ndarray:
    """Median L*a*b* colour of a square patch per box, centred ``along`` of the way from the head keypoint to
    the box centre (no head: ``no_head_y`` down the box); with ``min_span`` > 0 only where the head is at least
    that share of the box's longer side from its centre."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    n = len(boxes)
    out = np.full((n, 3), np.nan)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or not n:
        return out
    h, w = image.shape[:2]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    px, py = cx.copy(), boxes[:, 1] + no_head_y * (boxes[:, 3] - boxes[:, 1])
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    usable = side >= MIN_BOX_PX
    if heads is not None:
        hd = np.asarray(heads, float).reshape(-1, 2)
        ok = np.isfinite(hd).all(axis=1)
        px[ok] = hd[ok, 0] + along * (cx[ok] - hd[ok, 0])
        py[ok] = hd[ok, 1] + along * (cy[ok] - hd[ok, 1])
        if min_span > 0:
            span = np.hypot(cx - hd[:, 0], cy - hd[:, 1])
            usable &= ~ok | (span >= min_span * side)
    half = np.maximum(PATCH * side, 1.5)
    x0 = np.clip(np.floor(px - half), 0, w).astype(int)
    x1 = np.clip(np.ceil(px + half), 0, w).astype(int)
    y0 = np.clip(np.floor(py - half), 0, h).astype(int)
    y1 = np.clip(np.ceil(py + half), 0, h).astype(int)
    for i in range(n):
        if not usable[i] or (x1[i] - x0[i]) * (y1[i] - y0[i]) < MIN_PIXELS:
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


__all__ = ["CAMERA_SD", "bgr_to_lab", "channel_median", "leg_colours", "torso_colours"]
