"""Wrist evidence over an event's window: the distance of a shopper's wrists to the lanes (fusion.association)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.association import WristEvidence, wrist_log_score
from fusion.config import AssociationConfig


@pytest.mark.parametrize("k, mean, expected", [
    (1, False, -0.02), (2, False, 0.3), (2, True, 0.14), (3, True, (-0.02 + 0.3 + 0.4) / 3),
])
def test_the_wrist_distance_is_the_kth_closest_instant_or_the_mean_of_the_k_closest(k, mean, expected):
    # one instant in the lane (a ghost, or a hand seen once) and the others away
    ev = WristEvidence(np.arange(4) * 0.06, np.array([0.3, -0.02, 0.4, math.inf]), np.full(4, math.inf), [])
    assert ev.distance(k, mean) == pytest.approx(expected)


@pytest.mark.parametrize("tri, single, k, expected", [
    ([math.inf, math.inf], [0.0, 0.2], 2, 0.2),  # too few located: the k-th of the one-camera bounds
    ([0.05, math.inf], [0.0, math.inf], 2, 0.0),  # ... with the located one among them (the nearer per instant)
    ([math.inf], [math.inf], 1, None),  # nothing seen
])
def test_with_fewer_located_instants_than_k_the_one_camera_bounds_count(tri, single, k, expected):
    ev = WristEvidence(np.arange(len(tri)) * 0.06, np.array(tri), np.array(single), [])
    got = ev.distance(k, mean=True)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("outside_scale, d, expected", [
    (0.1, -0.05, 0.05 / 0.02),  # depth into the lane earns credit at the depth scale ...
    (0.1, -0.5, 0.1 / 0.02),  # ... up to inside_cap_m
    (0.1, 0.1, -0.1 / 0.1 - 0.5),  # outside: lost at its own scale, and the Gaussian term
    (0.02, 0.1, -0.1 / 0.02 - 0.5),  # (as steep as the credit inside: the rule before 2026-12-02)
    (0.02, -0.05, 0.05 / 0.02),
    (0.1, 0.9, -0.3 / 0.1 - 0.5 * 9),  # beyond outside_cap_m: all the same
])
def test_the_wrist_score_credits_depth_and_costs_distance_outside(outside_scale, d, expected):
    cfg = AssociationConfig(inside_scale_m=0.02, inside_cap_m=0.1, outside_cap_m=0.3, wrist_sd_m=0.1,
                            outside_scale_m=outside_scale)
    assert wrist_log_score(d, cfg) == pytest.approx(expected)
