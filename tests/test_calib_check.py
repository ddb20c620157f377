"""``walkout calibrate check``: figures from a right and a wrong calibration, and the overlay a person looks
at (markers, projected corners, floor grid, lane boxes)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from calibration.camera import Camera
from calibration.check import check_image, overlay
from calibration.intrinsics import CalibrationError
from calibration.markers import grid_layout, save_layout
from sim.targets import render_floor
from walkout.cli import main

LAYOUT = grid_layout((8, 6), spacing=1.0, marker_size=0.3, margin=0.5)
K = [[420, 0, 318], [0, 421, 236], [0, 0, 1]]
DIST = [-0.02, 0.004, 0.0, 0.0]


def camera(position=(1.5, 1.0, 3.0)) -> Camera:
    return Camera.look_at("cam", "fisheye", (640, 480), K, DIST, position, (4.0, 3.0, 0.0), up=(0, 0, 1))


@pytest.fixture(scope="module")
def image():
    return render_floor(camera(), LAYOUT, np.random.default_rng(5))


def store_dict() -> dict:
    lanes = [{"id": f"l{i}", "sku": "a",
              "box": {"min": [2.0 + 0.4 * i, 4.6, 0.4], "max": [2.4 + 0.4 * i, 5.0, 0.8]}} for i in range(5)]
    return {"store": {"id": "s", "size": [8, 6]},
            "catalogue": [{"sku": "a", "name": "A", "price": 250, "weight_g": 300}],
            "shelf_units": [{"id": "u", "shelves": [{"id": "s1", "lanes": lanes}]}],
            "gates": [{"id": "g", "region": {"min": [0, 0], "max": [1, 1]}}],
            "exits": [{"id": "e", "region": {"min": [7, 0], "max": [8, 1]}}]}


def test_right_calibration_checks_out(image):
    report, _ = check_image(camera(), image, LAYOUT)
    assert len(report.ids) >= 10
    assert report.rms_px < 0.3
    assert report.floor_mean_cm < 1.0 and report.floor_max_cm < 2.5
    assert set(report.per_marker) == set(report.ids)


def test_wrong_calibration_shows(image):
    """A camera file 10 cm off: the figures say so."""
    report, _ = check_image(camera((1.6, 1.0, 3.0)), image, LAYOUT)
    assert report.rms_px > 3.0
    assert report.floor_mean_cm > 5.0


def test_only_the_requested_ids(image):
    report, _ = check_image(camera(), image, LAYOUT, ids=[20, 21, 999])
    assert report.ids == [20, 21]
    with pytest.raises(CalibrationError, match="no markers of the requested ids"):
        check_image(camera(), image, LAYOUT, ids=[999])


def test_overlay_draws_grid_markers_and_lanes(image):
    cam = camera()
    report, detection = check_image(cam, image, LAYOUT)
    from calibration.store import store_from_dict

    plain = overlay(image, cam, LAYOUT, detection, report)
    with_store = overlay(image, cam, LAYOUT, detection, report, store_from_dict(store_dict()))
    assert plain.shape == (480, 640, 3)
    b, g, r = (plain[..., k].astype(int) for k in range(3))
    assert ((g > 180) & (r < 80) & (b < 80)).sum() > 200          # green marker outlines
    assert ((r > 200) & (g < 60) & (b < 60)).sum() > 100           # red projected corners
    def yellow(im: np.ndarray) -> int:
        return int(((im[..., 2] > 200) & (im[..., 1] > 170) & (im[..., 0] < 60)).sum())

    assert yellow(with_store) > yellow(plain) + 200                # the lanes' boxes
    # the projected corners sit on the detected ones: red crosses centred on green corners
    uv, _ = cam.project(np.array([m.corners() for m in LAYOUT.markers if m.id in report.ids]).reshape(-1, 3))
    assert np.abs(uv.reshape(-1, 4, 2) - detection.select(report.ids).model_corners()).max() < 1.0


def test_cli_check_writes_overlay(image, tmp_path, capsys):
    cam = camera()
    cam.save(tmp_path / "cam.yaml")
    cv2.imwrite(str(tmp_path / "floor.png"), image)
    save_layout(LAYOUT, tmp_path / "markers.yaml")
    (tmp_path / "store.yaml").write_text(yaml.safe_dump(store_dict()))
    out = tmp_path / "overlay.png"
    code = main(["calibrate", "check", "--camera", str(tmp_path / "cam.yaml"), "--image",
                 str(tmp_path / "floor.png"), "--markers", str(tmp_path / "markers.yaml"),
                 "--store", str(tmp_path / "store.yaml"), "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    assert cv2.imread(str(out)).shape == (480, 640, 3)
    printed = capsys.readouterr().out
    assert '"floor_error_mean_cm"' in printed and '"rms_px"' in printed


def test_cli_check_refuses_an_image_without_markers(tmp_path, capsys):
    camera().save(tmp_path / "cam.yaml")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((480, 640), 100, np.uint8))
    save_layout(LAYOUT, tmp_path / "markers.yaml")
    out = tmp_path / "overlay.png"
    code = main(["calibrate", "check", "--camera", str(tmp_path / "cam.yaml"), "--image",
                 str(tmp_path / "blank.png"), "--markers", str(tmp_path / "markers.yaml"), "--out", str(out)])
    assert code == 1
    assert "no markers" in capsys.readouterr().err
    assert not out.exists()


def test_cli_bad_marker_file_names_the_field(tmp_path, capsys):
    camera().save(tmp_path / "cam.yaml")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((480, 640), 100, np.uint8))
    (tmp_path / "markers.yaml").write_text("markers:\n  - {id: 3, center: [1, 2], size: 5.0}\n")
    code = main(["calibrate", "check", "--camera", str(tmp_path / "cam.yaml"), "--image",
                 str(tmp_path / "blank.png"), "--markers", str(tmp_path / "markers.yaml"), "--out",
                 str(tmp_path / "o.png")])
    assert code == 1
    err = capsys.readouterr().err
    assert "markers.yaml" in err and "markers[0].size" in err
