"""Store geometry: point-in-box, point and ray distances to yawed boxes (exact, checked against brute force
and by property tests), floor regions, and the store's regions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.geometry import (
    Boxes,
    FloorRegions,
    StoreGeometry,
    enclose,
    floor_box_distance,
    point_box_distance,
    point_region_distance,
    points_in_boxes,
    points_in_regions,
    ray_box_distance,
)
from calibration.store import Box, store_from_dict

UNIT = Boxes(np.zeros((1, 3)), np.full((1, 3), 0.5), np.zeros(1), ["u"])
# a 2 x 1 x 1 box centred at (1, 1, 0.5), turned 90 degrees: it spans x 0.5..1.5, y 0..2 on the floor
TURNED = Boxes.from_boxes([Box(min=(0, 0.5, 0), max=(2, 1.5, 1), yaw_deg=90)], ["t"])


@pytest.mark.parametrize("point,inside,dist", [
    ((0, 0, 0), True, 0.0),
    ((0.5, 0.5, 0.5), True, 0.0),            # a corner counts
    ((1.0, 0, 0), False, 0.5),               # off a face
    ((1.0, 1.0, 0), False, np.sqrt(0.5)),    # off an edge
    ((1.5, 1.5, 1.5), False, np.sqrt(3.0)),  # off a corner
])
def test_unit_box_table(point, inside, dist):
    assert points_in_boxes(np.array([point]), UNIT)[0, 0] == inside
    assert point_box_distance(np.array([point]), UNIT)[0, 0] == pytest.approx(dist, abs=1e-12)


@pytest.mark.parametrize("point,inside,dist", [
    ((1.0, 1.9, 0.5), True, 0.0),            # inside only because of the yaw (unturned it spans y 0.5..1.5)
    ((1.9, 1.0, 0.5), False, 0.4),
    ((1.0, -0.3, 0.5), False, 0.3),
    ((1.0, 1.0, 1.25), False, 0.25),
])
def test_yawed_box_table(point, inside, dist):
    assert points_in_boxes(np.array([point]), TURNED)[0, 0] == inside
    assert point_box_distance(np.array([point]), TURNED)[0, 0] == pytest.approx(dist, abs=1e-9)


@pytest.mark.parametrize("origin,direction,dist,t", [
    ((-2, 0, 0), (1, 0, 0), 0.0, 1.5),          # straight through: enters at x = -0.5
    ((0, 0, 0), (0, 0, 1), 0.0, 0.0),           # starts inside
    ((-2, 1, 0), (1, 0, 0), 0.5, 1.5),          # passes 0.5 above the +y face, closest along the whole face
    ((2, 0, 0), (1, 0, 0), 1.5, 0.0),           # pointing away: closest at its start
    ((-2, 2, 2), (1, 0, 0), np.sqrt(4.5), 1.5),
    ((-3, 3, 0), (1, -1, 0) / np.sqrt(2), 0.0, 2.5 * np.sqrt(2)),  # the diagonal, through the corner region
])
def test_ray_box_table(origin, direction, dist, t):
    d, tt = ray_box_distance(np.array([origin], float), np.array([direction], float), UNIT)
    assert d[0, 0] == pytest.approx(dist, abs=1e-9)
    if dist > 0 and np.isclose(t, 1.5) and origin[0] == -2 and origin[1] == 1:
        assert 1.5 - 1e-9 <= tt[0, 0] <= 2.5 + 1e-9         # a whole interval is closest: any point of it
    else:
        assert tt[0, 0] == pytest.approx(t, abs=1e-9)


def test_ray_box_respects_t_max():
    d, t = ray_box_distance(np.array([[-5.0, 0, 0]]), np.array([[1.0, 0, 0]]), UNIT, t_max=2.0)
    assert d[0, 0] == pytest.approx(2.5) and t[0, 0] == pytest.approx(2.0)


def test_empty_inputs_have_the_right_shapes():
    d, t = ray_box_distance(np.zeros((0, 3)), np.zeros((0, 3)), UNIT)
    assert d.shape == (0, 1) and t.shape == (0, 1)
    empty = Boxes.from_boxes([])
    assert point_box_distance(np.zeros((3, 3)), empty).shape == (3, 0)
    assert ray_box_distance(np.zeros((2, 3)), np.ones((2, 3)), empty)[0].shape == (2, 0)


# ---------------------------------------------------------------------------------------------- properties
coord = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
half = st.floats(0.02, 1.0, allow_nan=False, allow_infinity=False)
yaw = st.floats(-np.pi, np.pi, allow_nan=False, allow_infinity=False)
vec = st.tuples(coord, coord, coord)
boxes_st = st.lists(st.tuples(vec, st.tuples(half, half, half), yaw), min_size=1, max_size=4)


def to_boxes(spec) -> Boxes:
    return Boxes(np.array([c for c, _, _ in spec]), np.array([h for _, h, _ in spec]),
                 np.array([y for _, _, y in spec]), [str(i) for i in range(len(spec))])


@settings(max_examples=200, deadline=None)
@given(boxes_st, vec, st.tuples(half, half, half), st.floats(0.5, 4.0))
def test_a_ray_through_a_box_has_distance_zero(spec, origin, frac, reach):
    """Aim from anywhere at a point inside box 0: the ray passes through it."""
    boxes = to_boxes(spec)
    local = (np.array(frac) * 2 - 1) * 0.999 * boxes.half[0]  # inside box 0, in its frame
    c, s = np.cos(boxes.yaw[0]), np.sin(boxes.yaw[0])
    target = boxes.center[0] + np.array([c * local[0] - s * local[1], s * local[0] + c * local[1], local[2]])
    o = np.array(origin, float)
    direction = target - o
    if np.linalg.norm(direction) < 1e-6:
        return
    direction /= np.linalg.norm(direction)
    dist, t = ray_box_distance(o[None], direction[None], boxes)
    assert dist[0, 0] <= 1e-9
    entry = o + t[0, 0] * direction
    assert point_box_distance(entry[None], boxes)[0, 0] <= 1e-9     # the returned t is on (or in) the box
    assert t[0, 0] <= np.linalg.norm(target - o) + 1e-9               # and not past the aimed-at point


@settings(max_examples=150, deadline=None)
@given(boxes_st, st.lists(st.tuples(vec, vec), min_size=1, max_size=4))
def test_ray_distance_is_never_negative_and_matches_brute_force(spec, rays):
    boxes = to_boxes(spec)
    o = np.array([r[0] for r in rays], float)
    d = np.array([r[1] for r in rays], float)
    keep = np.linalg.norm(d, axis=1) > 1e-3
    if not keep.any():
        return
    o, d = o[keep], d[keep] / np.linalg.norm(d[keep], axis=1, keepdims=True)
    dist, t = ray_box_distance(o, d, boxes)
    assert (dist >= 0).all() and (t >= 0).all()
    # the distance is reached at t ...
    at_t = np.array([[point_box_distance((o[i] + t[i, j] * d[i])[None], boxes)[0, j]
                      for j in range(len(boxes))] for i in range(len(o))])
    np.testing.assert_allclose(at_t, dist, atol=1e-9)
    # ... and no sampled point of the ray comes closer (samples 1 mm apart over the reachable span)
    ts = np.arange(0.0, 14.0, 0.001)
    for i in range(len(o)):
        brute = point_box_distance(o[i] + ts[:, None] * d[i], boxes).min(axis=0)
        assert (dist[i] <= brute + 1e-9).all()
        assert (brute - dist[i] <= 0.001 + 1e-9).all()


@settings(max_examples=150, deadline=None)
@given(boxes_st, st.lists(vec, min_size=1, max_size=6))
def test_point_distance_zero_exactly_inside(spec, points):
    boxes = to_boxes(spec)
    p = np.array(points, float)
    dist = point_box_distance(p, boxes)
    inside = points_in_boxes(p, boxes)
    assert (dist >= 0).all()
    assert ((dist == 0) == inside).all()
    # a point's distance is at most its distance to the box centre; the floor distance at most the 3D one
    assert (dist <= np.linalg.norm(p[:, None, :] - boxes.center[None], axis=2) + 1e-12).all()
    assert (floor_box_distance(p[:, :2], boxes) <= dist + 1e-12).all()


def test_vectorised_over_many_rays_and_boxes():
    rng = np.random.default_rng(0)
    boxes = Boxes(rng.uniform(-2, 2, (300, 3)), rng.uniform(0.05, 0.5, (300, 3)), rng.uniform(-3, 3, 300),
                  [str(i) for i in range(300)])
    o = rng.uniform(-3, 3, (50, 3))
    d = rng.normal(size=(50, 3))
    dist, t = ray_box_distance(o, d, boxes)
    assert dist.shape == (50, 300)
    # the same as one ray at a time
    for i in (0, 17, 49):
        one, t_one = ray_box_distance(o[i:i + 1], d[i:i + 1], boxes)
        np.testing.assert_array_equal(one[0], dist[i])
        np.testing.assert_array_equal(t_one[0], t[i])


# ---------------------------------------------------------------------------------------------- floor regions
def test_floor_regions():
    regions = FloorRegions([[0, 0], [2, 2]], [[1, 1], [3, 4]], ["a", "b"])
    xy = np.array([[0.5, 0.5], [1, 1], [1.5, 0.5], [2.5, 5.0]])
    np.testing.assert_array_equal(points_in_regions(xy, regions), [[True, False], [True, False],
                                                                   [False, False], [False, False]])
    np.testing.assert_allclose(point_region_distance(xy, regions),
                               [[0, np.hypot(1.5, 1.5)], [0, np.sqrt(2)], [0.5, np.hypot(0.5, 1.5)],
                                [np.hypot(1.5, 4.0), 1.0]])


def _lane(i: int, x: float) -> dict:
    return {"id": f"l{i}", "sku": "a", "box": {"min": [x, 1.0, 0.5], "max": [x + 0.3, 1.4, 0.8]}}


def small_store() -> dict:
    lane = _lane
    return {
        "store": {"id": "s", "size": [5, 4]},
        "catalogue": [{"sku": "a", "name": "A", "price": 199, "weight_g": 100}],
        "shelf_units": [{"id": "u1", "shelves": [{"id": "s1", "lanes": [lane(1, 1.0), lane(2, 1.3)]},
                                                 {"id": "s2", "lanes": [lane(3, 2.0), lane(4, 2.5)]}]}],
        "gates": [{"id": "g", "region": {"min": [0, 0], "max": [1, 1]}}],
        "exits": [{"id": "e", "region": {"min": [4, 0], "max": [5, 1]}}],
    }


def test_store_geometry_from_store():
    geo = StoreGeometry.from_store(store_from_dict(small_store()))
    assert geo.lanes.ids == ("l1", "l2", "l3", "l4")
    assert geo.shelves.ids == ("s1", "s2") and geo.units.ids == ("u1",)
    assert geo.lane_shelf == (0, 0, 1, 1) and geo.shelf_unit == (0, 0)
    np.testing.assert_allclose(geo.shelves.center[0], [1.3, 1.2, 0.65])
    np.testing.assert_allclose(geo.shelves.half[0], [0.3, 0.2, 0.15])
    np.testing.assert_allclose(geo.units.half[0], [0.9, 0.2, 0.15])   # x 1.0 .. 2.8
    # a wrist ray reaching into lane l2 from the aisle
    o = np.array([[1.45, 0.0, 1.6]])
    d = np.array([[0.0, 1.2, -0.9]]) / 1.5
    dist, _ = ray_box_distance(o, d, geo.lanes)
    assert dist[0].argmin() == 1 and dist[0, 1] == 0
    assert points_in_regions(np.array([[0.5, 0.5], [4.5, 0.5]]), geo.gates)[:, 0].tolist() == [True, False]
    assert points_in_regions(np.array([[0.5, 0.5], [4.5, 0.5]]), geo.exits)[:, 0].tolist() == [False, True]


def test_enclose_keeps_a_common_yaw():
    a = Box(min=(0, 0, 0), max=(1, 0.5, 1), yaw_deg=30)
    b = Box(min=(1, 0, 0), max=(2, 0.5, 1), yaw_deg=30)
    box = enclose([a, b])
    assert box.yaw_deg == 30
    both = Boxes.from_boxes([box])
    for part in (a, b):
        assert points_in_boxes(part.corners(), both, tol=1e-9).all()
    mixed = enclose([a, Box(min=(3, 3, 0), max=(4, 4, 1), yaw_deg=10)])
    assert mixed.yaw_deg == 0.0
