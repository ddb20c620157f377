"""walkout.mot: HOTA / CLEAR / identity metrics on hand-made cases with known answers, the MOT text format,
and agreement with motmetrics where it is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walkout.mot import MotFormatError, MotSequence, evaluate, iou_matrix, read_mot, write_mot


def seq(rows: list[tuple[int, int, tuple[float, float, float, float]]]) -> MotSequence:
    """rows of (frame, id, (x1, y1, x2, y2))."""
    if not rows:
        return MotSequence.empty()
    frames, ids, boxes = zip(*rows, strict=True)
    return MotSequence.from_rows(frames, ids, boxes, np.ones(len(rows)))


def walk(gid: int, y: float, frames: range, step: float = 10.0) -> list:
    """A 20 x 40 box walking right by ``step`` px a frame, on row ``y``."""
    return [(f, gid, (step * f, y, step * f + 20, y + 40)) for f in frames]


TWO = walk(1, 0, range(1, 11)) + walk(2, 200, range(1, 11))


def relabel(rows: list, fn) -> list:
    return [(f, fn(f, i), b) for f, i, b in rows]


@pytest.mark.parametrize(
    ("name", "pred", "expect"),
    [
        ("perfect", TWO, {"hota": 1.0, "deta": 1.0, "assa": 1.0, "idf1": 1.0, "mota": 1.0, "id_switches": 0}),
        # ids 1 and 2 swap from frame 6 on: each gt id shares 5 of its 10 frames with each tracker id
        (
            "swap",
            relabel(TWO, lambda f, i: i if f <= 5 else 3 - i),
            {
                "hota": math.sqrt(1 / 3),
                "deta": 1.0,
                "assa": 1 / 3,
                "idf1": 0.5,
                "mota": 0.9,
                "id_switches": 2,
            },
        ),
        # the tracker gives object 1 a new id from frame 6 on (a fragment, no swap)
        (
            "fragment",
            relabel(TWO, lambda f, i: 7 if (i == 1 and f > 5) else i),
            {
                "hota": math.sqrt(0.75),
                "deta": 1.0,
                "assa": 0.75,
                "idf1": 0.75,
                "mota": 0.95,
                "id_switches": 1,
            },
        ),
        # object 1 is missed in frame 5
        (
            "missed frame",
            [r for r in TWO if not (r[0] == 5 and r[1] == 1)],
            {"deta": 19 / 20, "idf1": 2 * 19 / 39, "mota": 19 / 20, "id_switches": 0},
        ),
        # one false box in every frame, far from everything
        (
            "false boxes",
            TWO + [(f, 9, (600, 600, 620, 640)) for f in range(1, 11)],
            {"deta": 20 / 30, "assa": 1.0, "idf1": 2 * 20 / 50, "mota": 0.5, "id_switches": 0},
        ),
        ("nothing", [], {"hota": 0.0, "deta": 0.0, "idf1": 0.0, "mota": 0.0, "id_switches": 0}),
    ],
)
def test_known_answers(name: str, pred: list, expect: dict) -> None:
    m = evaluate(seq(TWO), seq(pred))
    for key, value in expect.items():
        assert getattr(m, key) == pytest.approx(value, abs=1e-9), f"{name}: {key}"


def test_hota_integrates_over_localisation_thresholds() -> None:
    # every box at IoU 0.62: matched for alpha 0.05 .. 0.60 (12 of the 19 thresholds), unmatched above
    gt = seq([(f, 1, (0, 0, 10, 10)) for f in range(1, 6)])
    pred = seq([(f, 5, (0, 0, 10, 6.2)) for f in range(1, 6)])
    m = evaluate(gt, pred)
    assert m.hota == pytest.approx(12 / 19)
    assert m.loca == pytest.approx(
        (12 * 0.62 + 7 * 1.0) / 19
    )  # TrackEval: LocA is 1 at a threshold without TPs
    assert m.idf1 == 1.0 and m.mota == 1.0  # CLEAR and identity match at IoU >= 0.5


def test_clear_threshold_is_half_iou() -> None:
    gt = seq([(1, 1, (0, 0, 10, 10))])
    assert evaluate(gt, seq([(1, 1, (0, 0, 10, 5.1))])).mota == 1.0  # IoU 0.51
    assert evaluate(gt, seq([(1, 1, (0, 0, 10, 4.9))])).mota == -1.0  # IoU 0.49: one miss and one false box


def test_same_id_twice_in_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        evaluate(seq(TWO), seq(relabel(TWO, lambda f, i: 1)))


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], float)
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[1, 25 / 175, 0], [0.25, 0, 0]])
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


# --------------------------------------------------------------------------------------------- MOT text files
def test_read_write_round_trip(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("2,7,10.5,20,30,40,0.9,-1,-1,-1\n\n1,3,0,0,5,6,1\n1,-1,1,2,3,4,0.25\n")
    s = read_mot(path)
    assert s.frames.tolist() == [1, 1, 2]
    assert s.ids.tolist() == [3, -1, 7]
    np.testing.assert_allclose(s.boxes[2], [10.5, 20, 40.5, 60])
    np.testing.assert_allclose(s.scores, [1, 0.25, 0.9])
    write_mot(tmp_path / "u.txt", s)
    back = read_mot(tmp_path / "u.txt")
    np.testing.assert_allclose(back.boxes, s.boxes, atol=0.01)
    assert back.ids.tolist() == s.ids.tolist()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,2,3", "at least 6"),
        ("1,2,a,4,5,6", "not a number"),
        ("0,1,0,0,5,5,1", "frame must be"),
        ("1.5,1,0,0,5,5,1", "frame must be"),
        ("1,1,0,0,0,5,1", "width and height"),
        ("1,1,0,0,5,nan,1", "non-finite"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line: str, reason: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("1,1,0,0,5,5,1\n" + line + "\n")
    with pytest.raises(MotFormatError, match=reason) as err:
        read_mot(path)
    assert f"{path}:2:" in str(err.value)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789,.-eainf \n", max_size=80))
def test_reader_never_crashes(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("mot") / "f.txt"
    path.write_text(text)
    try:
        s = read_mot(path)
    except MotFormatError:
        return
    assert np.isfinite(s.boxes).all() and (s.boxes[:, 2] > s.boxes[:, 0]).all() and (s.frames >= 1).all()


# ----------------------------------------------------------------------------------------- against motmetrics
def random_case(seed: int) -> tuple[MotSequence, MotSequence]:
    """Five walkers over 60 frames; the tracker jitters boxes, drops 10 %, adds false boxes and swaps ids."""
    rng = np.random.default_rng(seed)
    gt_rows, pr_rows = [], []
    start = rng.uniform(0, 400, (5, 2))
    vel = rng.uniform(-6, 6, (5, 2))
    swap_at = rng.integers(10, 50)
    for f in range(1, 61):
        for g in range(5):
            x, y = start[g] + vel[g] * f
            gt_rows.append((f, g + 1, (x, y, x + 30, y + 80)))
            if rng.random() < 0.1:
                continue
            tid = g + 1
            if f > swap_at and g in (0, 1):
                tid = 2 - g  # ids of walkers 1 and 2 swap
            j = rng.normal(0, 3, 4)
            pr_rows.append((f, tid, (x + j[0], y + j[1], x + 30 + j[2], y + 80 + j[3])))
        if rng.random() < 0.3:
            x, y = rng.uniform(0, 500, 2)
            pr_rows.append((f, 100 + f, (x, y, x + 30, y + 80)))
    return seq(gt_rows), seq(pr_rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_motmetrics(seed: int) -> None:
    mm = pytest.importorskip("motmetrics")
    gt, pred = random_case(seed)
    acc = mm.MOTAccumulator(auto_id=False)
    frames_p = dict(pred.per_frame(1, gt.last_frame))
    for f, g in gt.per_frame():
        p = frames_p[f]
        dist = 1.0 - iou_matrix(gt.boxes[g], pred.boxes[p])
        dist[dist > 0.5] = np.nan  # motmetrics' iou_matrix does this, but fails on numpy 2
        acc.update(gt.ids[g].tolist(), pred.ids[p].tolist(), dist, frameid=f)
    ref = mm.metrics.create().compute(
        acc, metrics=["idf1", "mota", "num_switches", "num_false_positives", "num_misses"], name="x"
    )
    ours = evaluate(gt, pred)
    assert ours.idf1 == pytest.approx(float(ref["idf1"].iloc[0]), abs=1e-9)
    assert ours.fp == int(ref["num_false_positives"].iloc[0])
    assert ours.fn == int(ref["num_misses"].iloc[0])
    # CLEAR follows TrackEval: a match is carried over only from the previous frame, where motmetrics carries
    # the last match over any gap, so the two can differ by a switch where a gt box was missed just before
    assert abs(ours.id_switches - int(ref["num_switches"].iloc[0])) <= 1
    assert ours.mota == pytest.approx(float(ref["mota"].iloc[0]), abs=1.5 / len(gt))
