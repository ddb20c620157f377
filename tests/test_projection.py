"""Floor projection from the head ray, for pinhole and fisheye ceiling cameras."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.camera import Camera
from edge.projection import ProjectionConfig, floor_positions, keypoint_rays

CAMS = [
    Camera.look_at("p", "pinhole", (640, 480), [[330, 0, 320], [0, 330, 240], [0, 0, 1]], [-0.2, 0.05, 0, 0, 0],
                   (3, 3, 3.2), (3.4, 3.4, 0)),
    Camera.look_at("f", "fisheye", (640, 480), [[260, 0, 320], [0, 260, 240], [0, 0, 1]], [0.03, -0.01, 0, 0],
                   (6, 4, 3.3), (6, 4.01, 0)),
]


@pytest.mark.parametrize("cam", CAMS, ids=lambda c: c.model)
def test_head_at_assumed_height_lands_on_its_floor_point(cam):
    rng = np.random.default_rng(1)
    xy = cam.position[:2] + rng.uniform(-2, 2, (50, 2))
    heads = np.c_[xy, np.full(50, ProjectionConfig.head_height_m)]
    uv, ok = cam.project(heads)
    p = floor_positions(cam, np.c_[uv - 20, uv + 20][ok], np.c_[uv, np.ones(50)][ok])
    assert p.ok.all()
    np.testing.assert_allclose(p.floor, xy[ok], atol=1e-6)


@pytest.mark.parametrize("cam", CAMS, ids=lambda c: c.model)
def test_covariance_grows_off_axis_and_is_valid(cam):
    below = np.r_[cam.position[:2], 1.6]
    far = np.r_[cam.position[:2] + [2.5, 0.5], 1.6]
    uv, ok = cam.project(np.stack([below, far]))
    assert ok.all()
    p = floor_positions(cam, np.c_[uv - 20, uv + 20], np.c_[uv, [1.0, 1.0]])
    xx, xy, yy = p.cov.T
    assert (xx > 0).all() and (yy > 0).all() and (xy ** 2 <= xx * yy + 1e-12).all()
    assert xx[1] + yy[1] > xx[0] + yy[0]


def test_without_head_the_box_centre_is_used_with_a_wider_covariance():
    cam = CAMS[0]
    uv, _ = cam.project(np.array([[3.5, 3.2, 1.0]]))
    box = np.c_[uv - 30, uv + 30]
    no_head = floor_positions(cam, box, np.array([[0.0, 0.0, 0.0]]))
    with_head = floor_positions(cam, box, np.c_[uv, [1.0]])
    np.testing.assert_allclose(no_head.floor[0], [3.5, 3.2], atol=1e-6)
    assert no_head.cov[0, 0] > with_head.cov[0, 0]


def test_wrist_rays_pass_through_the_wrist():
    cam = CAMS[1]
    w = np.array([[6.5, 4.4, 1.0], [5.2, 3.1, 0.8]])
    uv, ok = cam.project(w)
    assert ok.all()
    o, d = keypoint_rays(cam, uv)
    s = np.linalg.norm(w - o, axis=1)
    np.testing.assert_allclose(o + d * s[:, None], w, atol=1e-6)


def _lying_person(cam: Camera, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box (1, 4) and the pixels of the feet, hips and head (3, 2) of an upright person at ``xy``."""
    uv, ok = cam.project(np.array([[*xy, z] for z in (0.1, 0.9, ProjectionConfig.head_height_m)]))
    assert ok.all()
    return np.r_[uv.min(0) - 5, uv.max(0) + 5][None], uv


@pytest.mark.parametrize("offset", [(3.5, 1.0), (-2.0, 2.8), (-3.3, -0.8)])
def test_a_fisheye_head_at_the_feet_end_is_not_used(offset):
    """Near a fisheye's rim a person lies across the image; a head keypoint put at the feet's end would land
    metres off at head height.  It disagrees with the box, so the box's floor point is used instead."""
    cam = CAMS[1]
    xy = cam.position[:2] + np.array(offset)
    box, uv = _lying_person(cam, xy)
    right = floor_positions(cam, box, np.c_[uv[2:], [1.0]])
    wrong = floor_positions(cam, box, np.c_[uv[:1], [1.0]])
    unchecked = floor_positions(cam, box, np.c_[uv[:1], [1.0]], ProjectionConfig(head_box_max_m=()))
    assert right.head.tolist() == [True] and wrong.head.tolist() == [False]
    np.testing.assert_allclose(right.floor[0], xy, atol=1e-6)
    assert np.hypot(*(wrong.floor[0] - xy)) < 0.6
    assert np.hypot(*(unchecked.floor[0] - xy)) > 1.5
    assert wrong.cov[0, 0] > right.cov[0, 0]


def test_pinhole_heads_are_not_checked_against_the_box():
    """An oblique pinhole view spreads a box along the line of sight (true heads are up to 2 m from the box
    centre's floor point), so no check applies there."""
    cam = CAMS[0]
    box, uv = _lying_person(cam, np.array([5.5, 5.0]))
    assert floor_positions(cam, box, np.c_[uv[:1], [1.0]]).head.tolist() == [True]
