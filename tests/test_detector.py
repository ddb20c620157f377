"""The ONNX detector runtime (``edge/detector.py``): letterbox geometry, decoding of ultralytics heads, NMS,
the class filter, batching and bad input.  The model tests use the ONNX files committed in ``models/`` and a
COCO-layout detection graph in ``tests/data``; nothing here imports torch or ultralytics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edge.detector import (
    PAD_VALUE,
    Detections,
    Detector,
    DetectorInputError,
    DetectorModelError,
    batched_nms,
    batched_nms_numpy,
    decode_end2end,
    decode_raw,
    letterbox_geometry,
    letterbox_into,
    make_blob,
    nms,
    to_frame,
)

ROOT = Path(__file__).resolve().parents[1]
POSE_FP32 = ROOT / "models" / "person_pose.onnx"
POSE_INT8 = ROOT / "models" / "person_pose_int8.onnx"
COCO_LAYOUT = ROOT / "tests" / "data" / "coco_layout_64.onnx"


# ---------------------------------------------------------------------------------------------- letterbox
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (1280, 720), (333, 517), (320, 320), (17, 900)])
@pytest.mark.parametrize("input_hw", [(320, 320), (416, 416), (256, 320)])
def test_letterbox_round_trip_is_exact(size, input_hw):
    w, h = size
    lb, (nw, nh) = letterbox_geometry(w, h, input_hw[1], input_hw[0])
    assert nw <= input_hw[1] and nh <= input_hw[0]
    assert nw == input_hw[1] or nh == input_hw[0]  # one side fills the input
    pts = np.random.default_rng(0).uniform([0, 0], [w, h], (50, 2)).astype(np.float32)
    back = lb.to_frame(lb.to_input(pts))
    np.testing.assert_allclose(back, pts, atol=1e-3 * max(w, h) / 640)
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.1, w * 0.5, h * 0.9]], np.float32)
    np.testing.assert_allclose(lb.to_frame(lb.to_input(boxes)), boxes, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (800, 450)])
def test_letterbox_places_pixels_where_the_mapping_says(size):
    """A bright square drawn in the frame is found in the letterboxed input where ``to_input`` puts it,
    and the padding is 114."""
    w, h = size
    frame = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = int(w * 0.3), int(h * 0.4), int(w * 0.6), int(h * 0.7)
    frame[y1:y2, x1:x2] = 255
    canvas = np.full((320, 320, 3), PAD_VALUE, np.uint8)
    lb = letterbox_into(frame, canvas)
    ys, xs = np.nonzero(canvas[..., 0] > 200)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    expect = lb.to_input(np.array([x1, y1, x2, y2], np.float32))
    np.testing.assert_allclose(found, expect, atol=1.0)
    if lb.top > 0:
        assert (canvas[: lb.top] == PAD_VALUE).all()
    if lb.left > 0:
        assert (canvas[:, : lb.left] == PAD_VALUE).all()


def test_blob_is_rgb_nchw_0_to_1():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR
    blob, (lb,) = make_blob([frame], (320, 320))
    assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32
    mid = blob[0, :, 160, 160]
    np.testing.assert_allclose(mid, [0.0, 0.0, 1.0])  # RGB order: blue is the last channel
    np.testing.assert_allclose(blob[0, :, 0, 160], [PAD_VALUE / 255] * 3, rtol=1e-6)
    assert (lb.top, lb.left) == (40, 0)


@pytest.mark.parametrize("shapes, hw, dtype", [
    ([(480, 640)], (320, 320), np.float32),
    ([(480, 640), (720, 1280), (200, 150)], (320, 320), np.float32),
    ([(480, 640), (640, 480)], (256, 320), np.float16),
])
def test_blob_equals_the_strided_reference(shapes, hw, dtype):
    """The plane-by-plane blob is exactly the one-step BGR -> RGB, NHWC -> NCHW, /255 conversion."""
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in shapes]
    blob, placements = make_blob(frames, hw, dtype)
    canvas = np.full((len(frames), *hw, 3), PAD_VALUE, np.uint8)
    expect_lb = [letterbox_into(f, canvas[i]) for i, f in enumerate(frames)]
    ref = np.ascontiguousarray(canvas[..., ::-1].transpose(0, 3, 1, 2), dtype=dtype)
    ref *= dtype(1 / 255)
    assert blob.dtype == dtype and blob.flags.c_contiguous
    np.testing.assert_array_equal(blob, ref)
    assert placements == expect_lb


# ---------------------------------------------------------------------------------------------- NMS
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 60), st.sampled_from([0.3, 0.45, 0.7]))
def test_nms_matches_opencv(seed, n, thr):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n + 0.01  # distinct scores: one right answer
    ours = nms(boxes, scores, thr, max_det=1000)
    ref = cv2.dnn.NMSBoxes([[float(a), float(b), float(c - a), float(d - b)] for a, b, c, d in boxes],
                           scores.tolist(), 0.0, thr)
    assert ours.tolist() == np.asarray(ref).ravel().tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 200), st.integers(1, 4), st.booleans())
@example(seed=2, n=79, n_classes=2, agnostic=False)  # an IoU at the threshold: class offsets in float32 flipped it
def test_batched_nms_opencv_equals_numpy_reference(seed, n, n_classes, agnostic):
    """Clustered candidates as a detector emits them (several anchors per object), several classes."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 300, (max(1, n // 8), 2))
    xy = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 4, (n, 2))
    wh = rng.uniform(10, 60, (n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32)
    scores = (rng.permutation(n).astype(np.float32) + 1) / (n + 1)
    classes = rng.integers(0, n_classes, n)
    fast = batched_nms(boxes, scores, classes, 0.45, max_det=50, agnostic=agnostic)
    ref = batched_nms_numpy(boxes, scores, classes, 0.45, max_det=50, agnostic=agnostic)
    assert fast.tolist() == ref.tolist()


def test_batched_nms_keeps_overlapping_boxes_of_other_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 0, 1])
    for fn in (batched_nms, batched_nms_numpy):
        assert fn(boxes, scores, classes, 0.5).tolist() == [0, 2]
        assert fn(boxes, scores, classes, 0.5, agnostic=True).tolist() == [0]
        assert fn(boxes, scores, classes, 0.5, max_det=1).tolist() == [0]
        assert fn(boxes[:0], scores[:0], classes[:0], 0.5).tolist() == []


# ---------------------------------------------------------------------------------------------- decoding
def _raw(b: int, channels: int, anchors: int = 2100) -> np.ndarray:
    return np.zeros((b, channels, anchors), np.float32)


def test_decode_detection_head_with_nms_and_class_filter():
    nc = 3
    raw = _raw(2, 4 + nc)
    raw[0, :, 10] = [100, 100, 20, 40, 0.9, 0.0, 0.0]   # class 0
    raw[0, :, 11] = [102, 101, 20, 40, 0.8, 0.1, 0.0]   # duplicate of the first: suppressed
    raw[0, :, 12] = [100, 100, 20, 40, 0.0, 0.0, 0.85]  # same place, class 2: kept (class-aware NMS)
    raw[0, :, 13] = [200, 50, 10, 10, 0.2, 0.0, 0.0]    # below the threshold
    raw[1, :, 99] = [50, 60, 10, 30, 0.0, 0.6, 0.3]     # frame 2: class 1
    out = decode_raw(raw, nc, None, conf=0.25, iou=0.45)
    assert len(out) == 2
    np.testing.assert_allclose(out[0].boxes, [[90, 80, 110, 120], [90, 80, 110, 120]])
    np.testing.assert_allclose(out[0].scores, [0.9, 0.85])
    assert out[0].classes.tolist() == [0, 2] and out[0].keypoints is None
    np.testing.assert_allclose(out[1].boxes, [[45, 45, 55, 75]])
    assert out[1].classes.tolist() == [1]
    only2 = decode_raw(raw, nc, None, conf=0.25, iou=0.45, class_ids=np.array([2]))
    assert only2[0].classes.tolist() == [2] and len(only2[1]) == 1 and only2[1].classes.tolist() == [2]
    np.testing.assert_allclose(only2[1].scores, [0.3])  # its class-2 score counts though class 1 is higher


def test_decode_pose_head_keeps_keypoints_with_their_box():
    k = 3
    raw = _raw(1, 4 + 1 + 3 * k)
    raw[0, :, 5] = [100, 100, 20, 40, 0.9, 95, 85, 0.99, 90, 110, 0.8, 110, 110, 0.1]
    raw[0, :, 6] = [101, 100, 20, 40, 0.7, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # suppressed duplicate
    raw[0, :, 7] = [300, 200, 30, 60, 0.5, 290, 175, 0.9, 285, 210, 0.2, 315, 210, 0.9]
    (d,) = decode_raw(raw, 1, (k, 3), conf=0.25, iou=0.45)
    assert len(d) == 2
    np.testing.assert_allclose(d.keypoints[0], [[95, 85, 0.99], [90, 110, 0.8], [110, 110, 0.1]], rtol=1e-6)
    np.testing.assert_allclose(d.keypoints[1, :, :2], [[290, 175], [285, 210], [315, 210]])
    # mapped back to a 640x480 frame from a 320 input: scale 2, 40 px of padding on top
    lb, _ = letterbox_geometry(640, 480, 320, 320)
    f = to_frame(d, lb)
    np.testing.assert_allclose(f.boxes[0], [180, 80, 220, 160])
    np.testing.assert_allclose(f.keypoints[0, 0], [190, 90, 0.99], rtol=1e-6)


def test_decode_end_to_end_head():
    raw = np.zeros((1, 300, 6 + 9), np.float32)
    raw[0, 0, :6] = [10, 20, 30, 60, 0.9, 0]
    raw[0, 1, :6] = [50, 20, 70, 60, 0.8, 3]
    raw[0, 2, :6] = [90, 20, 99, 60, 0.1, 0]
    (d,) = decode_end2end(raw, (3, 3), conf=0.25)
    assert d.classes.tolist() == [0, 3]
    (p,) = decode_end2end(raw, (3, 3), conf=0.25, class_ids=np.array([0]))
    np.testing.assert_allclose(p.boxes, [[10, 20, 30, 60]])
    assert p.keypoints.shape == (1, 3, 3)


def test_decode_rejects_a_head_of_the_wrong_size():
    with pytest.raises(DetectorModelError, match="channels"):
        decode_raw(_raw(1, 10), 1, (3, 3), 0.25, 0.45)


# ---------------------------------------------------------------------------------------------- a COCO model
def test_coco_layout_model_with_person_filter():
    """A user's ultralytics COCO detector: names come from the metadata; ``classes=['person']`` keeps the
    person scores only (also where another class scores higher) and maps boxes back to the frame."""
    det = Detector(COCO_LAYOUT, classes=["person"])
    assert det.task == "detect" and det.names[0] == "person" and len(det.names) == 80
    assert det.input_hw == (64, 64) and det.info.batch is None and det.keypoint_names is None
    frame = np.zeros((480, 640, 3), np.uint8)
    d = det(frame)
    # input 64x64 from 640x480: scale 0.1, 8 px of padding on top
    np.testing.assert_allclose(d.boxes, [[150, 120, 250, 320], [400, 140, 480, 300]], atol=1e-3)
    np.testing.assert_allclose(d.scores, [0.9, 0.4])
    assert d.classes.tolist() == [0, 0] and d.keypoints is None
    everything = Detector(COCO_LAYOUT).detect([frame])[0]
    assert [det.names[c] for c in everything.classes] == ["car", "person", "backpack"]
    with pytest.raises(ValueError, match="not in the model's names"):
        Detector(COCO_LAYOUT, classes=["shopper"])


@pytest.mark.slow
def test_fixed_batch_chunks_equal_one_dynamic_forward():
    det = Detector(POSE_FP32, intra_op_threads=2)
    frames = list(_rendered()[0][:3])
    blob, _ = det.preprocess(frames)
    whole = det.forward(blob)
    det.info = dataclasses.replace(det.info, batch=2)  # as a model exported with batch=2 would run
    chunked = det.forward(blob)
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("frame, match", [
    (np.zeros((0, 640, 3), np.uint8), "empty"),
    (np.zeros((480, 0, 3), np.uint8), "empty"),
    (np.zeros((480, 640, 3), np.float32), "dtype uint8"),
    (np.zeros((480, 640), np.uint8), "grayscale"),
    (np.zeros((480, 640, 1), np.uint8), "grayscale"),
    (np.zeros((480, 640, 4), np.uint8), r"\(H, W, 3\)"),
    ("frame.jpg", "numpy array"),
    (None, "numpy array"),
])
def test_bad_frames_get_a_clear_error(frame, match):
    det = Detector(COCO_LAYOUT, warmup=False)
    with pytest.raises(DetectorInputError, match=match):
        det.detect([np.zeros((48, 64, 3), np.uint8), frame])


def test_bad_models_and_settings_get_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Detector(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(DetectorModelError, match="cannot load"):
        Detector(junk)
    with pytest.raises(ValueError, match="conf"):
        Detector(COCO_LAYOUT, conf=1.5)
    det = Detector(COCO_LAYOUT, warmup=False)
    with pytest.raises(DetectorInputError, match="sequence of frames"):
        det.detect(np.zeros((48, 64, 3), np.uint8))
    assert det.detect([]) == []


# ---------------------------------------------------------------------------------------------- the real model
_RENDER_CACHE: dict = {}


def _rendered():
    """Frames of an unseen simulator world (hard preset) on two pinhole cameras and a fisheye camera of the
    default store, with their truth: (frames, samples).  Rendered once per test session."""
    if not _RENDER_CACHE:
        from models.dataset import render_samples

        samples = render_samples(30_001, "hard", ["cam1", "cam3", "cam5"], [20.0, 28.0, 36.0, 44.0])
        _RENDER_CACHE["v"] = ([s.image for s in samples], samples)
    return _RENDER_CACHE["v"]


@pytest.mark.slow
@pytest.mark.parametrize("model", [POSE_FP32, POSE_INT8], ids=["fp32", "int8"])
def test_batch_of_four_equals_four_single_frames(model):
    det = Detector(model, intra_op_threads=2)
    frames = list(_rendered()[0][1:5])
    # different sizes in one batch too: the third frame at a lower resolution
    frames[2] = cv2.resize(frames[2], (480, 360))
    batch = det.detect(frames)
    for f, b in zip(frames, batch):
        s = det.detect_one(f)
        assert len(s) == len(b)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=0.05)
        np.testing.assert_allclose(b.scores, s.scores, atol=1e-4)
        np.testing.assert_allclose(b.keypoints, s.keypoints, atol=0.05)


def test_pose_model_metadata():
    det = Detector(POSE_FP32, warmup=False)
    assert det.task == "pose" and det.names == {0: "person"}
    assert det.keypoint_names == ("head", "lwrist", "rwrist")
    assert det.info.batch is None and det.input_hw[0] == det.input_hw[1]
    q = Detector(POSE_INT8, warmup=False)
    assert q.info == dataclasses.replace(det.info)


# Floors a little below what the committed model reaches on these 12 frames (48 persons, 77 visible wrists):
# the model of 2026-11-29 (two GPU fine-tunes) finds 94 % / 94 % (FP32 / INT8) of the persons and puts 95 % / 92 %
# of the visible wrists within 10 px (INT8 on an AVX2 CPU; an earlier model's INT8 scored 7 points lower on an
# AVX2 one than on an AVX-512 VNNI one).  See models/README.md for the held-out figures; raise the floors with
# the model.
RECALL_FLOOR = {"fp32": 0.88, "int8": 0.88}
WRIST_FLOOR = {"fp32": 0.88, "int8": 0.84}  # INT8 kernels differ a little between CPUs


@pytest.mark.slow
@pytest.mark.parametrize("name, model", [("fp32", POSE_FP32), ("int8", POSE_INT8)])
def test_model_finds_people_and_wrists_in_rendered_frames(name, model):
    from models.evaluate import iou_matrix

    det = Detector(model, intra_op_threads=2)
    frames, truths = _rendered()
    found = total = near = wrists = 0
    for dets, sample in zip(det.detect(frames), truths):
        gt = np.array([p.box for p in sample.persons])
        iou = iou_matrix(dets.boxes, gt)
        for g, p in enumerate(sample.persons):
            total += 1
            d = int(iou[:, g].argmax()) if len(dets) else -1
            hit = d >= 0 and iou[d, g] >= 0.5
            found += hit
            for k in (1, 2):
                if p.keypoints[k, 2] == 2:
                    wrists += 1
                    near += hit and np.hypot(*(dets.keypoints[d, k, :2] - p.keypoints[k, :2])) <= 10
    assert total >= 30
    assert found / total >= RECALL_FLOOR[name], (found, total)
    assert near / max(wrists, 1) >= WRIST_FLOOR[name], (near, wrists)


def test_detections_empty_constructor():
    e = Detections.empty(3)
    assert len(e) == 0 and e.keypoints.shape == (0, 3, 3)
