"""Evidence frames: stored by camera and time, read back by range and nearest, gone after retention."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.evidence import DAY_S, EvidenceRecorder, EvidenceStore

T0 = 1767225600.0  # 2026-01-01 00:00:00 UTC


def frame(i: int, w: int = 320, h: int = 240) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (10 * (i % 20), 100, 200)
    return img


def test_put_frames_nearest(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    times = [T0 + 0.5 * k for k in range(10)] + [T0 + 3599.7, T0 + 3600.2, T0 + DAY_S - 0.1]
    for k, t in enumerate(times):
        store.put("cam1", t, frame(k))
    store.put("cam2", T0 + 1.0, frame(0))

    got = store.frames("cam1", T0 + 1.0, T0 + 3.0)
    assert [f.ts for f in got] == pytest.approx([T0 + 1.0, T0 + 1.5, T0 + 2.0, T0 + 2.5, T0 + 3.0])
    across_hour = store.frames("cam1", T0 + 3599.0, T0 + 3601.0)
    assert [f.ts for f in across_hour] == pytest.approx([T0 + 3599.7, T0 + 3600.2])
    late = store.frames("cam1", T0 + 4000, T0 + 2 * DAY_S)
    assert [f.ts for f in late] == pytest.approx([T0 + DAY_S - 0.1])
    assert store.frames("cam1", T0 + 5, T0 + 1) == []
    assert store.frames("nocam", T0, T0 + 10) == []

    assert store.nearest("cam1", T0 + 1.2).ts == pytest.approx(T0 + 1.0)
    assert store.nearest("cam1", T0 + 1.3).ts == pytest.approx(T0 + 1.5)
    assert store.nearest("cam1", T0 + 3000.0).ts == pytest.approx(T0 + 3599.7)  # found by widening the window
    assert store.nearest("cam1", T0 + 3000.0, max_dt=60.0) is None
    assert store.nearest("cam2", T0 - 10).camera == "cam2"
    assert store.cameras() == ["cam1", "cam2"]

    img = cv2.imdecode(np.frombuffer(got[0].read(), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)
    assert abs(int(img[..., 1].mean()) - 100) <= 2


def test_frames_are_whole_and_downscaled(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, max_width=160)
    path = store.put("cam1", T0, frame(1, 640, 480))
    img = cv2.imread(str(path))
    assert img.shape == (120, 160, 3)  # the whole frame, aspect kept


@pytest.mark.parametrize("camera, ts, reason", [
    ("../etc", T0, "cannot name a folder"),
    ("cam 1", T0, "cannot name a folder"),
    ("cam1", float("nan"), "not seconds since the epoch"),
    ("cam1", -1.0, "not seconds since the epoch"),
])
def test_bad_input_is_refused(tmp_path: Path, camera: str, ts: float, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        EvidenceStore(tmp_path).put(camera, ts, frame(0))


@pytest.mark.parametrize("retention_days", [1.0, 7.0, 0.25])
def test_purge_removes_everything_past_retention(tmp_path: Path, retention_days: float) -> None:
    store = EvidenceStore(tmp_path, retention_s=retention_days * DAY_S)
    # one frame every 40 minutes over 10 days, two cameras
    times = T0 + np.arange(0, 10 * DAY_S, 2400.0)
    for t in times:
        for cam in ("cam1", "cam2"):
            store.put_jpeg(cam, float(t), b"\xff\xd8jpeg\xff\xd9")
    now = T0 + 10 * DAY_S
    cutoff = now - retention_days * DAY_S
    removed = store.purge(now)
    assert removed == 2 * int((times < cutoff).sum())
    for cam in ("cam1", "cam2"):
        left = store.frames(cam, 0, 1e10 - 1)
        assert [f.ts for f in left] == pytest.approx([float(t) for t in times if t >= cutoff])
    files = list(tmp_path.rglob("*.jpg"))
    assert len(files) == 2 * int((times >= cutoff).sum())
    # no empty day or hour folders are left behind
    assert all(any(d.iterdir()) for d in tmp_path.rglob("*") if d.is_dir())
    assert store.purge(now) == 0
    # later, everything goes
    assert store.purge(now + retention_days * DAY_S + 1) == len(files)
    assert list(tmp_path.rglob("*.jpg")) == []


def test_recorder_keeps_low_rate_frames_and_purges_at_start(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, retention_s=7 * DAY_S)
    old = store.put_jpeg("cam1", T0 - 8 * DAY_S, b"\xff\xd8old\xff\xd9")
    now = [T0 + 100.0]
    rec = EvidenceRecorder(store, fps=2.0, clock=lambda: now[0])
    taken = [rec.offer("cam1", T0 + k / 10, frame(k)) for k in range(30)]  # 3 s at 10 fps
    taken += [rec.offer("cam2", T0 + k / 10, frame(k)) for k in range(10)]
    expired = rec.offer("cam3", T0 - 8 * DAY_S, frame(0))
    rec.close()
    assert sum(taken[:30]) == 6 and sum(taken[30:]) == 2  # 2 fps of 10
    kept = store.frames("cam1", T0, T0 + 10)
    assert [f.ts for f in kept] == pytest.approx([T0 + 0.5 * k for k in range(6)])
    assert not old.exists()
    assert expired and store.frames("cam3", 0, 1e10 - 1) == []
    assert rec.counters["stored"] == 8 and rec.counters["purged"] == 1
    assert rec.counters["skipped_expired"] == 1 and rec.counters["skipped_rate"] == 32


def test_recorder_capture_clock_for_replays(tmp_path: Path) -> None:
    """A replay of an old recording keeps its frames when retention runs on the capture clock."""
    store = EvidenceStore(tmp_path, retention_s=DAY_S)
    later = EvidenceRecorder(store, fps=1.0, clock=lambda: T0 + 30 * DAY_S)  # a wall clock a month on
    replay = EvidenceRecorder(store, fps=1.0)
    replay.clock = replay.capture_clock
    for k in range(5):
        later.offer("cam1", T0 + k, frame(k))
        replay.offer("cam2", T0 + k, frame(k))
    later.close()
    replay.close()
    assert later.counters["skipped_expired"] == 5 and store.frames("cam1", T0, T0 + 10) == []
    assert replay.counters["stored"] == 5 and len(store.frames("cam2", T0, T0 + 10)) == 5


def test_recorder_never_blocks_when_the_disk_is_slow(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    slow_put = store.put

    def put(camera, ts, image):
        time.sleep(0.05)
        return slow_put(camera, ts, image)

    store.put = put  # type: ignore[method-assign]
    rec = EvidenceRecorder(store, fps=100.0, queue_size=2, clock=lambda: T0)
    for k in range(50):
        rec.offer("cam1", T0 + k, frame(k))
    rec.close()
    # frames the writer could not keep up with were dropped and counted, not queued without bound
    assert rec.counters["skipped_busy"] > 0
    assert rec.counters["stored"] + rec.counters["skipped_busy"] == 50


@settings(max_examples=40, deadline=None)
@given(offsets=st.lists(st.floats(0, 20 * DAY_S, allow_nan=False), min_size=1, max_size=30, unique=True),
       retention_days=st.floats(0.01, 15), now_days=st.floats(0, 25))
def test_purge_keeps_exactly_the_frames_within_retention(tmp_path_factory, offsets, retention_days,
                                                         now_days) -> None:
    store = EvidenceStore(tmp_path_factory.mktemp("ev"), retention_s=retention_days * DAY_S)
    times = sorted({round(T0 + o, 6) for o in offsets})
    for t in times:
        store.put_jpeg("cam1", t, b"\xff\xd8x\xff\xd9")
    now = T0 + now_days * DAY_S
    cutoff = now - retention_days * DAY_S
    removed = store.purge(now)
    kept = [f.ts for f in store.frames("cam1", 0, 1e10 - 1)]
    expect = [t for t in times if round(t * 1e6) / 1e6 >= cutoff]
    assert kept == pytest.approx(expect, abs=1e-6)
    assert removed == len(times) - len(expect)
