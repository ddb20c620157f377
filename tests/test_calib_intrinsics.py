"""Intrinsic calibration on simulated ChArUco images with known truth, for pinhole and fisheye lenses, and
its refusals (no board, too few views) through the library and the ``walkout calibrate intrinsics`` verb."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.camera import Camera
from calibration.intrinsics import (
    CV_TO_MODEL,
    BoardSpec,
    CalibrationError,
    calibrate_images,
    calibrate_views,
    detect_board,
)
from sim.targets import board_poses, render_board
from walkout.cli import main

SIZE = (640, 480)
LENSES = {
    "pinhole": ([[520, 0, 322], [0, 515, 238], [0, 0, 1]], [-0.28, 0.09, 0.0008, -0.0005, -0.012]),
    "fisheye": ([[300, 0, 321], [0, 300, 241], [0, 0, 1]], [0.03, -0.01, 0.003, -0.0008]),
}
SPEC = BoardSpec()
VIEWS = 10


def lens(model: str) -> Camera:
    K, dist = LENSES[model]
    return Camera("truth", model, *SIZE, K, dist, np.eye(3), np.zeros(3))


@pytest.fixture(scope="module", params=sorted(LENSES))
def board_set(request, tmp_path_factory):
    """Rendered board images (written to a folder) and their poses, per lens model."""
    model = request.param
    cam = lens(model)
    rng = np.random.default_rng(7)
    poses = board_poses(cam, SPEC, VIEWS, rng)
    folder = tmp_path_factory.mktemp(f"boards_{model}")
    for k, (rv, tv) in enumerate(poses):
        cv2.imwrite(str(folder / f"b{k:02d}.png"), render_board(cam, SPEC, rv, tv, rng))
    return model, cam, poses, folder


def test_rendered_corners_are_where_the_model_puts_them(board_set):
    """The renderer and the detector agree with the camera model to a small fraction of a pixel."""
    model, cam, poses, folder = board_set
    errs = []
    for k, (rv, tv) in enumerate(poses[:4]):
        view = detect_board(cv2.imread(str(folder / f"b{k:02d}.png"), cv2.IMREAD_GRAYSCALE), SPEC)
        assert view is not None and len(view.ids) >= 12
        posed = Camera.from_pose("t", model, SIZE, cam.K, cam.dist, rv, tv)
        truth, _ = posed.project(view.object_points)
        errs.append(view.image_points + CV_TO_MODEL - truth)
    e = np.concatenate(errs)
    assert np.sqrt(np.mean(np.sum(e ** 2, axis=1))) < 0.3
    assert np.abs(e.mean(axis=0)).max() < 0.05          # no systematic shift (pixel-convention check)


def test_intrinsics_from_simulated_boards(board_set):
    model, cam, _, folder = board_set
    result = calibrate_images(sorted(folder.glob("*.png")), SPEC, model, "cam")
    assert len(result.views) == VIEWS
    assert result.rms_px < 0.3, f"{model}: RMS {result.rms_px:.3f} px"
    got = result.camera
    assert got.model == model and got.size == SIZE
    # ten views pin the focal lengths to well under 1 %; the principal point and the distortion trade off
    # against each other by a pixel or two, so these bounds are a little loose
    np.testing.assert_allclose(got.K[[0, 1], [0, 1]], cam.K[[0, 1], [0, 1]], rtol=0.01)
    np.testing.assert_allclose(got.K[:2, 2], cam.K[:2, 2], atol=3.0)
    u, v = np.meshgrid(np.linspace(120, 520, 9), np.linspace(90, 390, 7))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    _, rays = cam.pixel_to_ray(uv)
    back, _ = got.project(rays * 2.0)
    assert np.linalg.norm(back - uv, axis=1).max() < 3.0
    assert got.meta["rms_px"] == pytest.approx(result.rms_px)


def test_cli_writes_the_camera_file(board_set, tmp_path, capsys):
    model, _, _, folder = board_set
    out = tmp_path / "cam.yaml"
    code = main(["calibrate", "intrinsics", "--images", str(folder), "--model", model, "--out", str(out),
                 "--json"])
    assert code == 0
    cam = Camera.from_file(out)
    assert cam.id == "cam" and cam.model == model and cam.meta["rms_px"] < 0.3
    assert '"rms_px"' in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- refusals
def test_board_not_found(tmp_path, capsys):
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"blank{k}.png"), np.full((480, 640), 128, np.uint8))
    with pytest.raises(CalibrationError, match="board not found"):
        calibrate_images(sorted(tmp_path.glob("*.png")), SPEC, "pinhole")
    out = tmp_path / "out.yaml"
    assert main(["calibrate", "intrinsics", "--images", str(tmp_path / "*.png"), "--out", str(out)]) == 1
    assert "board not found" in capsys.readouterr().err
    assert not out.exists()


def test_too_few_views(board_set, tmp_path, capsys):
    model, _, _, folder = board_set
    few = sorted(folder.glob("*.png"))[:3]
    with pytest.raises(CalibrationError, match="too few usable board views: 3"):
        calibrate_images(few, SPEC, model)
    out = tmp_path / "out.yaml"
    args = ["calibrate", "intrinsics", "--images", str(folder / "b0[0-2].png"), "--model", model,
            "--out", str(out)]
    assert main(args) == 1
    assert "too few usable board views" in capsys.readouterr().err
    assert not out.exists()


def test_too_few_corners_per_view_are_skipped():
    views = [detect_board(render_board(lens("pinhole"), SPEC, rv, tv), SPEC, str(k))
             for k, (rv, tv) in enumerate(board_poses(lens("pinhole"), SPEC, 2, np.random.default_rng(3)))]
    for v in views:
        v.ids, v.object_points, v.image_points = v.ids[:5], v.object_points[:5], v.image_points[:5]
    with pytest.raises(CalibrationError, match="at least 8 corners"):
        calibrate_views(views, SIZE, "pinhole", min_views=2)


def test_wrong_board_spec_finds_nothing(board_set):
    _, _, _, folder = board_set
    other = BoardSpec(dictionary="DICT_6X6_250")
    with pytest.raises(CalibrationError, match="board not found"):
        calibrate_images(sorted(folder.glob("*.png"))[:2], other, "pinhole")


@pytest.mark.parametrize("fields,message", [
    ({"marker_m": 0.05}, "smaller than square_m"),
    ({"dictionary": "DICT_NOPE"}, "unknown ArUco dictionary"),
    ({"squares_x": 30, "squares_y": 30, "dictionary": "DICT_4X4_50"}, "too few markers"),
])
def test_bad_board_spec(fields, message):
    with pytest.raises(ValueError, match=message):
        BoardSpec(**fields)


def test_mixed_image_sizes_are_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((480, 640), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((240, 320), np.uint8))
    with pytest.raises(CalibrationError, match="differs"):
        calibrate_images([Path(tmp_path / "a.png"), Path(tmp_path / "b.png")], SPEC, "pinhole")
