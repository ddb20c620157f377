"""Frame sources: video files, image folders, streams that fail and come back, session MCAPs; bad input is
counted, never a crash."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcap.writer import Writer

from edge.sources import (
    ImageFolderSource,
    LatestFrame,
    McapSource,
    SourceError,
    SourceFrame,
    StreamSource,
    VideoFileSource,
    _decode_compressed_image,
    frame_batches,
    grouped,
    merged,
    natural_key,
    open_sources,
    read_sidecar,
    redact_url,
    source_kind,
)


def pattern(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    """A frame whose grey level encodes ``i`` (survives JPEG)."""
    img = np.full((h, w, 3), 20 + 10 * (i % 20), np.uint8)
    img[:, : w // 4, 0] = 200
    return img


def level(img: np.ndarray) -> int:
    """The ``i`` of :func:`pattern` read back."""
    return round((float(img[:, 32:, 1].mean()) - 20) / 10)


# ---------------------------------------------------------------------------------------------- video file
def test_video_file_frames_and_times(tmp_path: Path) -> None:
    path = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    assert writer.isOpened()
    for i in range(12):
        writer.write(pattern(i))
    writer.release()

    src = VideoFileSource(path, "cam1", start=1000.0)
    frames = list(src)
    assert src.fps == pytest.approx(5.0)
    assert [f.index for f in frames] == list(range(12))
    assert [f.ts for f in frames] == pytest.approx([1000.0 + i / 5 for i in range(12)])
    assert [level(f.image) for f in frames] == list(range(12))
    assert all(f.camera == "cam1" and f.image.shape == (48, 64, 3) for f in frames)
    assert src.stats.as_dict() == {"frames": 12, "dropped": 0, "errors": 0, "reconnects": 0}


def test_video_file_fps_override_and_close(tmp_path: Path) -> None:
    path = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(6):
        writer.write(pattern(i))
    writer.release()
    src = VideoFileSource(path, "cam1", fps=20.0, start=0.0)
    got = []
    for f in src:
        got.append(f)
        if len(got) == 3:
            src.close()
    assert len(got) == 3
    assert got[2].ts == pytest.approx(0.1)


@pytest.mark.parametrize("make, reason", [
    (lambda d: d / "missing.avi", "not found"),
    (lambda d: (d / "text.avi").write_text("not a video") and d / "text.avi", "cannot open"),
])
def test_video_file_bad_input_is_a_clear_error(tmp_path: Path, make, reason: str) -> None:
    with pytest.raises(SourceError, match=reason):
        VideoFileSource(make(tmp_path), "cam1")


# ---------------------------------------------------------------------------------------------- image folder
def _write_folder(folder: Path, corrupt: set[int], n: int = 6) -> list[str]:
    folder.mkdir()
    names = []
    for i in range(n):
        name = f"img{i * 5}.jpg"  # img0, img5, img10 ...: natural order differs from string order
        if i in corrupt:
            (folder / name).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" + bytes(range(40)))
        else:
            cv2.imwrite(str(folder / name), pattern(i))
        names.append(name)
    return names


def test_image_folder_with_sidecar_and_a_corrupt_file(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    names = _write_folder(folder, corrupt={3})
    (folder / "timestamps.csv").write_text("name,ts\n" + "".join(f"{n},{2000 + 0.25 * i}\n"
                                                                 for i, n in enumerate(names)))
    (folder / "notes.txt").write_text("not an image, ignored")
    src = ImageFolderSource(folder, "cam2")
    frames = list(src)
    assert [f.index for f in frames] == list(range(6))
    assert [f.ts for f in frames] == pytest.approx([2000 + 0.25 * i for i in range(6)])
    assert frames[3].image is None
    assert [level(f.image) for f in frames if f.image is not None] == [0, 1, 2, 4, 5]
    assert src.stats.as_dict() == {"frames": 5, "dropped": 1, "errors": 1, "reconnects": 0}


def test_image_folder_without_sidecar_uses_fps(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    _write_folder(folder, corrupt=set(), n=3)
    frames = list(ImageFolderSource(folder, "cam2", fps=4.0, start=10.0))
    assert [f.ts for f in frames] == pytest.approx([10.0, 10.25, 10.5])


@pytest.mark.parametrize("sidecar, reason", [
    ("img0.jpg,1.0\n", "no timestamp for 2 images"),
    ("img0.jpg,1.0\nimg5.jpg,abc\nimg10.jpg,3\n", "line 2: ts 'abc' is not a number"),
    ("img0.jpg,1.0\nimg5.jpg,2.0,9\nimg10.jpg,3\n", "line 2: expected 'name,ts'"),
    ("img0.jpg,-5\nimg5.jpg,2\nimg10.jpg,3\n", "not seconds since the epoch"),
])
def test_image_folder_bad_sidecar(tmp_path: Path, sidecar: str, reason: str) -> None:
    folder = tmp_path / "imgs"
    _write_folder(folder, corrupt=set(), n=3)
    (folder / "timestamps.csv").write_text(sidecar)
    with pytest.raises(SourceError, match=reason):
        ImageFolderSource(folder, "cam2")


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource(tmp_path, "cam2")


def test_natural_order() -> None:
    assert sorted(["f10.jpg", "f2.jpg", "f1.jpg"], key=natural_key) == ["f1.jpg", "f2.jpg", "f10.jpg"]


# ---------------------------------------------------------------------------------------------- streams
class FakeCapture:
    """A capture that plays a script: ``"frame"``, ``"fail"`` (read returns False), ``"raise"``,
    ``"garbage"`` (not an image); then fails."""

    def __init__(self, script: list[str], opened: bool = True):
        self.script = list(script)
        self.opened = opened
        self.released = False
        self.n = 0

    def isOpened(self) -> bool:
        return self.opened

    def get(self, prop: int) -> float:
        return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        step = self.script.pop(0) if self.script else "fail"
        if step == "raise":
            raise ConnectionResetError("stream reset")
        if step == "garbage":
            return True, np.zeros((4, 4), np.float32)
        if step == "fail":
            return False, None
        self.n += 1
        return True, pattern(self.n)

    def release(self) -> None:
        self.released = True


class Opener:
    """Hands out the scripted captures in turn; an exception in the list is raised by the open."""

    def __init__(self, plan: list):
        self.plan = list(plan)
        self.opened: list[FakeCapture] = []

    def __call__(self, url: str):
        item = self.plan.pop(0) if self.plan else FakeCapture([], opened=False)
        if isinstance(item, Exception):
            raise item
        self.opened.append(item)
        return item


def test_stream_reconnects_and_counts_dropped_frames() -> None:
    first = FakeCapture(["frame"] * 5)  # then dies: every read fails
    second = FakeCapture(["frame", "raise", "frame", "garbage", "frame"])
    opener = Opener([first, ConnectionRefusedError("refused"), FakeCapture([], opened=False), second])
    src = StreamSource("rtsp://user:secret@cam.local/stream", "cam3", opener=opener, backoff=(0.01, 0.02),
                       max_read_failures=5, max_reconnects=1)
    frames = list(src)
    assert "secret" not in src.description
    assert len(frames) == 8 and all(f.image is not None for f in frames)
    idx = [f.index for f in frames]
    assert idx[:5] == [0, 1, 2, 3, 4]
    assert all(b > a for a, b in itertools.pairwise(idx))
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(idx))
    assert src.stats.dropped == gaps  # every lost frame shows as a jump in the index
    assert gaps >= 5 + 1 + 1  # the 5 failed reads before the reconnect, the exception, the garbage frame
    assert src.stats.reconnects == 1
    assert src.stats.frames == 8
    assert src.stats.errors == 5 + 2 + 2 + 5  # dead reads, two failed opens, raise + garbage, the end
    assert first.released and second.released


def test_stream_that_never_opens_keeps_trying_until_closed() -> None:
    opener = Opener([])  # every open fails
    src = StreamSource("http://127.0.0.1:9/none", "cam3", opener=opener, backoff=(0.01, 0.05))
    reader = LatestFrame(src).start()
    time.sleep(0.3)
    assert not reader.done.is_set()
    reader.stop()
    assert reader.done.is_set()
    assert src.stats.errors >= 3 and src.stats.frames == 0


def test_stream_with_the_real_opener_survives_a_refused_connection() -> None:
    src = StreamSource("rtsp://127.0.0.1:1/nothing-here", "cam3", backoff=(0.05, 0.1))
    reader = LatestFrame(src).start()
    deadline = time.monotonic() + 20
    while src.stats.errors < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    reader.stop(timeout=15)
    assert src.stats.errors >= 2 and reader.done.is_set()


def test_live_batches_take_the_newest_frame() -> None:
    cams = [FakeCapture(["frame"] * 30), FakeCapture(["frame"] * 30)]
    sources = [StreamSource(f"rtsp://x/{i}", f"c{i}", opener=Opener([cams[i]]), backoff=(0.01, 0.01),
                            max_reconnects=0) for i in range(2)]
    stop = threading.Event()
    seen: dict[str, list[int]] = {"c0": [], "c1": []}
    for batch in frame_batches(sources, stop):
        assert len({f.camera for f in batch}) == len(batch)
        for f in batch:
            seen[f.camera].append(f.index)
        time.sleep(0.01)  # a slow consumer
    for cam, idx in seen.items():
        assert idx and all(b > a for a, b in itertools.pairwise(idx)), cam
        assert idx[-1] == 29  # the newest frame always gets through


# ---------------------------------------------------------------------------------------------- MCAP
def _jpeg(i: int) -> bytes:
    return cv2.imencode(".jpg", pattern(i))[1].tobytes()


def _write_mcap(path: Path, messages: list[tuple[str, int, float, bytes]], store: str = "s1") -> None:
    """``messages``: (camera, sequence, log time, payload bytes)."""
    with open(path, "wb") as f:
        w = Writer(f)
        w.start()
        sid = w.register_schema("foxglove.CompressedImage", "jsonschema", b"{}")
        channels: dict[str, int] = {}
        for cam, seqno, t, data in messages:
            if cam not in channels:
                channels[cam] = w.register_channel(f"walkout/v1/{store}/camera/{cam}/image", "json", sid)
            w.add_message(channels[cam], log_time=int(t * 1e9), publish_time=int(t * 1e9), data=data,
                          sequence=seqno)
        w.finish()


def _payload(jpeg: bytes, fmt: str = "jpeg") -> bytes:
    return json.dumps({"timestamp": {"sec": 0, "nsec": 0}, "frame_id": "x", "format": fmt,
                       "data": base64.b64encode(jpeg).decode()}).encode()


def test_mcap_source_decodes_counts_gaps_and_corrupt_frames(tmp_path: Path) -> None:
    path = tmp_path / "session.mcap"
    t0 = 1767225600.0
    msgs = []
    for k in (1, 2, 3, 5, 6):  # frame 4 was dropped
        data = _payload(_jpeg(k))
        if k == 5:
            data = _payload(b"\xff\xd8 corrupt jpeg bytes")
        msgs.append(("camA", k, t0 + (k - 1) * 0.1, data))
        msgs.append(("camB", k, t0 + (k - 1) * 0.1, _payload(_jpeg(k + 10))))
    msgs.append(("camB", 7, t0 + 0.6, b"{not json"))
    _write_mcap(path, msgs)

    src = McapSource(path, ["camA"])
    assert src.store_id == "s1" and src.cameras == ("camA",)
    frames = list(src)
    assert [(f.index, f.image is not None) for f in frames] == [(1, True), (2, True), (3, True), (5, False),
                                                               (6, True)]
    assert [f.ts for f in frames] == pytest.approx([t0, t0 + 0.1, t0 + 0.2, t0 + 0.4, t0 + 0.5])
    assert [level(f.image) for f in frames if f.image is not None] == [1, 2, 3, 6]
    assert src.stats.as_dict() == {"frames": 4, "dropped": 2, "errors": 1, "reconnects": 0}

    both = McapSource(path)
    got = list(both)
    assert both.cameras == ("camA", "camB")
    assert [f.camera for f in got[:2]] == ["camA", "camB"]
    assert got[-1].camera == "camB" and got[-1].image is None  # the payload that is not JSON
    batches = list(grouped(got, 0.05))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2, 1]


@pytest.mark.parametrize("cameras, reason", [(["camZ"], "no image channel for camera"),
                                             (None, None)])
def test_mcap_source_camera_must_exist(tmp_path: Path, cameras, reason) -> None:
    path = tmp_path / "s.mcap"
    _write_mcap(path, [("camA", 1, 1.0, _payload(_jpeg(1)))])
    if reason:
        with pytest.raises(SourceError, match=reason):
            McapSource(path, cameras)
    else:
        assert McapSource(path, cameras).cameras == ("camA",)


@pytest.mark.parametrize("content, reason", [
    (b"", "not a readable MCAP|no camera image channels"),
    (b"garbage" * 100, "not a readable MCAP|no camera image channels"),
])
def test_mcap_source_bad_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.mcap"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=reason):
        McapSource(path)


def test_truncated_mcap_reads_what_it_can(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    _write_mcap(path, [("camA", k, 1.0 + k, _payload(_jpeg(k))) for k in range(1, 30)])
    whole = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    try:
        src = McapSource(cut)
    except SourceError as exc:  # without its summary the file may not even list its channels
        assert "cut.mcap" in str(exc)
        return
    frames = list(src)  # must not raise
    assert len(frames) < 29


# ---------------------------------------------------------------------------------------------- helpers
def test_merged_orders_by_capture_time(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_folder(a, set(), n=3)
    _write_folder(b, set(), n=3)
    sa = ImageFolderSource(a, "A", fps=10, start=0.0)
    sb = ImageFolderSource(b, "B", fps=10, start=0.05)
    order = [(f.camera, f.index) for f in merged([sa, sb])]
    assert order == [("A", 0), ("B", 0), ("A", 1), ("B", 1), ("A", 2), ("B", 2)]


def test_grouped_never_puts_one_camera_twice_in_a_batch() -> None:
    frames = [SourceFrame(0.0, 0, None, "A"), SourceFrame(0.01, 1, None, "A"),
              SourceFrame(0.02, 0, None, "B")]
    assert [[f.camera for f in b] for b in grouped(frames, 0.05)] == [["A"], ["A", "B"]]


@pytest.mark.parametrize("spec, kind", [
    ("rtsp://cam/stream", "stream"), ("http://cam/mjpg", "stream"), ("/dev/video0", "stream"),
    ("0", "stream"),
    ("x.mcap", "mcap"), ("clip.mp4", "video"),
])
def test_source_kind(spec: str, kind: str) -> None:
    assert source_kind(spec) == kind


def test_source_kind_refuses_unknown_schemes() -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        source_kind("ftp://host/x")


def test_open_sources_pairs_sources_with_cameras(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="2 sources for 1 cameras"):
        open_sources(["a.mp4", "b.mp4"], ["cam1"])
    path = tmp_path / "s.mcap"
    _write_mcap(path, [("camA", 1, 1.0, _payload(_jpeg(1))), ("camB", 1, 1.0, _payload(_jpeg(1)))])
    (src,) = open_sources([str(path)], ["camA", "camB"])
    assert isinstance(src, McapSource) and src.cameras == ("camA", "camB")


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact_url("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s"


# ---------------------------------------------------------------------------------------------- properties
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
    st.sampled_from(["data", "format", "timestamp", "x"]),
    st.one_of(st.text(max_size=40), st.integers(), st.none(), st.binary(max_size=20).map(
        lambda b: base64.b64encode(b).decode())), max_size=4))))
def test_any_image_payload_decodes_or_is_refused_never_raises(data: bytes) -> None:
    img, why = _decode_compressed_image(data, "json")
    assert (img is None) == bool(why)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_sidecar_parses_or_fails_with_a_source_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "timestamps.csv"
    path.write_text(text, encoding="utf-8")
    try:
        table = read_sidecar(path)
    except SourceError as exc:
        assert str(path) in str(exc)
    else:
        assert all(0 <= v < 1e10 for v in table.values())
