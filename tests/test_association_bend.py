"""The head's part in the association: a picker bends to a low shelf, a bystander beside them does not."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fusion.association import (
    PROFILE_S,
    Candidate,
    EventEvidence,
    WristEvidence,
    head_dip,
    height_profile,
    weigh,
)
from fusion.config import AssociationConfig
from fusion.floor import ShopperInfo

T_STEP = 100.0


def _unseen() -> WristEvidence:
    return WristEvidence(np.zeros(0), np.zeros(0), np.zeros(0), [])


def _heights(standing: float, lowest: float = 0.0, at: float = 0.0, t0: float = -3.0, t1: float = 3.0
             ) -> list[tuple[float, float]]:
    """A head's history (t, h) at 10 Hz from ``T_STEP + t0`` to ``T_STEP + t1``: ``standing`` high, lowered by
    ``lowest`` for a second around ``T_STEP + at`` (down over 0.3 s, held, up over 0.3 s)."""
    ts = np.arange(T_STEP + t0, T_STEP + t1 + 1e-9, 0.1)
    dip = np.interp(ts - T_STEP - at, [-0.8, -0.5, 0.5, 0.8], [0.0, lowest, lowest, 0.0], left=0.0, right=0.0)
    return [(float(t), float(standing - d)) for t, d in zip(ts, dip, strict=True)]


def test_the_height_profile_is_the_head_height_around_the_step_and_nan_where_untracked() -> None:
    prof = height_profile(_heights(1.7, 0.4, t0=-1.0, t1=2.0), T_STEP)
    assert prof.shape == PROFILE_S.shape
    tracked = (PROFILE_S >= -1.0) & (PROFILE_S <= 2.0)
    assert np.isnan(prof[~tracked]).all()
    assert prof[PROFILE_S == 0.0] == pytest.approx(1.3)
    assert prof[PROFILE_S == 1.5] == pytest.approx(1.7)
    assert np.isnan(height_profile([], T_STEP)).all()


@pytest.mark.parametrize(("history", "dip", "why"), [
    (_heights(1.7, 0.45), 0.45, "bent at the step"),
    (_heights(1.7), 0.0, "stood upright"),
    (_heights(1.7, 0.45, at=2.0), 0.0, "bent two seconds after the step, not at it"),
    (_heights(1.7, -0.2), 0.0, "raised the head (a reach up): no dip"),
    (_heights(1.7, 0.45, t0=-1.0, t1=1.0), 0.0, "not tracked before or after: no standing height to compare"),
    ([(t, h - (0.3 if t < T_STEP - 2.6 else 0.0)) for t, h in _heights(1.7, 0.45, t1=0.5)], 0.45,
     "bent for something else until 2.6 s before, tracked only until just after: standing is the upper quartile"),
    ([(t, h - (0.15 if abs(t - T_STEP) < 0.05 else 0.0)) for t, h in _heights(1.7)], 0.0,
     "one odd height at the step (a bystander's head ray read as a crouch for a frame): no dip"),
    ([(t, h - (0.15 if abs(t - T_STEP) < 0.05 else 0.0)) for t, h in _heights(1.7, 0.45)], 0.45,
     "the same odd height in a bend: the bend"),
])
def test_the_head_dip_is_how_much_lower_the_head_was_at_the_step(history, dip: float, why: str) -> None:
    assert head_dip(height_profile(history, T_STEP), 0.5) == pytest.approx(dip, abs=1e-9), why


def _neighbours(lane_low_m: float) -> EventEvidence:
    """Two shoppers side by side at a lane, neither hand seen (the picker's inside the lane, the other's by
    his side), both as near: Alice bent to the lane at the step, Bob stood upright."""
    cands = [Candidate(name, 0.3, _unseen(), np.full(len(PROFILE_S), 0.3), height_profile(h, T_STEP))
             for name, h in (("alice", _heights(1.7, 0.45)), ("bob", _heights(1.75)))]
    return EventEvidence(T_STEP - 0.5, T_STEP + 0.5, T_STEP, lane_low_m, False, cands)


@pytest.mark.parametrize(("lane_low_m", "weight", "winner"), [
    (0.5, 4.0, "alice"),  # a low lane: who bent to it did it
    (0.5, 0.0, None),  # the credit off: a tie, held for review
    (1.4, 4.0, None),  # a lane at chest height: bending says nothing
])
def test_who_bent_to_a_low_lane_at_the_step_beats_who_stood_beside_it(lane_low_m: float, weight: float,
                                                                      winner: str | None) -> None:
    a = weigh(_neighbours(lane_low_m), AssociationConfig(dip_weight=weight))
    if winner is None:
        assert a.uncertain and a.margin == pytest.approx(0.0)
    else:
        assert a.shopper == winner and not a.uncertain, a.reason


def test_a_snapshot_from_before_head_heights_were_kept_restores_with_none() -> None:
    s = ShopperInfo("s1", 0.0, "gate")
    state = dict(s.__dict__)
    del state["heights"]
    old = ShopperInfo.__new__(ShopperInfo)
    old.__setstate__(state)
    assert old.heights == []
    assert pickle.loads(pickle.dumps(old)).heights == []
