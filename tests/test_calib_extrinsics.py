"""Extrinsic calibration from floor markers on simulated images with known truth (pinhole and fisheye), the
whole chain from board images, and the refusals: too few markers, markers on a line, a camera below the
floor, a wrong marker file; no camera file is written for any of them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.camera import Camera
from calibration.extrinsics import (
    MarkerDetection,
    calibrate_image,
    detect_markers,
    lens_of,
    refine_corners,
    solve_extrinsics,
    split_holdout,
)
from calibration.intrinsics import CV_TO_MODEL, BoardSpec, CalibrationError, calibrate_images
from calibration.markers import FloorMarker, MarkerLayout, grid_layout, save_layout
from sim.targets import board_poses, render_board, render_floor
from walkout.cli import main

SIZE = (640, 480)
LENSES = {
    "pinhole": ([[520, 0, 322], [0, 515, 238], [0, 0, 1]], [-0.28, 0.09, 0.0008, -0.0005, -0.012]),
    "fisheye": ([[300, 0, 321], [0, 300, 241], [0, 0, 1]], [0.03, -0.01, 0.003, -0.0008]),
}
POSES = {  # ceiling cameras: position, target
    "corner": ((1.0, 1.0, 3.0), (4.0, 3.0, 0.0)),
    "centre": ((4.0, 3.0, 3.2), (4.5, 3.5, 0.0)),
}
LAYOUT = grid_layout((8, 6), spacing=1.0, marker_size=0.3, margin=0.5)


def truth(model: str, pose: str) -> Camera:
    K, dist = LENSES[model]
    position, target = POSES[pose]
    return Camera.look_at(f"{model}-{pose}", model, SIZE, K, dist, position, target, up=(0, 0, 1))


@pytest.fixture(scope="module")
def floor_images():
    """Rendered floor views, one per lens and pose (rendering is the slow part: share it).  Seeded by the
    lens's and pose's places, not ``hash()``, which differs between runs (PYTHONHASHSEED)."""
    return {(m, p): render_floor(truth(m, p), LAYOUT, np.random.default_rng([i, j]))
            for i, m in enumerate(sorted(LENSES)) for j, p in enumerate(sorted(POSES))}


@pytest.mark.parametrize("pose", sorted(POSES))
@pytest.mark.parametrize("model", sorted(LENSES))
def test_floor_error_of_held_out_markers(floor_images, model, pose):
    cam = truth(model, pose)
    result = calibrate_image(lens_of(cam), floor_images[(model, pose)], LAYOUT)
    assert len(result.held_out_ids) >= 2 and not set(result.held_out_ids) & set(result.used_ids)
    assert result.floor_mean_cm < 1.0, result.summary()
    assert result.floor_max_cm < 2.5, result.summary()
    assert result.rms_px < 0.5 and result.holdout_rms_px < 0.5
    assert np.linalg.norm(result.camera.position - cam.position) < 0.02
    assert result.camera.meta["floor_error_cm"] == pytest.approx(result.floor_mean_cm)


@pytest.mark.parametrize("model", sorted(LENSES))
def test_refined_corners_beat_the_detector(floor_images, model):
    """Edge-line corners are what make the floor error small: ArUco's own are off by up to 1-2 px on small,
    slanted markers."""
    cam = truth(model, "corner")
    image = floor_images[(model, "corner")]
    raw = detect_markers(image)
    known = {m.id: m for m in LAYOUT.markers}
    want = np.stack([cam.project(known[i].corners())[0] for i in raw.ids])
    err_raw = np.linalg.norm(raw.model_corners() - want, axis=2)
    err_ref = np.linalg.norm(refine_corners(image, raw, cam).model_corners() - want, axis=2)
    assert np.sqrt(np.mean(err_ref ** 2)) < 0.25
    assert np.sqrt(np.mean(err_ref ** 2)) < 0.5 * np.sqrt(np.mean(err_raw ** 2))


def test_cli_writes_pose_and_figures(floor_images, tmp_path, capsys):
    cam = truth("pinhole", "corner")
    lens_of(cam).save(tmp_path / "cam.yaml")
    cv2.imwrite(str(tmp_path / "floor.png"), floor_images[("pinhole", "corner")])
    save_layout(LAYOUT, tmp_path / "markers.yaml")
    out = tmp_path / "posed.yaml"
    code = main(["calibrate", "extrinsics", "--camera", str(tmp_path / "cam.yaml"), "--image",
                 str(tmp_path / "floor.png"), "--markers", str(tmp_path / "markers.yaml"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    posed = Camera.from_file(out)
    assert np.linalg.norm(posed.position - cam.position) < 0.02
    assert posed.meta["extrinsic_rms_px"] < 0.5 and posed.meta["floor_error_cm"] < 1.0
    assert "floor_error_mean_cm=" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(LENSES))
def test_whole_chain_from_board_images(floor_images, model, tmp_path):
    """Intrinsics from simulated ChArUco views, then the pose from the floor: the floor error holds."""
    cam = truth(model, "corner")
    spec = BoardSpec()
    rng = np.random.default_rng(11)
    paths = []
    for k, (rv, tv) in enumerate(board_poses(lens_of(cam), spec, 12, rng)):
        paths.append(tmp_path / f"b{k}.png")
        cv2.imwrite(str(paths[-1]), render_board(lens_of(cam), spec, rv, tv, rng))
    intrinsics = calibrate_images(paths, spec, model, "cam")
    assert intrinsics.rms_px < 0.3
    result = calibrate_image(intrinsics.camera, floor_images[(model, "corner")], LAYOUT)
    assert result.floor_mean_cm < 1.0, result.summary()
    assert result.floor_max_cm < 2.5, result.summary()


# ---------------------------------------------------------------------------------------------- refusals
def synthetic(cam: Camera, layout: MarkerLayout) -> MarkerDetection:
    """Exact detections of every marker the camera sees (OpenCV pixel convention)."""
    ids, corners = [], []
    for m in layout.markers:
        uv, ok = cam.project(m.corners())
        if ok.all():
            ids.append(m.id)
            corners.append(uv - CV_TO_MODEL)
    return MarkerDetection(np.array(ids, int), np.array(corners, float).reshape(-1, 4, 2))


def test_too_few_markers(floor_images, tmp_path, capsys):
    cam = truth("pinhole", "centre")
    few = MarkerLayout(markers=[m for m in LAYOUT.markers if m.id in (27, 28)])
    with pytest.raises(CalibrationError, match="too few floor markers: found 2"):
        calibrate_image(lens_of(cam), floor_images[("pinhole", "centre")], few)
    lens_of(cam).save(tmp_path / "cam.yaml")
    cv2.imwrite(str(tmp_path / "floor.png"), floor_images[("pinhole", "centre")])
    save_layout(few, tmp_path / "markers.yaml")
    out = tmp_path / "out.yaml"
    args = ["calibrate", "extrinsics", "--camera", str(tmp_path / "cam.yaml"), "--image",
            str(tmp_path / "floor.png"), "--markers", str(tmp_path / "markers.yaml"), "--out", str(out)]
    assert main(args) == 1
    assert "too few floor markers" in capsys.readouterr().err
    assert not out.exists()


def test_no_markers_in_the_image(tmp_path, capsys):
    cam = truth("pinhole", "centre")
    with pytest.raises(CalibrationError, match="no floor markers found"):
        calibrate_image(lens_of(cam), np.full((480, 640), 120, np.uint8), LAYOUT)


def test_markers_on_one_line_are_degenerate():
    line = MarkerLayout(markers=[FloorMarker(id=i, center=(1.0 + 0.8 * i, 3.0), size=0.3) for i in range(7)])
    cam = truth("pinhole", "centre")
    det = synthetic(cam, line)
    assert len(det.ids) >= 4
    with pytest.raises(CalibrationError, match=r"degenerate marker layout.*one line"):
        solve_extrinsics(lens_of(cam), det, line)


def test_camera_below_the_floor_is_refused():
    """A camera under a glass floor sees the markers mirrored; its pose is valid geometry but not a ceiling
    camera's, and a marker file that is mirrored gives the same: refuse it."""
    K, dist = LENSES["pinhole"]
    below = Camera.look_at("below", "pinhole", SIZE, K, dist, (4.0, 3.0, -3.0), (4.2, 3.3, 0.0), up=(0, 0, 1))
    det = synthetic(below, LAYOUT)
    assert len(det.ids) >= 8
    with pytest.raises(CalibrationError, match="below the floor"):
        solve_extrinsics(lens_of(below), det, LAYOUT)


def test_wrong_marker_positions_fail_the_fit(floor_images):
    """Marker ids shuffled in the marker file: no pose fits, so no file."""
    cam = truth("pinhole", "corner")
    rng = np.random.default_rng(0)
    ids = [m.id for m in LAYOUT.markers]
    shuffled = rng.permutation(ids)
    wrong = MarkerLayout(markers=[m.model_copy(update={"id": int(j)})
                                  for m, j in zip(LAYOUT.markers, shuffled, strict=True)])
    refused = "pose fit failed|behind the camera|in front of the camera|below"
    with pytest.raises(CalibrationError, match=refused):
        calibrate_image(lens_of(cam), floor_images[("pinhole", "corner")], wrong)


def test_image_size_must_match_the_camera(floor_images):
    cam = truth("pinhole", "corner")
    small = cv2.resize(floor_images[("pinhole", "corner")], (320, 240))
    with pytest.raises(CalibrationError, match="differs from the camera"):
        calibrate_image(lens_of(cam), small, LAYOUT)


@pytest.mark.parametrize("n,fraction,fit,held", [
    (4, 0.25, 3, 1),
    (3, 0.25, 3, 0),      # only enough to fit: nothing held out
    (12, 0.25, 9, 3),
    (10, 0.0, 10, 0),
    (20, 0.5, 10, 10),
])
def test_split_holdout(n, fraction, fit, held):
    f, h = split_holdout(list(range(n)), fraction, 3)
    assert (len(f), len(h)) == (fit, held)
    assert sorted(f + h) == list(range(n))
    if held >= 2:
        assert h[0] > 0 and h[-1] < n - 1          # spread inside the range, not bunched at an end
