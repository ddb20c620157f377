"""The body's part in the association: where each shopper stood when the weight stepped."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.store import Box
from fusion.association import PROFILE_S, Candidate, EventEvidence, WristEvidence, body_profile, weigh
from fusion.config import AssociationConfig

LANE = Box(min=(1.0, 3.0, 1.2), max=(1.3, 3.4, 1.5))  # its front face at y = 3.0
T_STEP = 100.0
BODY = {"body_free_m": 0.1, "body_sd_m": 0.15}


def _unseen() -> WristEvidence:
    return WristEvidence(np.zeros(0), np.zeros(0), np.zeros(0), [])


def _walk(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """A floor path (t, x, y) sampled at 10 Hz through the waypoints."""
    w = np.asarray(points, float)
    ts = np.linspace(w[0, 0], w[-1, 0], int(np.rint((w[-1, 0] - w[0, 0]) / 0.1)) + 1)
    return [(float(t), float(np.interp(t, w[:, 0], w[:, 1])), float(np.interp(t, w[:, 0], w[:, 2]))) for t in ts]


def test_the_body_profile_is_the_distance_to_the_lane_around_the_step_and_nan_where_untracked() -> None:
    path = _walk([(T_STEP - 1.0, 1.15, 2.8), (T_STEP + 1.0, 1.15, 2.4)])  # backing away, tracked for 2 s
    prof = body_profile(path, [LANE], T_STEP)
    assert prof.shape == PROFILE_S.shape
    tracked = np.abs(PROFILE_S) <= 1.0
    assert np.isnan(prof[~tracked]).all()
    assert prof[tracked] == pytest.approx(0.2 + (PROFILE_S[tracked] + 1.0) * 0.2)


def _passer_by_and_stander() -> EventEvidence:
    """Neither shopper's hands were seen (the picker's inside the lane, the other's by his side): Alice stood
    0.15 m from the lane all through; Bob walked past it as close (1.2 m/s) 1 s before the step, and was 0.45 m
    past its side half a second before the step.  Over the evidence window (1.2 s either side of the step) both came as near."""
    alice = _walk([(T_STEP - 3.0, 1.15, 2.85), (T_STEP + 3.0, 1.15, 2.85)])
    bob = _walk([(T_STEP - 3.0, -1.25, 2.85), (T_STEP - 1.0, 1.15, 2.85), (T_STEP + 3.0, 5.95, 2.85)])
    cands = [Candidate(name, 0.15, _unseen(), body_profile(path, [LANE], T_STEP))
             for name, path in (("alice", alice), ("bob", bob))]
    return EventEvidence(T_STEP - 0.5, T_STEP + 0.5, T_STEP, 1.2, False, cands)


@pytest.mark.parametrize(("at_step_s", "winner", "sure"), [
    (0.5, "alice", True),  # default: where they stood at the step
    (0.0, None, False),  # over the whole window: a tie, held for review
])
def test_who_stood_at_the_lane_when_the_weight_stepped_beats_who_passed_it(at_step_s: float, winner: str | None,
                                                                          sure: bool) -> None:
    a = weigh(_passer_by_and_stander(), AssociationConfig(body_at_step_s=at_step_s, **BODY))
    assert a.uncertain is not sure, a.reason
    if winner is not None:
        assert a.shopper == winner


def test_a_shopper_untracked_at_the_step_is_judged_over_the_window() -> None:
    """No position within ``body_at_step_s`` of the step (a track that ended just before it): the body's
    distance over the whole window stands, not 'infinitely far'."""
    ev = _passer_by_and_stander()
    ev.candidates[1].profile[:] = np.nan
    a = weigh(ev, AssociationConfig(body_at_step_s=0.5, **BODY))
    assert a.scores["bob"] > 0.3
