"""Contact sheet: every camera's frame in a grid with its ground truth drawn on it, so a person can see what
the cameras see and check the truth at a glance.

Per shopper (one colour per id): the visible box (thick), the full box (thin; it may pass the image edge),
the id and visible fraction, the head (circle), left wrist (square) and right wrist (diamond), each filled
when visible and hollow when hidden (by a shelf or another shopper) or off the image.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import cv2
import numpy as np

from sim.render import Frame

FONT = cv2.FONT_HERSHEY_SIMPLEX
HEADER = 22


PALETTE = ((0, 220, 255), (255, 170, 0), (80, 255, 80), (255, 80, 255), (0, 140, 255), (255, 255, 60),
           (60, 60, 255), (200, 120, 255), (255, 255, 255), (120, 255, 200), (0, 90, 200), (190, 190, 60))


def id_colour(shopper: str) -> tuple[int, int, int]:
    """A bright BGR colour from a fixed palette, stable for a shopper id."""
    return PALETTE[hashlib.sha256(shopper.encode()).digest()[0] % len(PALETTE)]


def _mark(img: np.ndarray, x: float, y: float, shape: str, colour, filled: bool, s: int) -> None:
    c = (round(x), round(y))
    if shape == "circle":
        if filled:
            cv2.circle(img, c, s, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(img, c, s - 1, colour, -1, cv2.LINE_AA)
        else:
            cv2.circle(img, c, s, colour, 1, cv2.LINE_AA)
        return
    if shape == "square":
        pts = np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    else:  # diamond
        pts = np.array([[0, -s - 1], [s + 1, 0], [0, s + 1], [-s - 1, 0]])
    poly = (pts + np.array(c)).astype(np.int32)
    if filled:
        cv2.fillConvexPoly(img, poly, colour, cv2.LINE_AA)
        cv2.polylines(img, [poly], True, (0, 0, 0), 1, cv2.LINE_AA)
    else:
        cv2.polylines(img, [poly], True, colour, 1, cv2.LINE_AA)


def draw_truth(image: np.ndarray, frame: Frame, scale: float = 1.0, full_boxes: bool = True) -> np.ndarray:
    """``image`` (the frame's image, already scaled by ``scale``) with the frame's truth drawn on it."""
    img = image.copy()
    H, W = img.shape[:2]
    s = max(2, round(3 * max(scale, 0.7)))
    for bt in frame.truth:
        col = id_colour(bt.shopper)
        if full_boxes:
            fx0, fy0, fx1, fy1 = (v * scale for v in bt.full_box)
            dim = tuple(int(v * 0.6) for v in col)
            cv2.rectangle(img, (int(fx0), int(fy0)), (math.ceil(fx1) - 1, math.ceil(fy1) - 1), dim, 1)
        x0, y0, x1, y1 = (v * scale for v in bt.box)
        cv2.rectangle(img, (int(x0), int(y0)), (math.ceil(x1) - 1, math.ceil(y1) - 1), col, 2)
        label = f"{bt.shopper} {bt.visible_fraction:.0%}"
        (tw, th), _ = cv2.getTextSize(label, FONT, 0.38, 1)
        ly = int(y0) - 3 if y0 - th - 4 >= 0 else min(int(y1) + th + 3, H - 2)
        lx = min(max(int(x0), 0), max(W - tw - 2, 0))
        cv2.rectangle(img, (lx, ly - th - 2), (lx + tw + 2, ly + 2), (0, 0, 0), -1)
        cv2.putText(img, label, (lx + 1, ly), FONT, 0.38, col, 1, cv2.LINE_AA)
        for kp, shape in ((bt.head, "circle"), (bt.lwrist, "square"), (bt.rwrist, "diamond")):
            if kp.occluder == "outside":
                continue
            _mark(img, kp.x * scale, kp.y * scale, shape, col, kp.visible, s)
    return img


def contact_sheet(frames: Mapping[str, Frame], cols: int | None = None, scale: float = 1.0,
                  title: str | None = None, full_boxes: bool = True) -> np.ndarray:
    """A grid (BGR uint8) of every frame with its truth, each under a header naming the camera, the frame
    index and time, the shoppers seen, and DROPPED where the camera dropped the frame."""
    if not frames:
        raise ValueError("contact_sheet: no frames")
    ids = list(frames)
    n = len(ids)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = []
    for cid in ids:
        f = frames[cid]
        img = f.image
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        img = draw_truth(img, f, scale, full_boxes)
        head = np.full((HEADER, img.shape[1], 3), 32, np.uint8)
        text = f"{cid}  #{f.index}  t={f.t:.1f}s  shoppers={len(f.truth)}"
        cv2.putText(head, text, (5, HEADER - 7), FONT, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
        if f.dropped:
            cv2.putText(head, "DROPPED", (img.shape[1] - 80, HEADER - 7), FONT, 0.45, (60, 60, 255), 1,
                        cv2.LINE_AA)
            cv2.line(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), (60, 60, 255), 2)
        tiles.append(np.vstack([head, img]))
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    gap = 4
    sheet_h = rows * th + (rows - 1) * gap
    top = 0
    if title:
        top = HEADER + 6
    sheet = np.full((top + sheet_h, cols * tw + (cols - 1) * gap, 3), 16, np.uint8)
    if title:
        cv2.putText(sheet, title, (6, HEADER - 2), FONT, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = top + r * (th + gap), c * (tw + gap)
        sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return sheet


__all__ = ["contact_sheet", "draw_truth", "id_colour"]
