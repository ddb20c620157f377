"""The model card's numbers and the data under them: YOLO pose labels and the dataset writer, COCO-style AP,
OKS, and the operating-point metrics of ``models/evaluate.py`` on hand-made cases with known answers."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.detector import Detections
from models.dataset import (
    Person,
    Plan,
    Sample,
    data_yaml,
    generate,
    label_lines,
    parse_label_file,
    plan_matches,
)
from models.evaluate import average_precision, drop_in_ignored, iou_matrix, oks_matrix, operating_point


# ---------------------------------------------------------------------------------------------- labels
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 6))
def test_labels_round_trip(tmp_path_factory, seed, n):
    rng = np.random.default_rng(seed)
    w, h = 640, 480
    persons = []
    for _ in range(n):
        x1, y1 = rng.uniform(0, 560), rng.uniform(0, 400)
        box = np.array([x1, y1, x1 + rng.uniform(10, 80), y1 + rng.uniform(10, 80)])
        kp = np.column_stack([rng.uniform(0, w, 3), rng.uniform(0, h, 3), rng.integers(0, 3, 3)])
        persons.append(Person(box, kp))
    path = tmp_path_factory.mktemp("lbl") / "a.txt"
    path.write_text("\n".join(label_lines(persons, w, h)))
    boxes, kps = parse_label_file(path, w, h)
    assert len(boxes) == n
    for p, b, k in zip(persons, boxes, kps):
        np.testing.assert_allclose(b, np.clip(p.box, 0, [w, h, w, h]), atol=1e-3)
        np.testing.assert_array_equal(k[:, 2], p.keypoints[:, 2])
        lab = p.keypoints[:, 2] > 0
        np.testing.assert_allclose(k[lab, :2], p.keypoints[lab, :2], atol=1e-3)
        assert (k[~lab, :2] == 0).all()  # unlabelled keypoints are written as 0 0 0


def test_labels_drop_slivers_and_zero_keypoints_outside():
    p_small = Person(np.array([10, 10, 12, 50]), np.zeros((3, 3)))
    p_out = Person(np.array([600, 400, 700, 500]), np.array([[650, 450, 2], [620, 420, 1], [10, 10, 2]]))
    lines = label_lines([p_small, p_out], 640, 480)
    assert len(lines) == 1
    vals = lines[0].split()
    assert vals[5:8] == ["0.000000", "0.000000", "0"]  # head beyond the frame: not labelled
    assert vals[10] == "1" and vals[13] == "2"


def test_data_yaml_declares_the_pose_layout(tmp_path):
    d = data_yaml(tmp_path)
    assert d["kpt_shape"] == [3, 3] and d["flip_idx"] == [0, 2, 1] and d["names"] == {0: "person"}
    assert d["kpt_names"] == {0: ["head", "lwrist", "rwrist"]}


# ---------------------------------------------------------------------------------------------- AP
def _img(scores, sim, n_gt):
    sim = np.asarray(sim, float)
    return np.asarray(scores, float), sim if sim.ndim == 2 else sim.reshape(len(scores), -1), n_gt


@pytest.mark.parametrize("images, expect50", [
    ([_img([0.9, 0.8], [[0.9, 0.0], [0.0, 0.8]], 2)], 1.0),                 # both found
    ([_img([0.9], [[0.9, 0.0]], 2)], 0.5),                                   # half the recall
    ([_img([0.9, 0.8], [[0.0, 0.0], [0.9, 0.0]], 1)], 0.5),                  # a false positive ranked first
    ([_img([0.9, 0.8], [[0.9, 0.0], [0.0, 0.0]], 1)], 1.0),                  # the false positive ranked last
    ([_img([0.9, 0.8], [[0.9], [0.85]], 1)], 1.0),                           # a duplicate: one match only
    ([_img([], np.zeros((0, 1)), 1)], 0.0),
])
def test_average_precision_known_cases(images, expect50):
    ap = average_precision(images)
    assert ap[0] == pytest.approx(expect50, abs=0.011)


def test_average_precision_over_thresholds():
    # IoU 0.72: a match from 0.50 to 0.70 (5 of the 10 thresholds), a miss above
    ap = average_precision([_img([0.9], [[0.72]], 1)])
    np.testing.assert_allclose(ap, [1.0] * 5 + [0.0] * 5)


def test_ignored_ground_truth_in_keypoint_ap():
    # the second person has no labelled keypoint (NaN column): not counted, not matchable
    ap = average_precision([_img([0.9], [[0.95, np.nan]], 1)])
    assert ap[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- OKS / IoU
def test_oks_is_one_for_exact_keypoints_and_falls_with_distance():
    gt_box = np.array([[0, 0, 100, 200]], float)
    gt = np.array([[[50, 20, 2], [20, 100, 2], [80, 100, 1]]], float)
    exact = oks_matrix(gt.copy(), gt, gt_box)
    assert exact[0, 0] == pytest.approx(1.0)
    off = gt.copy()
    off[0, :, 0] += 10
    far = gt.copy()
    far[0, :, 0] += 40
    o1, o2 = oks_matrix(off, gt, gt_box)[0, 0], oks_matrix(far, gt, gt_box)[0, 0]
    assert 1.0 > o1 > o2 > 0.0
    none = gt.copy()
    none[0, :, 2] = 0
    assert np.isnan(oks_matrix(gt, none, gt_box)[0, 0])


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], float)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 0.0], [25 / 175, 0.0]])


# ---------------------------------------------------------------------------------------------- operating point
def _dets(boxes, kps, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = np.full(len(boxes), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(boxes, s, np.zeros(len(boxes), np.int64), np.asarray(kps, np.float32).reshape(-1, 3, 3))


def test_operating_point_counts_wrists_of_missed_people_as_misses():
    gb = np.array([[0, 0, 100, 200], [300, 0, 400, 200]], float)
    gk = np.array([[[50, 20, 2], [20, 100, 2], [28, 100, 2]],
                   [[350, 20, 2], [320, 100, 2], [380, 100, 1]]], float)
    # the first person found, its left wrist 5 px off (and 3 px from the right one), its right wrist far
    # off; the second person missed
    dets = _dets([[1, 0, 100, 200]], [[[50, 20, 0.9], [25, 100, 0.9], [60, 100, 0.9]]])
    m = operating_point([dets], [(Path("x"), gb, gk, (640, 480), np.zeros((0, 4)))])
    assert m["precision"] == 1.0 and m["recall"] == 0.5
    assert m["visible_wrists"] == 3           # the occluded wrist (v=1) is not counted
    assert m["wrist_within_10px"] == pytest.approx(1 / 3)
    assert m["wrist_within_10px_any_side"] == pytest.approx(2 / 3)
    assert m["head_within_10px"] == pytest.approx(1 / 2)


def test_detections_on_ignored_people_are_dropped():
    gb = np.array([[0, 0, 100, 200]], float)
    ign = np.array([[300, 0, 340, 40]], float)
    dets = _dets([[0, 0, 100, 200], [301, 0, 340, 40], [500, 0, 540, 40]], np.zeros((3, 3, 3)))
    kept = drop_in_ignored(dets, gb, ign)
    np.testing.assert_allclose(kept.boxes, [[0, 0, 100, 200], [500, 0, 540, 40]])


# ---------------------------------------------------------------------------------------------- dataset writer
def test_generate_writes_splits_labels_and_manifest(tmp_path):
    seen: list[tuple[int, str]] = []

    def source(seed, preset, plan):
        seen.append((seed, preset))
        rng = np.random.default_rng(seed)
        while True:
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            p = Person(np.array([10.0, 5.0, 30.0, 40.0]), np.array([[20, 8, 2], [12, 30, 1], [28, 30, 0]], float))
            yield Sample(img, [p], {"seed": seed, "camera": "c"}, ignore=[np.array([40.0, 5, 60, 20])])

    plan = Plan(images=5, val_images=2, test_images=3, frames_per_seed=2, source="sim")
    manifest = generate(tmp_path, plan, source)
    assert plan_matches(tmp_path, plan) and not plan_matches(tmp_path, Plan(images=6))
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        assert len(list((tmp_path / "images" / split).glob("*.jpg"))) == n
        assert manifest["splits"][split]["images"] == n and manifest["splits"][split]["ignored"] == n
    train_seeds = {s for s, _ in seen if s < 10_000}
    assert train_seeds == {1, 2, 3}  # 2 frames per seed
    assert {p for s, p in seen if s >= 20_000} == {"hard"} and min(s for s, _ in seen if s >= 10_000) == 10_000
    boxes, kps = parse_label_file(tmp_path / "labels" / "test" / "test_000000.txt", 64, 48)
    np.testing.assert_allclose(boxes, [[10, 5, 30, 40]], atol=1e-3)
    assert kps[0, :, 2].tolist() == [2, 1, 0]
    frames = json.loads((tmp_path / "test_frames.json").read_text())
    assert frames["ignore"]["test_000000"] == [[40.0, 5.0, 60.0, 20.0]]
    assert yaml.safe_load((tmp_path / "data.yaml").read_text())["kpt_shape"] == [3, 3]


def test_card_lists_every_training_run_and_the_committed_history_matches_the_card(tmp_path):
    """The card's History: one row per run that led to the committed model (a fine-tune continues from the
    model before it), and the committed ``models/history.json`` ends with the run the committed card
    describes."""
    from models.evaluate import history_entry, write_card

    metrics = {"command": "python -m models.train --init-onnx models/person_pose.onnx --time-hours 1.3",
               "training": {"epochs_done": 9, "args": {"time": 1.3, "imgsz": 320, "epochs": 9}},
               "fp32": {"box_map50": 0.861, "wrist_within_10px": 0.7}, "int8": {"box_map50": 0.858}}
    manifest = {"splits": {"train": {"images": 3000, "seeds": [76, 150]}}}
    entry = history_entry(metrics, manifest, "2026-11-29")
    assert entry["origin"] == "fine-tuned" and entry["train_seeds"] == "76-150" and entry["epochs"] == 9
    first = {"date": "2026-11-28", "origin": "from scratch", "train_images": 1600, "train_seeds": "1-40",
             "epochs": 15, "hours": None, "box_map50": 0.782, "box_map50_int8": 0.785, "wrist_within_10px": 0.47}
    card = tmp_path / "README.md"
    write_card(card, metrics, manifest, [first, entry])
    text = card.read_text()
    assert "| 2026-11-28 | from scratch | 1600 (1-40) | 15 | – | 78.2 / 78.5 | 47.0 |" in text
    assert "| 2026-11-29 | fine-tuned | 3000 (76-150) | 9 | 1.3 | 86.1 / 85.8 | 70.0 |" in text

    root = Path(__file__).resolve().parents[1] / "models"
    history = json.loads((root / "history.json").read_text())
    assert history[0]["origin"] == "from scratch"
    assert all(h["origin"] == "fine-tuned" for h in history[1:])
    assert f"{100 * history[-1]['box_map50']:.1f}" in (root / "README.md").read_text().split("## Held-out")[1]


# ---------------------------------------------------------------------------------------------- packing
def _full_size_dataset(root: Path, images: int = 6, val: int = 2) -> dict:
    def source(seed, preset, plan):
        rng = np.random.default_rng(seed)
        while True:
            img = np.full((480, 640, 3), rng.integers(0, 255, 3), np.uint8)
            img[100:300, 200:260] = 255 - img[0, 0]
            p = Person(np.array([200.0, 100.0, 260.0, 300.0]), np.array([[230, 110, 2], [205, 250, 2], [255, 250, 1]],
                                                                         float))
            yield Sample(img, [p], {"seed": seed, "camera": "c"})

    return generate(root, Plan(images=images, val_images=val, test_images=2, frames_per_seed=3), source)


def test_pack_shrinks_frames_to_webp_and_keeps_labels(tmp_path):
    from models.dataset import image_files
    from models.pack import pack
    from models.train import point_data_yaml

    _full_size_dataset(tmp_path / "data")
    got = pack(tmp_path / "data", tmp_path / "d.tar", imgsz=320, quality=75)
    assert got["images"] == {"train": 6, "val": 2}
    with tarfile.open(tmp_path / "d.tar") as tar:
        tar.extractall(tmp_path / "there", filter="data")
    there = tmp_path / "there" / "data"
    assert not (there / "images" / "test").exists()  # evaluation stays on full frames
    for split, n in (("train", 6), ("val", 2)):
        files = image_files(there / "images" / split)
        assert [f.suffix for f in files] == [".webp"] * n
        img = cv2.imread(str(files[0]))
        assert img.shape == (240, 320, 3)
        assert (there / "labels" / split / f"{files[0].stem}.txt").read_text() == \
            (tmp_path / "data" / "labels" / split / f"{files[0].stem}.txt").read_text()
    manifest = json.loads((there / "manifest.json").read_text())
    assert manifest["packed"] == {"imgsz": 320, "webp_quality": 75, "images": {"train": 6, "val": 2}}
    assert set(manifest["splits"]) == {"train", "val"}
    data = yaml.safe_load(point_data_yaml(there).read_text())
    assert data["path"] == str(there.resolve()) and data["kpt_shape"] == [3, 3]


def test_pack_cuts_the_training_split_to_fit_and_never_the_validation_split(tmp_path):
    from models.pack import main, pack

    _full_size_dataset(tmp_path / "data", images=9)
    whole = pack(tmp_path / "data", tmp_path / "a.tar")["bytes"]
    cut = pack(tmp_path / "data", tmp_path / "b.tar", max_bytes=whole - 2000)
    assert 0 < cut["images"]["train"] < 9 and cut["images"]["val"] == 2 and cut["bytes"] <= whole - 2000
    train = json.loads(_tar_member(tmp_path / "b.tar", "data/manifest.json"))["splits"]["train"]
    sources = json.loads((tmp_path / "data" / "train_frames.json").read_text())["sources"]
    names = sorted(sources)[:cut["images"]["train"]]
    assert train["images"] == cut["images"]["train"] and train["persons"] == cut["images"]["train"]
    assert train["seeds"] == sorted({sources[n]["seed"] for n in names})  # only the seeds that went in
    assert len(train["seeds"]) < len({s["seed"] for s in sources.values()})
    assert main([str(tmp_path / "data"), str(tmp_path / "c.tar"), "--max-bytes", "20000"]) == 2  # val alone
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "d.tar")]) == 2


def _tar_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()
