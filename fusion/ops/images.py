"""The pictures of the visit page, drawn server-side with OpenCV: the floor plan with the shoppers'
trajectories and the event's lanes, the lanes' weight trace around an event, and a camera frame with the
tracked people's boxes, heads and wrists.  Every function returns encoded image bytes (PNG or JPEG).

Only geometry is drawn: boxes and points come from the trackers' messages, nothing looks at faces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from calibration.store import Store

log = logging.getLogger(__name__)

FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR
INK = (40, 40, 40)
GRID = (225, 225, 225)
FLOOR = (248, 248, 246)
LANE = (196, 180, 160)
LANE_HI = (0, 140, 255)
GATE = (90, 170, 60)
EXIT = (60, 60, 200)
PALETTE = [
    (200, 110, 30),
    (40, 160, 40),
    (160, 60, 170),
    (30, 110, 210),
    (150, 150, 20),
    (120, 80, 40),
    (90, 90, 220),
    (20, 150, 150),
]
CHOSEN = (40, 200, 40)
RUNNER_UP = (0, 150, 255)
OTHER = (200, 150, 60)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - encoding a uint8 BGR image does not fail
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _text(
    img: np.ndarray,
    s: str,
    org: tuple[int, int],
    scale: float = 0.45,
    color=INK,
    thick: int = 1,
    bg: tuple[int, int, int] | None = None,
) -> None:
    if bg is not None:
        (w, h), base = cv2.getTextSize(s, FONT, scale, thick)
        x, y = org
        cv2.rectangle(img, (x - 2, y - h - 3), (x + w + 2, y + base), bg, -1)
    cv2.putText(img, s, org, FONT, scale, color, thick, cv2.LINE_AA)


# ------------------------------------------------------------------------------------------------ floor plan
def floor_plan_png(
    store: Store,
    paths: Mapping[str, Sequence[tuple[float, float, float]]],
    *,
    lanes: Sequence[str] = (),
    moment: float | None = None,
    chosen: str | None = None,
    runner_up: str | None = None,
    width_px: int = 760,
) -> bytes:
    """The store seen from above: lanes (``lanes`` highlighted), gates, exits and each shopper's path
    ``{name: [(t, x, y), ...]}``; with ``moment``, every shopper's position at that event time (``chosen`` and
    ``runner_up`` ringed)."""
    sx, sy = (float(v) for v in store.store.size)
    margin = 34
    scale = (width_px - 2 * margin) / max(sx, 1e-6)
    h = round(sy * scale) + 2 * margin + 22
    img = np.full((h, width_px, 3), 255, np.uint8)

    def px(x: float, y: float) -> tuple[int, int]:
        return round(margin + x * scale), round(margin + 22 + (sy - y) * scale)

    cv2.rectangle(img, px(0, sy), px(sx, 0), FLOOR, -1)
    for gx in range(int(sx) + 1):
        cv2.line(img, px(gx, 0), px(gx, sy), GRID, 1)
        _text(img, f"{gx}", (px(gx, 0)[0] - 4, px(gx, 0)[1] + 14), 0.35, (130, 130, 130))
    for gy in range(int(sy) + 1):
        cv2.line(img, px(0, gy), px(sx, gy), GRID, 1)
        _text(img, f"{gy}", (px(0, gy)[0] - 18, px(0, gy)[1] + 4), 0.35, (130, 130, 130))
    cv2.rectangle(img, px(0, sy), px(sx, 0), (150, 150, 150), 1)
    for name, items, color in (("gate", store.gates, GATE), ("exit", store.exits, EXIT)):
        for it in items:
            (x0, y0), (x1, y1) = it.region.min, it.region.max
            over = img.copy()
            cv2.rectangle(over, px(x0, y1), px(x1, y0), color, -1)
            cv2.addWeighted(over, 0.25, img, 0.75, 0, img)
            cv2.rectangle(img, px(x0, y1), px(x1, y0), color, 1)
            _text(img, f"{name} {it.id}", (px(x0, y1)[0] + 3, px(x0, y1)[1] + 14), 0.4, color)
    highlight = set(lanes)
    for _unit, _shelf, ln in store.iter_lanes():
        foot = ln.box.corners()[::2, :2][[0, 1, 3, 2]]
        poly = np.array([px(x, y) for x, y in foot], np.int32)
        hi = ln.id in highlight
        cv2.fillPoly(img, [poly], LANE_HI if hi else LANE)
        cv2.polylines(img, [poly], True, (90, 90, 90), 1, cv2.LINE_AA)
        if hi or scale * float(ln.box.half_size[0]) * 2 > 22:
            c = px(*ln.box.center[:2])
            _text(img, ln.id, (c[0] - 8, c[1] + 4), 0.33, (255, 255, 255) if hi else INK)
    legend_x = margin
    for i, (name, pts) in enumerate(sorted(paths.items())):
        color = PALETTE[i % len(PALETTE)]
        arr = np.asarray(pts, float).reshape(-1, 3)
        if len(arr):
            poly = np.array([px(x, y) for _, x, y in arr], np.int32)
            cv2.polylines(img, [poly], False, color, 2, cv2.LINE_AA)
            cv2.circle(img, tuple(poly[0]), 4, color, -1, cv2.LINE_AA)
            if len(poly) > 1:
                seg = float(np.hypot(*(poly[-1] - poly[-2])))
                if seg > 1:
                    cv2.arrowedLine(
                        img,
                        tuple(poly[-2]),
                        tuple(poly[-1]),
                        color,
                        2,
                        cv2.LINE_AA,
                        tipLength=min(0.9, 12.0 / seg),
                    )
            if moment is not None and arr[0, 0] - 1.0 <= moment <= arr[-1, 0] + 1.0:
                mx = float(np.interp(moment, arr[:, 0], arr[:, 1]))
                my = float(np.interp(moment, arr[:, 0], arr[:, 2]))
                p = px(mx, my)
                cv2.circle(img, p, 7, color, -1, cv2.LINE_AA)
                short = name.split("/")[-1]
                if short == chosen:
                    cv2.circle(img, p, 12, CHOSEN, 3, cv2.LINE_AA)
                elif short == runner_up:
                    cv2.circle(img, p, 12, RUNNER_UP, 2, cv2.LINE_AA)
        label = name.split("/")[-1] if "/" not in name or len(paths) < 4 else name
        _text(img, label, (legend_x, 16), 0.42, color, 1)
        legend_x += 12 + cv2.getTextSize(label, FONT, 0.42, 1)[0][0]
    if not paths:
        _text(img, "no trajectory recorded for this visit", (margin, 16), 0.42, (90, 90, 90))
    return _png(img)


# ------------------------------------------------------------------------------------------------ weights
def weight_trace_png(
    weights: Mapping[str, Mapping[str, Any]],
    t_start: float,
    t_end: float,
    *,
    deltas: Mapping[str, float] | None = None,
    expected: Sequence[tuple[str, float]] = (),
    size: tuple[int, int] = (760, 260),
) -> bytes:
    """The lanes' weight (grams, relative to their level before the event) against time around an event
    ([t_start, t_end] shaded).  ``weights``: ``{lane: {t0, t (seconds from t0), samples}}``; ``expected``:
    ``(label, grams)`` levels drawn dashed (what the shelf's candidates would weigh)."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 62, 16, 26, 34
    series = []
    for lane, s in sorted(weights.items()):
        t = float(s["t0"]) + np.asarray(s["t"], float)
        v = np.asarray(s["samples"], float)
        if len(v) == 0:
            continue
        pre = v[t < t_start]
        base = float(np.median(pre)) if len(pre) else float(v[0])
        series.append((lane, t - t_start, v - base))
    if not series:
        _text(img, "no weight samples recorded for this event", (left, h // 2), 0.5, (90, 90, 90))
        return _png(img)
    x0 = min(float(s[1][0]) for s in series)
    x1 = max(float(s[1][-1]) for s in series)
    lo = min([float(s[2].min()) for s in series] + [g for _, g in expected])
    hi = max([float(s[2].max()) for s in series] + [g for _, g in expected])
    pad = max(5.0, 0.1 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    x1 = max(x1, x0 + 1e-3)

    def px(x: float, y: float) -> tuple[int, int]:
        u = left + (x - x0) / (x1 - x0) * (w - left - right)
        v = top + (hi - y) / (hi - lo) * (h - top - bottom)
        return round(u), round(v)

    a, b = px(0.0, hi), px(t_end - t_start, lo)
    cv2.rectangle(img, (max(a[0], left), top), (min(b[0], w - right), h - bottom), (200, 240, 255), -1)
    for k in np.arange(np.ceil(x0), np.floor(x1) + 1):
        u = px(float(k), lo)[0]
        cv2.line(img, (u, top), (u, h - bottom), GRID, 1)
        _text(img, f"{k:+.0f}s" if k else "0", (u - 10, h - bottom + 16), 0.38, (110, 110, 110))
    step = _nice_step((hi - lo) / 4)
    for g in np.arange(np.ceil(lo / step) * step, hi, step):
        v = px(x0, float(g))[1]
        cv2.line(img, (left, v), (w - right, v), GRID, 1)
        _text(img, f"{g:.0f} g", (4, v + 4), 0.38, (110, 110, 110))
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (160, 160, 160), 1)
    for label, g in expected:
        v = px(x0, g)[1]
        for u in range(left, w - right, 12):
            cv2.line(img, (u, v), (min(u + 6, w - right), v), (90, 90, 90), 1, cv2.LINE_AA)
        _text(
            img, label, (w - right - 8 - cv2.getTextSize(label, FONT, 0.4, 1)[0][0], v - 5), 0.4, (70, 70, 70)
        )
    legend = []
    for i, (lane, t, v) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = np.array([px(float(a_), float(b_)) for a_, b_ in zip(t, v, strict=True)], np.int32)
        cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
        d = (deltas or {}).get(lane)
        legend.append((f"{lane}" + (f" (event {d:+.0f} g)" if d is not None else ""), color))
    x = left
    for s, color in legend:
        _text(img, s, (x, 17), 0.45, color, 1)
        x += 16 + cv2.getTextSize(s, FONT, 0.45, 1)[0][0]
    return _png(img)


def _nice_step(x: float) -> float:
    if x <= 0:
        return 1.0
    e = 10 ** np.floor(np.log10(x))
    for m in (1, 2, 5, 10):
        if m * e >= x:
            return float(m * e)
    return float(10 * e)


# ------------------------------------------------------------------------------------------------ frames
def annotated_frame_jpeg(
    jpeg: bytes,
    tracks: Sequence[Mapping[str, Any]],
    *,
    source_size: tuple[int, int] | None = None,
    chosen: int | None = None,
    runner_up: int | None = None,
    caption: str = "",
    quality: int = 88,
) -> bytes:
    """A stored evidence frame with each track's box, head and wrists drawn (``chosen``: the track of the
    shopper the line was given to, green; ``runner_up``: orange).  ``source_size``: the camera's image size
    the track pixels refer to, when the stored frame was downscaled."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("the evidence frame is not a readable JPEG")
    fh, fw = img.shape[:2]
    k = fw / float(source_size[0]) if source_size else 1.0

    def p(xy: Sequence[float]) -> tuple[int, int]:
        return round(float(xy[0]) * k), round(float(xy[1]) * k)

    for t in tracks:
        tid = int(t["id"])
        color = CHOSEN if tid == chosen else RUNNER_UP if tid == runner_up else OTHER
        thick = 3 if tid in (chosen, runner_up) else 1
        x1, y1, x2, y2 = t["box"]
        cv2.rectangle(img, p((x1, y1)), p((x2, y2)), color, thick, cv2.LINE_AA)
        label = f"#{tid}" + (" took it" if tid == chosen else " runner-up" if tid == runner_up else "")
        _text(img, label, (p((x1, y1))[0], max(12, p((x1, y1))[1] - 4)), 0.45, (255, 255, 255), 1, bg=color)
        if t.get("head"):
            cv2.drawMarker(img, p(t["head"][:2]), color, cv2.MARKER_CROSS, 10, 2, cv2.LINE_AA)
        for side, wc in (("lwrist", (255, 255, 0)), ("rwrist", (255, 0, 255))):
            kp = t.get(side)
            if kp and kp[2] > 0.2:
                c = p(kp[:2])
                cv2.circle(img, c, 6, wc, 2, cv2.LINE_AA)
                cv2.circle(img, c, 2, wc, -1, cv2.LINE_AA)
    if caption:
        _text(img, caption, (6, fh - 8), 0.45, (255, 255, 255), 1, bg=(40, 40, 40))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def placeholder_png(text: str, size: tuple[int, int] = (480, 120)) -> bytes:
    img = np.full((size[1], size[0], 3), 245, np.uint8)
    _text(img, text[:70], (12, size[1] // 2), 0.5, (90, 90, 90))
    return _png(img)
