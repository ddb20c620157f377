"""The evidence around shelf events (:mod:`fusion.ops.tap`) and the pictures drawn from it
(:mod:`fusion.ops.images`): windows, decimation and bounds of what is kept, and what the images show."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.db import Database, ops_event_evidence
from fusion.ops import images
from fusion.ops.tap import EvidenceTap, TapSettings, nearest_tracks, prune
from tests.fusion_scene import T0
from tests.helpers_ops import ops_store
from wire.messages import Candidate, Keypoint, LaneDelta, LoadCellMsg, ShelfEventMsg, Track, TracksMsg


def _event(eid: str, t0: float, t1: float, lane: str = "L2", delta: float = -237.0) -> ShelfEventMsg:
    return ShelfEventMsg(
        source="gw",
        seq=int(t1 * 10),
        ts=T0 + t1 + 0.5,
        shelf="S1",
        event_id=eid,
        action="pick",
        t_start=T0 + t0,
        t_end=T0 + t1,
        lanes=[LaneDelta(lane=lane, delta_g=delta)],
        delta_g=delta,
        candidates=[Candidate(sku="P2", qty=1, p=0.9)],
    )


def _tracks(camera: str, t: float, k: int) -> TracksMsg:
    wrist = Keypoint(px=(110.0, 120.0), conf=0.8)
    return TracksMsg(
        source=camera,
        seq=k + 1,
        ts=T0 + t,
        camera=camera,
        frame=k,
        tracks=[
            Track(
                id=3,
                box=(100.0, 80.0, 160.0, 200.0),
                conf=0.9,
                floor=(1.4, 2.6),
                floor_cov=(0.01, 0.0, 0.01),
                rwrist=wrist,
            )
        ],
    )


def _cells(t: float, n: int, rate: float, k: int, level: float = 1000.0) -> LoadCellMsg:
    return LoadCellMsg(
        source="rec",
        seq=k,
        ts=T0 + t,
        shelf="S1",
        rate_hz=rate,
        lanes=["L1", "L2"],
        samples=[[500.0, level]] * n,
    )


def _rows(db: Database) -> list[dict]:
    with db.read() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(sa.select(ops_event_evidence).order_by(ops_event_evidence.c.event_id))
        ]


def test_tap_keeps_the_window_around_each_event(db: Database) -> None:
    tap = EvidenceTap(db, TapSettings(before_s=2.0, after_s=2.0, max_rate_hz=50.0, max_frames=20))
    rate = 200.0
    event = _event("ev1", 4.0, 5.0)
    for k in range(
        100
    ):  # as they arrive: 200 Hz load-cell blocks of 0.1 s (the weight drops at 4.5 s), 10 fps
        t = k * 0.1
        tap.offer(_cells(t, 20, rate, k + 1, level=1000.0 if t < 4.5 else 763.0))
        tap.offer(_tracks("c1", t, k))
        if abs(t - 5.5) < 1e-6:
            assert tap.offer(event) == 0  # not yet: the clock must pass t_end + after_s
        if t < 7.0 - 1e-6:
            assert tap.counters["written"] == 0, t
    assert tap.counters["written"] == 1
    (row,) = _rows(db)
    w = row["weights"]["L2"]
    t = w["t0"] + np.asarray(w["t"])
    assert w["rate_hz"] == 50.0
    assert T0 + 2.0 - 0.01 <= t[0] and t[-1] <= T0 + 7.0 + 0.01
    assert len(w["samples"]) == pytest.approx(5.0 * 50.0, abs=5)
    assert np.all(np.diff(t) > 0)
    assert w["samples"][0] == pytest.approx(1000.0) and w["samples"][-1] == pytest.approx(763.0)
    assert list(row["weights"]) == ["L2"]  # only the event's lanes
    frames = row["tracks"]["c1"]
    assert len(frames) <= 20
    assert T0 + 2.0 - 1e-6 <= frames[0]["ts"] and frames[-1]["ts"] <= T0 + 7.0 + 1e-6
    assert frames[-1]["ts"] >= T0 + 6.9 - 1e-6
    assert frames[0]["tracks"][0]["rwrist"] == [110.0, 120.0, 0.8]
    assert nearest_tracks(row, "c1", T0 + 4.52)["ts"] == pytest.approx(
        min((f["ts"] for f in frames), key=lambda x: abs(x - T0 - 4.52))
    )
    assert nearest_tracks(row, "c9", T0) is None
    # the same event again (a replay) is kept once; old rows go with the retention
    tap.offer(_event("ev1", 4.0, 5.0))
    assert tap.flush() == 0 and tap.counters["duplicates"] == 1
    with db.begin() as conn:
        assert prune(conn, T0 + 5.5) == 1
    assert _rows(db) == []


def test_tap_buffers_are_bounded(sqlite_db: Database) -> None:
    tap = EvidenceTap(sqlite_db, TapSettings(buffer_s=5.0, max_pending=3))
    for k in range(600):
        tap.offer(_tracks("c1", k * 0.1, k))
    buf = tap._tracks["c1"]
    assert len(buf) <= 52 and buf[-1].ts - buf[0].ts <= 5.0
    for i in range(5):
        tap.offer(_event(f"late{i}", 100.0, 101.0))
    assert tap.counters["dropped"] == 2
    assert tap.flush() == 3
    assert all(r["weights"] == {} for r in _rows(sqlite_db))  # no load-cell blocks were published


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 20), st.integers(1, 30)), min_size=1, max_size=12),
    st.floats(0.5, 15),
    st.floats(0.1, 3),
)
def test_weight_windows_are_sorted_and_inside(blocks, start, length) -> None:
    tap = EvidenceTap.__new__(EvidenceTap)  # only the window maths, no database
    tap.settings = TapSettings(before_s=1.0, after_s=1.0, max_rate_hz=1000.0)
    tap._cells = {"S1": [_cells(t, n, 40.0, i) for i, (t, n) in enumerate(sorted(blocks))]}
    out = tap._weights("S1", ["L2", "L9"], T0 + start - 1.0, T0 + start + length + 1.0)
    assert "L9" not in out
    if "L2" in out:
        t = out["L2"]["t0"] + np.asarray(out["L2"]["t"])
        assert np.all(np.diff(t) >= 0)
        assert t[0] >= T0 + start - 1.0 - 1e-3 and t[-1] <= T0 + start + length + 1.0 + 1e-3
        assert len(t) == len(out["L2"]["samples"])


# ------------------------------------------------------------------------------------------------ images
def _decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _count(img: np.ndarray, bgr: tuple[int, int, int], tol: int = 12) -> int:
    return int(np.all(np.abs(img.astype(int) - np.asarray(bgr)) <= tol, axis=2).sum())


def test_floor_plan_shows_the_lane_paths_and_the_chosen_shopper() -> None:
    store = ops_store()
    paths = {
        "s1": [(0.0, 0.5, 0.5), (5.0, 1.45, 2.65), (10.0, 5.5, 0.5)],
        "s2": [(0.0, 3.0, 1.0), (10.0, 3.0, 2.0)],
    }
    plain = _decode(images.floor_plan_png(store, paths))
    marked = _decode(
        images.floor_plan_png(store, paths, lanes=["L4"], moment=5.0, chosen="s1", runner_up="s2")
    )
    assert _count(plain, images.LANE_HI) == 0 and _count(marked, images.LANE_HI) > 200
    assert _count(marked, images.CHOSEN, 30) > _count(plain, images.CHOSEN, 30) + 50
    assert _count(marked, images.PALETTE[0], 20) > 100  # s1's path
    empty = _decode(images.floor_plan_png(store, {}))
    assert empty.shape == plain.shape


def test_weight_trace_and_missing_samples() -> None:
    t = np.arange(0, 6, 0.02)
    level = np.where(t < 2.5, 0.0, -311.0)
    img = _decode(
        images.weight_trace_png(
            {"L4": {"t0": T0, "t": t.tolist(), "samples": (1000 + level).tolist()}},
            T0 + 2.0,
            T0 + 3.0,
            deltas={"L4": -311.0},
            expected=[("1 x P4 = -311 g", -311.0)],
        )
    )
    assert img.shape == (260, 760, 3)
    assert _count(img, images.PALETTE[0], 20) > 300
    assert _count(img, (200, 240, 255), 6) > 1000  # the event's span is shaded
    blank = _decode(images.weight_trace_png({}, T0, T0 + 1))
    assert _count(blank, images.PALETTE[0], 20) == 0


def test_annotated_frame_draws_boxes_and_wrists_scaled() -> None:
    frame = np.full((240, 320, 3), 128, np.uint8)
    _ok, jpeg = cv2.imencode(".jpg", frame)
    tracks = [
        {
            "id": 1,
            "box": [100, 100, 200, 300],
            "floor": [0, 0],
            "head": [150, 120, 0.9],
            "lwrist": [120, 200, 0.9],
            "rwrist": None,
        },
        {"id": 2, "box": [400, 100, 500, 300], "floor": [0, 0], "head": None, "lwrist": None, "rwrist": None},
    ]
    img = _decode(
        images.annotated_frame_jpeg(
            jpeg.tobytes(), tracks, source_size=(640, 480), chosen=1, runner_up=2, caption="c1"
        )
    )
    assert img.shape == frame.shape
    assert _count(img[45:155, 45:105], images.CHOSEN, 40) > 50  # box 1 at half scale
    assert _count(img[45:155, 195:255], images.RUNNER_UP, 40) > 50
    with pytest.raises(ValueError):
        images.annotated_frame_jpeg(b"not a jpeg", tracks)
