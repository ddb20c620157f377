"""Camera model: the numpy forward model agrees with OpenCV, and point -> pixel -> ray -> point round trips
hold to 1e-6 m for pinhole and fisheye lenses, image corners included."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.camera import Camera

SIZE = (640, 480)

# (name, model, K, dist): mild and strong lenses of both kinds; every image corner is inside the lens's field
CAMERAS = [
    ("pinhole-plain", "pinhole", [[500, 0, 320], [0, 500, 240], [0, 0, 1]], [0, 0, 0, 0, 0]),
    ("pinhole-barrel", "pinhole", [[520, 0, 322], [0, 515, 238], [0, 0, 1]],
     [-0.28, 0.09, 0.0008, -0.0005, -0.012]),
    ("pinhole-rational", "pinhole", [[480, 0, 318], [0, 482, 243], [0, 0, 1]],
     [-0.3, 0.1, 0.001, 0.0005, -0.02, 0.01, 0.005, 0.001]),
    ("fisheye-wide", "fisheye", [[300, 0, 321], [0, 300, 241], [0, 0, 1]], [0.03, -0.01, 0.003, -0.0008]),
    ("fisheye-mild", "fisheye", [[420, 0, 318], [0, 421, 236], [0, 0, 1]], [-0.02, 0.004, 0.0, 0.0]),
]

POSES = [  # (position, target): a ceiling camera looking down at an angle, and one straight down
    ((1.0, 1.5, 3.0), (4.0, 3.0, 0.0)),
    ((3.0, 2.0, 3.2), (3.0, 2.0, 0.0)),
]


def make(model: str, K, dist, pose) -> Camera:
    position, target = pose
    up = (0.0, 1.0, 0.0) if np.allclose(np.subtract(target, position)[:2], 0) else (0.0, 0.0, 1.0)
    return Camera.look_at("cam", model, SIZE, K, dist, position, target, up=up)


def corner_pixels() -> np.ndarray:
    w, h = SIZE
    return np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2], [0, h / 2], [w, h / 2], [w / 2, 0],
                     [w / 2, h], [0.5, 0.5], [w - 0.5, h - 0.5]], float)


@pytest.mark.parametrize("name,model,K,dist", CAMERAS, ids=[c[0] for c in CAMERAS])
def test_forward_model_matches_opencv(name, model, K, dist):
    cam = make(model, K, dist, POSES[0])
    rng = np.random.default_rng(0)
    _, rays = cam.pixel_to_ray(rng.uniform([0, 0], SIZE, (500, 2)))
    X = cam.position + rays * rng.uniform(0.5, 6.0, (500, 1))
    uv, ok = cam.project(X)
    assert ok.all()
    np.testing.assert_allclose(uv, cam.cv_project(X), atol=1e-8)


@pytest.mark.parametrize("pose", POSES, ids=["oblique", "down"])
@pytest.mark.parametrize("name,model,K,dist", CAMERAS, ids=[c[0] for c in CAMERAS])
def test_pixel_ray_point_pixel_at_image_corners(name, model, K, dist, pose):
    """Pixel -> ray -> a point on it -> pixel, at the image corners, edges and centre."""
    cam = make(model, K, dist, pose)
    uv = corner_pixels()
    o, d = cam.pixel_to_ray(uv)
    for s in (0.3, 2.5, 9.0):
        back, _ = cam.project(o + d * s)     # (the inside-the-image mask is fragile exactly on the border)
        np.testing.assert_allclose(back, uv, atol=1e-6)


@pytest.mark.parametrize("pose", POSES, ids=["oblique", "down"])
@pytest.mark.parametrize("name,model,K,dist", CAMERAS, ids=[c[0] for c in CAMERAS])
def test_point_pixel_ray_point(name, model, K, dist, pose):
    """Store points seen anywhere in the image, corners included, come back to within 1e-6 m: point ->
    pixel -> ray -> the ray's crossing of the horizontal plane through the point."""
    cam = make(model, K, dist, pose)
    rng = np.random.default_rng(1)
    uv = np.concatenate([corner_pixels(), rng.uniform([0, 0], SIZE, (400, 2))])
    o, d = cam.pixel_to_ray(uv)
    X = o + d * rng.uniform(0.5, 8.0, (len(uv), 1))
    pixels, _ = cam.project(X)
    assert (cam.to_camera(X)[:, 2] > 0).all()
    np.testing.assert_allclose(pixels, uv, atol=1e-6)
    again, hit = cam.pixel_to_plane(pixels, X[:, 2])
    level = np.abs(d[:, 2]) > 1e-3          # a ray that runs level never crosses a horizontal plane
    assert hit[level].all()
    err = np.linalg.norm(again[level] - X[level], axis=1)
    assert err.max() < 1e-6, f"worst round trip {err.max():.2e} m"


@pytest.mark.parametrize("name,model,K,dist", CAMERAS, ids=[c[0] for c in CAMERAS])
def test_floor_points_round_trip(name, model, K, dist):
    """Floor points seen by the straight-down camera: point -> pixel -> floor point."""
    cam = make(model, K, dist, POSES[1])
    rng = np.random.default_rng(2)
    floor, hit = cam.pixel_to_plane(rng.uniform([0, 0], SIZE, (300, 2)), 0.0)
    assert hit.all()
    pixels, ok = cam.project(floor)
    assert ok.all()
    again, hit = cam.pixel_to_plane(pixels, 0.0)
    assert hit.all()
    assert np.abs(again - floor).max() < 1e-6


@pytest.mark.parametrize("name,model,K,dist", CAMERAS, ids=[c[0] for c in CAMERAS])
def test_rays_are_unit_and_start_at_the_camera(name, model, K, dist):
    cam = make(model, K, dist, POSES[0])
    o, d = cam.pixel_to_ray(corner_pixels())
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(o, np.broadcast_to(cam.position, o.shape), atol=1e-12)


def test_ray_map_matches_pixel_to_ray_at_pixel_centres():
    cam = make("pinhole", *CAMERAS[1][2:], POSES[0])
    rays = cam.ray_map()
    assert rays.shape == (SIZE[1], SIZE[0], 3)
    _, d = cam.pixel_to_ray(np.array([[0.5, 0.5], [SIZE[0] - 0.5, SIZE[1] - 0.5]]))
    np.testing.assert_allclose(rays[0, 0], d[0], atol=1e-12)
    np.testing.assert_allclose(rays[-1, -1], d[1], atol=1e-12)


@pytest.mark.parametrize("name,model,K,dist", CAMERAS, ids=[c[0] for c in CAMERAS])
def test_camera_file_round_trip(tmp_path, name, model, K, dist):
    cam = make(model, K, dist, POSES[0])
    cam.meta = {"rms_px": 0.12, "extrinsic_rms_px": 0.2, "floor_error_cm": 0.4, "calibrated_at": "2026-11-28"}
    path = tmp_path / "cam.yaml"
    cam.save(path)
    back = Camera.from_file(path)
    np.testing.assert_allclose(back.K, cam.K)
    np.testing.assert_allclose(back.dist, cam.dist)
    np.testing.assert_allclose(back.R, cam.R, atol=1e-12)
    np.testing.assert_allclose(back.t, cam.t, atol=1e-12)
    assert back.meta["rms_px"] == 0.12 and back.meta["calibrated_at"] == "2026-11-28"
