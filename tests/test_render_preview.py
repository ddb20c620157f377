"""The contact sheet: a grid of camera frames with their truth drawn on."""

from __future__ import annotations

import numpy as np
import pytest

from sim.preview import HEADER, contact_sheet, draw_truth, id_colour
from sim.render import BodyTruth, Frame, Keypoint


def frame(cid: str, truth: list[BodyTruth], dropped: bool = False, size=(160, 120)) -> Frame:
    w, h = size
    return Frame(cid, 1.5, 15, dropped, truth, np.full((h, w, 3), 90, np.uint8))


def truth(shopper: str, box, head_visible: bool = True) -> BodyTruth:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return BodyTruth(shopper, box, (x0 - 5, y0 - 5, x1 + 5, y1 + 5),
                     Keypoint(cx, y0 + 5, head_visible, "" if head_visible else "body"),
                     Keypoint(x0 + 3, cy, True, ""), Keypoint(x1 - 3, cy, False, "static"),
                     visible_fraction=0.8, visible_px=400)


def test_grid_layout_and_headers():
    frames = {f"cam{i}": frame(f"cam{i}", []) for i in range(3)}
    sheet = contact_sheet(frames)
    tile_h, tile_w = 120 + HEADER, 160
    assert sheet.shape == (2 * tile_h + 4, 2 * tile_w + 4, 3)
    titled = contact_sheet(frames, cols=3, title="busy")
    assert titled.shape[1] == 3 * tile_w + 8 and titled.shape[0] > tile_h
    half = contact_sheet(frames, cols=1, scale=0.5)
    assert half.shape[:2] == (3 * (60 + HEADER) + 8, 80)


def test_truth_is_drawn_in_the_shopper_colour():
    bt = truth("S1", (40.0, 30.0, 100.0, 90.0))
    f = frame("c", [bt])
    out = draw_truth(f.image, f)
    col = np.array(id_colour("S1"))
    assert np.array_equal(out[45, 40], col) and np.array_equal(out[45, 99], col)  # the visible box's sides
    assert np.array_equal(out[10, 10], f.image[10, 10])                          # nothing drawn elsewhere
    # head dot filled (visible), right wrist hollow (hidden): its centre keeps the image
    assert np.array_equal(out[int(bt.head.y), int(bt.head.x)], col)
    assert np.array_equal(out[int(bt.rwrist.y), int(bt.rwrist.x)], f.image[0, 0])


def test_dropped_frames_are_marked_and_empty_input_rejected():
    ok = contact_sheet({"a": frame("a", [])})
    dropped = contact_sheet({"a": frame("a", [], dropped=True)})
    assert not np.array_equal(ok, dropped)
    assert np.any(dropped[:HEADER, :, 2] > 200)  # red DROPPED in the header
    with pytest.raises(ValueError):
        contact_sheet({})
