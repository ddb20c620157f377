"""The tracker on the real PETS2009 video (floors a little below what bench/tracker_pets.py measured), and the
benchmark's own plumbing: score mapping, missing peers, --json and --out."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from bench import tracker_pets
from bench.tracker_pets import PeerMissing, bench_file, normalise_scores
from walkout.mot import MotSequence, read_mot, write_mot

# measured with the default TrackerConfig (bench/tracker_pets.py): HOTA / IDF1 84.6 / 99.0 and 47.7 / 72.0
FLOORS = {
    "dets_gt_noisy.txt": {"hota": 0.82, "idf1": 0.96, "mota": 0.95},
    "dets_hog_upscaled.txt": {"hota": 0.45, "idf1": 0.68, "mota": 0.60},
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_pets_floors(realdata, name: str) -> None:
    folder = realdata / "pets2009_s2l1"
    gt = read_mot(folder / tracker_pets.GT_FILE)
    (result,) = bench_file(folder / name, gt, [tracker_pets.OURS], repeat=1)
    m = result.metrics
    for key, floor in FLOORS[name].items():
        assert getattr(m, key) >= floor, f"{name}: {key} {getattr(m, key):.3f} < {floor}"
    assert m.num_pred_ids <= 2 * m.num_gt_ids  # no flood of short-lived ids


@pytest.mark.parametrize(
    ("scores", "how", "expect", "used"),
    [
        ([0.2, 0.9], "auto", [0.2, 0.9], "raw"),
        ([0.05, 1.0, 6.4], "auto", [1 / (1 + np.exp(0.95)), 0.5, 1 / (1 + np.exp(-5.4))], "margin"),
        ([0.0, 2.0], "logistic", [0.5, 1 / (1 + np.exp(-2.0))], "logistic"),
        ([3.0], "raw", [3.0], "raw"),
        ([], "auto", [], "raw"),
    ],
)
def test_normalise_scores(scores, how: str, expect, used: str) -> None:
    got, name = normalise_scores(np.array(scores, float), how)
    np.testing.assert_allclose(got, expect)
    assert name == used


def test_unknown_score_mapping() -> None:
    with pytest.raises(ValueError, match="unknown score mapping"):
        normalise_scores(np.ones(2), "sigmoid")


def small_files(tmp_path) -> tuple:
    """Two walkers over 30 frames as ground truth, and jittered detections with scores of them."""
    rng = np.random.default_rng(1)
    frames, ids, boxes = [], [], []
    for f in range(1, 31):
        for g, (x, y) in enumerate([(10 + 5 * f, 50), (300 - 5 * f, 200)], 1):
            frames.append(f)
            ids.append(g)
            boxes.append([x, y, x + 30, y + 80])
    gt = MotSequence.from_rows(frames, ids, boxes, np.ones(len(ids)))
    det = MotSequence.from_rows(
        frames,
        -np.ones(len(ids), int),
        np.array(boxes) + rng.normal(0, 1, (len(ids), 4)),
        rng.uniform(0.7, 1.0, len(ids)),
    )
    write_mot(tmp_path / "gt.txt", gt)
    write_mot(tmp_path / "det.txt", det)
    return tmp_path / "gt.txt", tmp_path / "det.txt"


def test_missing_peers_are_reported_not_raised(tmp_path, monkeypatch) -> None:
    gt_path, det_path = small_files(tmp_path)
    for mod in ("ultralytics", "ultralytics.trackers", "trackers", "supervision"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as if not installed
    with pytest.raises(PeerMissing, match="pip install"):
        tracker_pets.TRACKERS["roboflow-sort"](10.0)
    results = bench_file(
        det_path, read_mot(gt_path), ["walkout", "ultralytics-botsort", "roboflow-bytetrack"], repeat=1
    )
    assert [r.tracker for r in results] == ["walkout", "ultralytics-botsort", "roboflow-bytetrack"]
    assert results[0].metrics.idf1 > 0.9 and results[0].error is None
    assert "not installed" in results[1].error and "ultralytics==" in results[1].error
    assert "not installed" in results[2].error and "trackers==" in results[2].error
    assert results[1].metrics is None


def test_main_json_and_out(tmp_path, capsys) -> None:
    gt_path, det_path = small_files(tmp_path)
    rc = tracker_pets.main(
        [
            "--dets",
            str(det_path),
            "--gt",
            str(gt_path),
            "--json",
            "--repeat",
            "2",
            "--trackers",
            "walkout",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["results"]
    assert row["tracker"] == "walkout" and row["scores"] == "raw"
    assert row["hota"] > 0.8 and row["id_switches"] == 0 and row["ms_per_frame"] > 0
    written = read_mot(tmp_path / "out" / "det" / "walkout.txt")
    assert set(written.ids.tolist()) == {1, 2}


def test_main_table_and_missing_file(tmp_path, capsys) -> None:
    gt_path, det_path = small_files(tmp_path)
    assert (
        tracker_pets.main(
            ["--dets", str(det_path), "--gt", str(gt_path), "--trackers", "walkout", "--repeat", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "walkout" in out and "HOTA" in out
    assert tracker_pets.main(["--dets", str(tmp_path / "nope.txt"), "--gt", str(gt_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_tracker_sim_bench_on_the_smoke_session(tmp_path, capsys) -> None:
    """bench.tracker_sim: the detector's boxes of a rendered session, our tracker on them, scored against the
    session's per-camera truth; --json carries per-camera rows and the pooled figures, --out keeps the files."""
    from pathlib import Path

    from bench import tracker_sim

    smoke = Path(__file__).resolve().parents[1] / "replay_data" / "sessions" / "smoke"
    gt = tracker_sim.read_mot_rows(smoke / "truth" / "cam1.txt")
    assert len(gt.frames) > 50 and gt.scores.max() <= 1.0
    assert tracker_sim.main([str(smoke), "--trackers", "walkout", "walkout+colour", "--repeat", "1", "--json",
                             "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["dets"] for r in out["results"]} == {"cam1.txt", "cam5.txt"}
    assert [p["tracker"] for p in out["pooled"]] == ["walkout", "walkout+colour"]
    for pooled in out["pooled"]:
        assert pooled["cameras"] == 2
        assert 0.2 < pooled["hota"] <= 1.0 and 0.2 < pooled["idf1"] <= 1.0  # the detector finds the two shoppers
    assert read_mot(tmp_path / "dets" / "cam1.txt").frames.size > 0
    assert (tmp_path / "tracks" / "cam1" / "walkout.txt").is_file()
    assert tracker_sim.main([str(tmp_path)]) == 2  # no per-camera truth there: a clear error


def test_features_reach_only_the_tracker_given_them(tmp_path) -> None:
    """bench_file hands a tracker the features named for it, a row per detection line; a count that does not
    match the file's detections is refused before anything runs."""
    gt_path, det_path = small_files(tmp_path)
    n = len(read_mot(det_path).frames)
    seen: dict[str, list] = {}

    def spy(name: str):
        def factory(fps: float):
            def step(boxes, scores, features=None):
                seen.setdefault(name, []).append(None if features is None else features.shape)
                return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
            return step
        return factory

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(tracker_pets.TRACKERS, "a", spy("a"))
        mp.setitem(tracker_pets.TRACKERS, "b", spy("b"))
        bench_file(det_path, read_mot(gt_path), ["a", "b"], repeat=1, features={"a": np.zeros((n, 3))})
        with pytest.raises(ValueError, match=f"{n - 1} feature rows for {n} detections"):
            bench_file(det_path, read_mot(gt_path), ["a"], repeat=1, features={"a": np.zeros((n - 1, 3))})
    assert all(s is None for s in seen["b"])
    shapes = [s for s in seen["a"] if s is not None]
    assert sum(s[0] for s in shapes) == n and all(s[1] == 3 for s in shapes)
