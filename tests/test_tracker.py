"""edge.tracker: the update() contract on synthetic walks, determinism, input checks, and the filter maths
against filterpy's own KalmanFilter."""

from __future__ import annotations

import numpy as np
import pytest
from filterpy.kalman import KalmanFilter
from pydantic import ValidationError

from edge.tracker import Detections, Tracker, TrackerConfig, Tracks, _BoxFilter

W, H = 30.0, 80.0


def box(x: float, y: float) -> list[float]:
    return [x, y, x + W, y + H]


def dets(*items: tuple[list[float], float]) -> Detections:
    if not items:
        return Detections(np.zeros((0, 4)), np.zeros(0))
    return Detections(np.array([b for b, _ in items]), np.array([s for _, s in items]))


def id_at(out: Tracks, det_row: int) -> int | None:
    """The id of the track updated with detection ``det_row`` in this frame."""
    hit = np.flatnonzero(out.det_index == det_row)
    return int(out.ids[hit[0]]) if len(hit) else None


def test_straight_walk_keeps_one_id() -> None:
    tr = Tracker()
    ids = set()
    for f in range(40):
        out = tr.update(dets((box(10 + 6 * f, 100 + 2 * f), 0.9)))
        assert len(out) == 1 and out.det_index[0] == 0
        ids.add(int(out.ids[0]))
        # the filtered box stays on the detection
        np.testing.assert_allclose(out.boxes[0], box(10 + 6 * f, 100 + 2 * f), atol=3.0)
    assert ids == {1}
    assert out.scores[0] == pytest.approx(0.9)


def test_crossing_targets_keep_their_ids() -> None:
    """A walks right, B walks left, 40 px lower; their boxes overlap (IoU up to 0.33) while they pass."""
    tr = Tracker()
    first: dict[str, int] = {}
    for f in range(40):
        a, b = box(20 + 8 * f, 100), box(340 - 8 * f, 140)
        out = tr.update(dets((a, 0.9), (b, 0.8)))
        if f >= 1:
            assert len(out) == 2
            got = {"a": id_at(out, 0), "b": id_at(out, 1)}
            first = first or got
            assert got == first, f"frame {f}"
    assert first["a"] != first["b"]


def test_target_lost_for_a_few_frames_gets_its_id_back() -> None:
    cfg = TrackerConfig()
    tr = Tracker(cfg)
    for f in range(10):
        out = tr.update(dets((box(10 + 6 * f, 100), 0.9)))
    tid = int(out.ids[0])
    for f in range(10, 16):  # six frames unseen, still walking
        out = tr.update(dets())
        lost = f - 9
        if lost <= cfg.coast_frames:  # reported at its predicted box, flagged as not updated
            assert out.ids.tolist() == [tid] and out.det_index.tolist() == [-1]
            np.testing.assert_allclose(out.boxes[0], box(10 + 6 * f, 100), atol=3.0)
            assert out.scores[0] == pytest.approx(0.9 * 0.5**lost)
        else:
            assert len(out) == 0
    out = tr.update(dets((box(10 + 6 * 16, 100), 0.9)))
    assert out.ids.tolist() == [tid] and out.det_index.tolist() == [0]


def test_lost_longer_than_the_buffer_gets_a_new_id() -> None:
    tr = Tracker(TrackerConfig(max_lost=5, coast_frames=0))
    for f in range(5):
        out = tr.update(dets((box(100, 100), 0.9)))
    tid = int(out.ids[0])
    for _ in range(6):
        tr.update(dets())
    tr.update(dets((box(100, 100), 0.9)))
    out = tr.update(dets((box(100, 100), 0.9)))
    assert len(out) == 1 and int(out.ids[0]) != tid


def test_low_score_detections_extend_tracks_but_never_start_them() -> None:
    cfg = TrackerConfig()
    assert cfg.low_score <= 0.3 < cfg.high_score
    tr = Tracker(cfg)
    for f in range(5):
        tr.update(dets((box(10 + 5 * f, 100), 0.9)))
    for f in range(5, 25):  # the walker is only weakly detected now; a second person only ever weakly
        out = tr.update(dets((box(10 + 5 * f, 100), 0.3), (box(400, 300), 0.3)))
        assert out.ids.tolist() == [1] and out.det_index.tolist() == [0]
    assert out.scores[0] == pytest.approx(0.3)


def test_a_new_track_needs_min_hits_confident_detections() -> None:
    tr = Tracker(TrackerConfig(min_hits=3))
    for _ in range(5):  # past the start-up frames, where tracks confirm at once
        tr.update(dets((box(10, 10), 0.9)))
    seen = [len(tr.update(dets((box(10, 10), 0.9), (box(300, 300), 0.9)))) for _ in range(4)]
    assert seen == [1, 1, 2, 2]
    # a single confident false detection never shows up
    out = tr.update(dets((box(10, 10), 0.9), (box(300, 300), 0.9), (box(600, 50), 0.95)))
    assert len(out) == 2


def test_id_counters_are_per_instance() -> None:
    a, b = Tracker(), Tracker(TrackerConfig(first_id=100))
    for f in range(3):
        out_a = a.update(dets((box(10, 10), 0.9), (box(200, 10), 0.9)))
    c = Tracker()  # created after `a` handed out ids: starts at 1 all the same
    out_c = c.update(dets((box(10, 10), 0.9)))
    out_b = b.update(dets((box(10, 10), 0.9)))
    assert out_a.ids.tolist() == [1, 2]
    assert out_c.ids.tolist() == [1]
    assert out_b.ids.tolist() == [100]


def random_scene(seed: int, frames: int = 60) -> list[Detections]:
    """Eight walkers with jitter, 15 % misses, false boxes and random scores."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 600, (8, 2))
    vel = rng.uniform(-5, 5, (8, 2))
    out = []
    for f in range(frames):
        pos = start + vel * f + rng.normal(0, 2, (8, 2))
        keep = rng.random(8) > 0.15
        b = np.column_stack([pos, pos + [W, H]])[keep]
        fp = rng.uniform(0, 600, (rng.integers(0, 3), 2))
        b = np.vstack([b, np.column_stack([fp, fp + [W, H]])])
        kps = rng.uniform(0, 1, (len(b), 3, 3))
        out.append(Detections(b, rng.uniform(0.05, 1.0, len(b)), kps))
    return out


def test_deterministic() -> None:
    scene = random_scene(3)
    runs = []
    for _ in range(2):
        tr = Tracker()
        runs.append([tr.update(d) for d in scene])
    assert sum(len(o) for o in runs[0]) > 100
    for x, y in zip(*runs, strict=True):
        assert x.ids.tolist() == y.ids.tolist()
        assert x.det_index.tolist() == y.det_index.tolist()
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.keypoints, y.keypoints)


def test_output_arrays_follow_the_contract() -> None:
    tr = Tracker()
    scene = random_scene(5)
    for d in scene:
        out = tr.update(d)
        m = len(out)
        assert out.ids.shape == (m,) and out.boxes.shape == (m, 4) and out.scores.shape == (m,)
        assert out.det_index.shape == (m,) and out.keypoints.shape == (m, 3, 3)
        assert (np.diff(out.ids) > 0).all()  # ordered by id, unique
        hit = out.det_index >= 0
        assert len(set(out.det_index[hit].tolist())) == hit.sum()  # a detection feeds one track at most
        np.testing.assert_array_equal(out.keypoints[hit], d.keypoints[out.det_index[hit]])
        np.testing.assert_array_equal(out.scores[hit], d.scores[out.det_index[hit]])
        assert (out.keypoints[~hit][:, :, 2] == 0).all()  # coasting: keypoint confidence 0


def test_coasting_keypoints_move_with_the_box() -> None:
    tr = Tracker()
    kp = np.array([[[25.0, 105.0, 0.9], [15.0, 140.0, 0.8], [35.0, 140.0, 0.7]]])
    for f in range(10):
        d = Detections(np.array([box(10 + 6 * f, 100)]), [0.9], kp + [6 * f, 0, 0])
        out = tr.update(d)
    out = tr.update(Detections(np.zeros((0, 4)), [], np.zeros((0, 3, 3))))
    assert out.det_index.tolist() == [-1]
    np.testing.assert_allclose(out.keypoints[0, :, :2], kp[0, :, :2] + [6 * 10, 0], atol=3.0)
    assert (out.keypoints[0, :, 2] == 0).all()


def walk_gap_walk(cfg: TrackerConfig, pace: float, unseen: int) -> tuple[Tracks, list[float]]:
    """Walk at 8 px a frame for 15 frames, then at ``pace`` for ``unseen`` frames undetected and one detected
    frame; returns that frame's tracks and the coasted box's x error over the 3 frames after it."""
    tr = Tracker(cfg)
    x = 10.0
    for _ in range(15):
        x += 8
        tr.update(dets((box(x, 100), 0.9)))
    for _ in range(unseen):
        x += pace
        tr.update(dets())
    x += pace
    found = tr.update(dets((box(x, 100), 0.9)))
    errors = []
    for k in range(1, 4):
        out = tr.update(dets())
        errors.append(abs(out.boxes[0, 0] - (x + pace * k)) if len(out) else np.inf)
    return found, errors


def test_reupdate_repairs_the_velocity_after_a_gap() -> None:
    """The walker slows from 8 to 4 px a frame while unseen; re-found, ORU has learnt the new pace better."""
    errors = {}
    for reupdate in (True, False):
        found, errors[reupdate] = walk_gap_walk(TrackerConfig(reupdate=reupdate, coast_frames=3), 4.0, 4)
        assert found.ids.tolist() == [1] and found.det_index.tolist() == [0]
    assert sum(errors[True]) < sum(errors[False]) - 1.0


def test_a_walker_who_stopped_unseen_is_recovered_from_the_last_observation() -> None:
    """Stopped for 3 unseen frames, the prediction has run 32 px (more than a box width) ahead: no overlap.
    The OCR stage matches the detection with the last observed box instead."""
    found, _ = walk_gap_walk(TrackerConfig(), 0.0, 3)
    assert found.ids.tolist() == [1] and found.det_index.tolist() == [0]
    found, _ = walk_gap_walk(TrackerConfig(recover_max_lost=2), 0.0, 3)
    assert len(found) == 0  # not matched: a new (tentative) track


def test_empty_frames_and_empty_tracker() -> None:
    tr = Tracker()
    out = tr.update(dets())
    assert len(out) == 0 and out.boxes.shape == (0, 4) and out.keypoints is None
    assert tr.frame == 1


@pytest.mark.parametrize(
    ("boxes", "scores", "kps", "reason"),
    [
        ([[0, 0, 10]], [0.5], None, "shape"),
        ([[0, 0, 10, 10]], [0.5, 0.6], None, "scores must have shape"),
        ([[0, 0, 10, np.nan]], [0.5], None, "finite"),
        ([[10, 0, 0, 10]], [0.5], None, "x2 > x1"),
        ([[0, 0, 10, 10]], [1.5], None, "0..1"),
        ([[0, 0, 10, 10]], [-0.1], None, "0..1"),
        ([[0, 0, 10, 10]], [0.5], np.zeros((1, 3)), "keypoints must have shape"),
        ([[0, 0, 10, 10]], [0.5], np.full((1, 3, 3), np.inf), "finite"),
    ],
)
def test_bad_detections_are_refused(boxes, scores, kps, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Detections(np.array(boxes, float), np.array(scores, float), kps)


def test_bad_calls_leave_the_tracker_usable() -> None:
    tr = Tracker()
    tr.update(Detections(np.array([box(0, 0)]), [0.9], np.zeros((1, 3, 3))))
    with pytest.raises(TypeError):
        tr.update(np.array([box(0, 0)]))
    with pytest.raises(ValueError, match="keypoints changed"):
        tr.update(Detections(np.array([box(0, 0)]), [0.9], np.zeros((1, 5, 3))))
    out = tr.update(Detections(np.array([box(1, 0)]), [0.9], np.zeros((1, 3, 3))))
    assert out.ids.tolist() == [1] and tr.frame == 2


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"high_scor": 0.5}, "Extra inputs"),
        ({"high_score": 1.5}, "less than or equal"),
        ({"low_score": 0.8, "high_score": 0.6}, "low_score"),
        ({"coast_frames": 40, "max_lost": 30}, "coast_frames"),
        ({"min_hits": 0}, "greater than or equal"),
    ],
)
def test_bad_config_is_refused(fields: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        TrackerConfig(**fields)


def test_config_fields_have_titles() -> None:
    assert all(f.title for f in TrackerConfig.model_fields.values())


def test_filter_matches_filterpy_reference() -> None:
    """The batched predict/update equal filterpy's KalmanFilter.predict/update (Joseph form) step by step."""
    cfg = TrackerConfig()
    tr = Tracker(cfg)
    rng = np.random.default_rng(0)
    zs = [np.array([100 + 5 * f, 200 - 2 * f, 30, 80]) + rng.normal(0, 1.5, 4) for f in range(25)]
    ref = KalmanFilter(dim_x=8, dim_z=4)
    ref.F = np.eye(8)
    ref.F[:4, 4:] = np.eye(4)
    ref.H = np.eye(4, 8)
    z0 = zs[0]
    ref.x = np.concatenate([z0, np.zeros(4)])
    size = np.array([z0[2], z0[3], z0[2], z0[3]])
    ref.P = np.diag(np.concatenate([2 * cfg.std_position * size, 10 * cfg.std_velocity * size]) ** 2)
    for i, z in enumerate(zs):
        b = np.array([[z[0] - z[2] / 2, z[1] - z[3] / 2, z[0] + z[2] / 2, z[1] + z[3] / 2]])
        out = tr.update(Detections(b, [0.9]))
        if i:
            w, h = ref.x[2] + ref.x[6], ref.x[3] + ref.x[7]  # noise scales with the predicted size
            ref.predict(
                Q=np.diag(
                    np.array(
                        [cfg.std_position * v for v in (w, h, w, h)]
                        + [cfg.std_velocity * v for v in (w, h, w, h)]
                    )
                    ** 2
                )
            )
            ref.update(z, R=np.diag((cfg.std_measurement * np.array([z[2], z[3], z[2], z[3]])) ** 2))
        x = ref.x
        np.testing.assert_allclose(
            out.boxes[0], [x[0] - x[2] / 2, x[1] - x[3] / 2, x[0] + x[2] / 2, x[1] + x[3] / 2], atol=1e-6
        )


def test_specialised_update_equals_filterpy_update() -> None:
    """_BoxFilter.update (used by the re-update over gaps) against filterpy's general KalmanFilter.update."""
    rng = np.random.default_rng(1)
    ours = _BoxFilter(np.array([100.0, 50.0, 30.0, 80.0]), 0.075, 0.04)
    ref = KalmanFilter(dim_x=8, dim_z=4)
    ref.F, ref.H, ref.x, ref.P = ours.F, ours.H, ours.x.copy(), ours.P.copy()
    for _ in range(10):
        q = np.diag(rng.uniform(0.1, 4.0, 8))
        ours.predict(Q=q)
        ref.predict(Q=q)
        z = ours.x[:4] + rng.normal(0, 2, 4)
        r = np.diag(rng.uniform(0.5, 9.0, 4))
        ours.update(z, r)
        ref.update(z, R=r)
        np.testing.assert_allclose(ours.x, ref.x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ours.P, ref.P, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------------------------ appearance
RED, BLUE = [0.0, 10.0, 5.0], [0.0, -10.0, -5.0]  # two shirts' features, in units of their spread


def split_scene(cfg: TrackerConfig, features: bool) -> list[dict[str, int | None]]:
    """A and B stand together (boxes 10 px apart, IoU 0.5), then step apart past each other: A goes right, B
    left, 4 px each the first frame and 12 px after.  Each frame, the id of the track that took A's and B's
    detection (listed B first, so the order does not help)."""
    tr = Tracker(cfg)
    out = []
    for f in range(16):
        step = 0 if f < 10 else 4 + 12 * (f - 10)
        a, b = box(100 + step, 100), box(110 - step, 100)
        feats = np.array([BLUE, RED]) if features else None
        got = tr.update(Detections(np.array([b, a]), np.array([0.9, 0.9]), features=feats))
        out.append({"a": id_at(got, 1), "b": id_at(got, 0)})
    return out


def test_a_split_swaps_ids_by_position_alone_but_not_with_colours() -> None:
    """Where two people part, their boxes' overlap points the wrong way for a frame (each prediction lies
    nearer the other's detection): position alone swaps them; their shirts' colours keep each id."""
    settled = split_scene(TrackerConfig(), features=False)[9]
    assert split_scene(TrackerConfig(), features=False)[-1] == {"a": settled["b"], "b": settled["a"]}
    with_colour = split_scene(TrackerConfig(), features=True)
    assert with_colour[-1] == with_colour[9] and with_colour[9]["a"] != with_colour[9]["b"]
    # features switched off in the config: the same as none given
    assert split_scene(TrackerConfig(appearance_range=0.0), features=True) == split_scene(
        TrackerConfig(), features=False)


@pytest.mark.parametrize("veto", [0.0, 25.0])
def test_an_odd_colour_now_and_then_does_not_split_a_lone_walker(veto: float) -> None:
    """Every fifth frame the chest patch catches something else (a far colour) or nothing (NaN): without a veto
    the walker keeps one id; with one, the odd frames are lost, but the track goes on."""
    tr = Tracker(TrackerConfig(appearance_veto=veto))
    ids, matched = set(), 0
    for f in range(40):
        feat = [[0.0, 30.0, 30.0]] if f % 10 == 5 else [[np.nan] * 3] if f % 10 == 0 else [RED]
        out = tr.update(Detections(np.array([box(10 + 6 * f, 100)]), np.array([0.9]), features=np.array(feat)))
        ids |= set(out.ids.tolist())
        matched += int((out.det_index == 0).sum())
    assert ids == {1}
    assert matched == (40 if veto == 0 else 36)


FLOOR = [0.0, 30.0, 30.0]  # a patch that caught the floor: like nobody here


@pytest.mark.parametrize(("odd", "odd_frames", "split_frames", "ids"), [
    (BLUE, 2, 5, [1] * 9),  # fewer odd frames than it takes: one id, the odd colour not learnt
    (BLUE, 6, 5, [1, 1, 1, 1, 1, 1, 1, 3, 3]),  # the fifth blue frame ends the track, blue gets a new id
    (BLUE, 6, 1, [1, 1, 1, 3, 3, 3, 3, 3, 3]),
    (FLOOR, 6, 5, [1] * 9),  # far from its own colour but like nobody the camera knows: no split
])
def test_a_track_that_goes_on_with_someone_else_is_split(odd: list[float], odd_frames: int, split_frames: int,
                                                         ids: list[int]) -> None:
    """A red walker (track 1) and a blue one (track 2, further on) are in view; then the blue one stands where
    the red one was, the red one hidden, and the camera's tracker slides track 1 onto blue.  After
    ``appearance_split_frames`` frames in a row that look like blue, track 1 ends and the person on it is a new
    track, so nothing downstream takes them for the red one."""
    tr = Tracker(TrackerConfig(appearance_split=25.0, appearance_split_frames=split_frames))
    got = []
    for f in range(9):
        here = box(10 + 3 * f, 100)
        if f < 3:  # both in view, apart
            out = tr.update(Detections(np.array([here, box(300, 100)]), np.array([0.9, 0.9]),
                                       features=np.array([RED, BLUE])))
        else:
            feat = odd if f < 3 + odd_frames else RED
            out = tr.update(Detections(np.array([here]), np.array([0.9]), features=np.array([feat])))
        got.append(id_at(out, 0))
    assert got == ids
    split = ids[-1] != 1
    assert (1 in [t.id for t in tr._tracks]) is not split  # a split track is gone, not left to coast
    if not split and odd is BLUE:  # colours that looked like someone else did not move its running mean
        np.testing.assert_allclose(tr._tracks[0].feature, RED)


def test_the_track_colour_is_a_running_mean() -> None:
    """One odd colour moves a track's feature by (1 - momentum) of the difference, not all the way."""
    tr = Tracker(TrackerConfig(appearance_momentum=0.8))
    for f, feat in enumerate([RED, RED, [0.0, 0.0, 0.0]]):
        tr.update(Detections(np.array([box(10 + 2 * f, 100)]), np.array([0.9]), features=np.array([feat])))
    np.testing.assert_allclose(tr._tracks[0].feature, [0.0, 8.0, 4.0])


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        (np.zeros((2, 3)), "features must have shape"),
        (np.zeros(3), "features must have shape"),
        (np.array([[np.inf, 0.0, 0.0]]), "finite or NaN"),
    ],
)
def test_bad_features_are_refused(features: np.ndarray, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Detections(np.array([box(0, 0)]), np.array([0.5]), features=features)


def test_features_changing_length_are_refused() -> None:
    tr = Tracker()
    tr.update(Detections(np.array([box(0, 0)]), [0.9], features=np.zeros((1, 3))))
    with pytest.raises(ValueError, match="features changed"):
        tr.update(Detections(np.array([box(1, 0)]), [0.9], features=np.zeros((1, 2))))
    out = tr.update(Detections(np.array([box(1, 0)]), [0.9], features=np.zeros((1, 3))))
    assert out.ids.tolist() == [1] and tr.frame == 2
