"""The calibration tool end to end through the command line, on the default store's own cameras: ``walkout
calibrate render`` writes the board and floor-marker images the simulator renders for a camera file, then
``intrinsics``, ``extrinsics`` and ``check`` turn them back into a camera file whose figures meet the
calibration issue's bounds (intrinsics RMS < 0.3 px; held-out floor error < 1 cm mean, < 2.5 cm max)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.camera import Camera
from sim.default_store import DEFAULT_DIR
from walkout.cli import main

STORE = DEFAULT_DIR / "store.yaml"
MARKERS = DEFAULT_DIR / "markers.yaml"


def run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    code = main(["calibrate", *args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


@pytest.mark.parametrize("cam_id, model", [("cam1", "pinhole"), ("cam5", "fisheye")])
def test_render_then_calibrate_a_store_camera(tmp_path: Path, capsys: pytest.CaptureFixture, cam_id: str,
                                              model: str) -> None:
    truth = Camera.from_file(DEFAULT_DIR / "cameras" / f"{cam_id}.yaml")
    assert truth.model == model
    code = main(["calibrate", "render", "--camera", str(DEFAULT_DIR / "cameras" / f"{cam_id}.yaml"),
                 "--store", str(STORE), "--markers", str(MARKERS), "--views", "10", "--seed", "3",
                 "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    boards = sorted((tmp_path / "board").glob("*.png"))
    assert len(boards) == 10 and (tmp_path / "board.yaml").is_file()
    assert cv2.imread(str(tmp_path / "floor.png")).shape == (truth.height, truth.width, 3)

    cam_file = tmp_path / f"{cam_id}.yaml"
    intr = run_json(capsys, "intrinsics", "--images", str(tmp_path / "board"), "--board",
                    str(tmp_path / "board.yaml"), "--model", model, "--id", cam_id, "--out", str(cam_file))
    assert intr["rms_px"] < 0.3

    extr = run_json(capsys, "extrinsics", "--camera", str(cam_file), "--image", str(tmp_path / "floor.png"),
                    "--markers", str(MARKERS), "--out", str(cam_file))
    assert len(extr["markers_held_out"]) >= 2
    assert extr["floor_error_mean_cm"] < 1.0 and extr["floor_error_max_cm"] < 2.5
    posed = Camera.from_file(cam_file)
    assert np.linalg.norm(posed.position - truth.position) < 0.02
    assert posed.meta["rms_px"] == pytest.approx(intr["rms_px"], abs=1e-4) and posed.meta["calibrated_at"]

    overlay = tmp_path / "check.png"
    check = run_json(capsys, "check", "--camera", str(cam_file), "--image", str(tmp_path / "floor.png"),
                     "--markers", str(MARKERS), "--store", str(STORE), "--out", str(overlay))
    assert check["rms_px"] < 0.5 and check["floor_error_mean_cm"] < 1.0
    assert cv2.imread(str(overlay)).shape == (truth.height, truth.width, 3)
