"""Upper-body colour: measured on frames (edge/appearance.py), carried on the wire, drawn by truth perception,
and used by the floor tracker to keep two shoppers apart where their positions do not."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from bench.appearance import measure
from edge.appearance import bgr_to_lab, channel_median, leg_colours, torso_colours
from fusion.config import FloorConfig
from fusion.floor import FloorTracker, TrackObs
from tests.fusion_scene import scene_store
from wire.messages import Track

SMOKE = Path(__file__).resolve().parents[1] / "replay_data" / "sessions" / "smoke"
RED, BLUE = (40, 40, 200), (200, 60, 30)  # BGR


def _person(img: np.ndarray, box: tuple[int, int, int, int], head: tuple[int, int], chest_bgr) -> None:
    """A crude person: dark legs over the whole box, a shirt-coloured torso half next to the head."""
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = (30, 30, 30)
    hy = head[1]
    if hy <= y1 + 2:  # upright: head on top, torso below it
        img[y1:(y1 + y2) // 2 + 4, x1:x2] = chest_bgr
    else:  # lying across the image, head on the left
        img[y1:y2, x1:(x1 + x2) // 2 + 4] = chest_bgr
    cv2.circle(img, head, 4, (20, 60, 90), -1)


@pytest.mark.parametrize(("box", "head", "colour"), [
    ((100, 50, 140, 150), (120, 52), RED),  # upright (a side-looking camera)
    ((100, 50, 140, 150), (120, 52), BLUE),
    ((200, 100, 300, 140), (202, 120), RED),  # lying across the image (below a ceiling camera)
    ((200, 100, 300, 140), (202, 120), BLUE),
])
def test_the_colour_is_the_shirt_next_to_the_head(box, head, colour):
    img = np.full((240, 320, 3), 180, np.uint8)
    _person(img, box, head, colour)
    lab = torso_colours(img, np.array([box], float), np.array([head], float))
    assert np.allclose(lab[0], bgr_to_lab(np.array([colour]))[0], atol=1.0)


@pytest.mark.parametrize(("box", "head", "legs"), [
    ((100, 50, 140, 150), (120, 52), True),  # upright: the thighs below the box centre
    ((200, 100, 300, 140), (202, 120), True),  # lying across the image: right of the centre
    ((100, 50, 160, 110), (130, 80), False),  # seen from straight above: the head is the centre, no legs in view
    ((100, 50, 160, 110), (135, 88), False),  # nearly so (head 0.14 of the box from its centre)
])
def test_the_legs_colour_is_beyond_the_box_centre_where_the_person_lies_lengthwise(box, head, legs):
    img = np.full((240, 320, 3), 180, np.uint8)
    _person(img, box, head, RED)
    lab = leg_colours(img, np.array([box], float), np.array([head], float))
    if not legs:
        assert np.isnan(lab[0]).all()
        return
    assert np.allclose(lab[0], bgr_to_lab(np.array([(30, 30, 30)]))[0], atol=1.0)


@pytest.mark.parametrize(("box", "heads", "why"), [
    ((400, 10, 450, 60), None, "outside the image"),
    ((10, 10, 12, 12), None, "too small"),
    ((10, 10, 60, 60), [[np.nan, np.nan]], "no head: box fallback still inside, so measured"),
])
def test_boxes_that_cannot_be_measured_give_nan(box, heads, why):
    img = np.full((100, 100, 3), 128, np.uint8)
    lab = torso_colours(img, np.array([box], float), None if heads is None else np.array(heads))
    assert np.isfinite(lab[0]).all() == why.endswith("measured"), why


def test_a_grey_frame_or_no_boxes_gives_no_colour():
    assert np.isnan(torso_colours(np.zeros((50, 50), np.uint8), np.array([[0, 0, 40, 40]]))).all()
    assert torso_colours(np.zeros((50, 50, 3), np.uint8), np.zeros((0, 4))).shape == (0, 3)


@settings(max_examples=200, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))))
def test_the_patch_median_is_numpys(patch):
    assert np.array_equal(channel_median(patch), np.median(patch.reshape(-1, 3), axis=0))


@pytest.mark.parametrize(("bgr", "lab"), [((255, 255, 255), (100, 0, 0)), ((0, 0, 0), (0, 0, 0)),
                                          ((0, 0, 255), (53.2, 80.1, 67.2))])
def test_lab_conversion(bgr, lab):
    assert np.allclose(bgr_to_lab(np.array([bgr]))[0], lab, atol=0.5)


@pytest.mark.parametrize(("colour", "ok"), [((50, 10, -20), True), (None, True), ((101, 0, 0), False),
                                            ((50, 200, 0), False), ((float("nan"), 0, 0), False)])
def test_the_wire_checks_the_colour(colour, ok):
    kw = {"id": 1, "box": (0, 0, 10, 10), "conf": 0.9, "floor": (1, 1), "floor_cov": (0.01, 0, 0.01),
          "colour": colour}
    if ok:
        t = Track(**kw)
        assert Track.model_validate_json(t.model_dump_json()) == t
    else:
        with pytest.raises(ValidationError):
            Track(**kw)


# ------------------------------------------------------------------------------------------------ floor
def _meet_and_turn_back(colours: bool, seed: int) -> dict[str, float]:
    """Two shoppers walk towards each other along y = 2.5, meet at x = 3 (4 cm apart: one hides the other) and
    walk back where they came from;
    one camera sees them, loses both for 0.4 s where they meet (one hides the other) and gives them new ids
    after.  Returns each fused shopper's x position at the end by the shopper it started on."""
    rng = np.random.default_rng(seed)
    floor = FloorTracker(scene_store(), FloorConfig(colour_cap=9.0 if colours else 0.0))
    red, blue = bgr_to_lab(np.array([RED, BLUE], float))
    first: dict[str, str] = {}
    t, dt = 0.0, 0.1
    for k in range(40):
        t = k * dt
        d = 1.08 * (1.0 - abs(k - 20) / 20)  # distance walked from the start: out and back at 0.54 m/s
        xa, xb = 1.9 + d, 4.1 - d
        ids = (1, 2) if k < 20 else (3, 4)
        if 18 <= k <= 21:
            continue
        obs = []
        for tid, x, lab in ((ids[0], xa, red), (ids[1], xb, blue)):
            fl = (x + rng.normal(0, 0.03), 2.5 + rng.normal(0, 0.03))
            obs.append(TrackObs(tid, fl, (0.01, 0.0, 0.01), colour=tuple(lab + rng.normal(0, 2.0, 3))))
        floor.update("cam", t, obs)
        if k == 5:
            first = {floor.info[floor.links["cam"][1]].id: "a", floor.info[floor.links["cam"][2]].id: "b"}
    return {first[s.id]: s.x for s in floor.live() if s.id in first}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colour_keeps_two_shoppers_apart_where_they_meet_and_turn_back(seed):
    with_colour = _meet_and_turn_back(True, seed)
    assert with_colour["a"] < 2.5 < with_colour["b"]  # a came from the left and went back there
    without = _meet_and_turn_back(False, seed)
    assert without["a"] > 2.5 > without["b"]  # by position alone, each carries on: swapped


def test_an_odd_colour_does_not_change_what_a_shopper_looks_like():
    floor = FloorTracker(scene_store())
    red = bgr_to_lab(np.array([RED], float))[0]
    for k in range(20):
        floor.update("cam", k * 0.1, [TrackObs(1, (3.0, 2.5), (0.01, 0.0, 0.01), colour=tuple(red))])
    s = floor.live()[0]
    floor.update("cam", 2.0, [TrackObs(1, (3.0, 2.5), (0.01, 0.0, 0.01), colour=(90.0, -40.0, 60.0))])
    assert np.allclose(s.colour, red) and s.colour_n == 20


@pytest.mark.parametrize(("track_frames", "swapped"), [(1, True), (5, False)])
def test_one_odd_colour_frame_does_not_swap_two_shoppers_standing_close(track_frames, swapped):
    """Two shoppers stand 0.6 m apart, red and blue, seen by one camera whose floor positions are loose (sd
    0.3 m: a far camera); for one frame both colour patches are odd (each looks like the other's shirt, as when
    two people overlap in view).  Matched by that frame's colours, the tracks swap shoppers; by the median of
    each track's last five colours, they stay."""
    floor = FloorTracker(scene_store(), FloorConfig(colour_track_frames=track_frames))
    red, blue = bgr_to_lab(np.array([RED, BLUE], float))
    cov = (0.09, 0.0, 0.09)
    for k in range(30):
        odd = k == 25
        floor.update("cam", k * 0.1, [TrackObs(1, (2.7, 2.5), cov, colour=tuple(blue if odd else red)),
                                      TrackObs(2, (3.3, 2.5), cov, colour=tuple(red if odd else blue))])
        if k == 25:
            at_odd = {tid: floor.info[slot].id for tid, slot in floor.links["cam"].items()}
    assert at_odd == ({1: "s2", 2: "s1"} if swapped else {1: "s1", 2: "s2"})


@pytest.mark.parametrize(("camera_sd", "b_looks_like"), [((4.0, 2.0, 2.7), "b"), (None, "a")])
def test_a_track_is_judged_by_the_colour_its_own_camera_has_seen(camera_sd, b_looks_like):
    """Cameras 1 and 2 see shoppers a and b with opposite shifts of a* (their own view and exposure): camera 1
    sees a at a* 10 and b at 14, camera 2 sees them at 18 and 22, so over both cameras a's colour is 14 --
    b's as camera 1 sees it.  Matched against what camera 1 itself has seen, b's track there is b; against
    the colour over all cameras, it looks like a."""
    floor = FloorTracker(scene_store(), FloorConfig(colour_camera_sd=camera_sd))
    views = {"c1": {"a": 10.0, "b": 14.0}, "c2": {"a": 18.0, "b": 22.0}}
    for k in range(20):
        for cam, seen in views.items():
            floor.update(cam, k * 0.1, [TrackObs(1, (2.0, 2.5), (0.01, 0.0, 0.01), colour=(50.0, seen["a"], 10.0)),
                                        TrackObs(2, (4.0, 2.5), (0.01, 0.0, 0.01), colour=(50.0, seen["b"], 10.0))])
    slots = [floor.links["c1"][1], floor.links["c1"][2]]  # a's and b's
    track = floor._measure(TrackObs(9, (3.0, 2.5), (0.01, 0.0, 0.01), colour=(50.0, 14.0, 10.0)))
    track.match_colour = track.colour  # (b's colour in camera 1)
    cost = floor._colour_cost([track], slots, "c1")[0]
    assert "ab"[int(cost.argmin())] == b_looks_like


# ------------------------------------------------------------------------------------------------ truth perception
def test_truth_perception_colours_follow_the_shirts():
    from sim.session import Session
    from walkout.truth_perception import PerceptionConfig, perceive

    p = perceive(Session.open(SMOKE), PerceptionConfig(seed=3), with_shelf=False)
    again = perceive(Session.open(SMOKE), PerceptionConfig(seed=3), with_shelf=False)
    cols = [t.colour for msgs in p.tracks.values() for _, m in msgs for t in m.tracks]
    assert cols and all(c is not None for c in cols)
    assert cols == [t.colour for msgs in again.tracks.values() for _, m in msgs for t in m.tracks]


@pytest.mark.skipif(not (SMOKE / "session.mcap").is_file(), reason="the committed smoke session is missing")
def test_on_rendered_frames_the_same_shopper_is_closer_in_colour_than_two_different_ones():
    truth = json.loads((SMOKE / "truth.json").read_text())
    assert len({tuple(s["shirt_bgr"]) for s in truth["shoppers"]}) == 2
    r = measure([SMOKE], every=1)
    assert r["measurements"] > 50
    assert r["different_shirt_distance_median_sd"] > 1.5 * r["same_shopper_distance_median_sd"]
    legs = measure([SMOKE], every=1, part="legs")  # against the trousers (both views see the legs of most)
    assert legs["part"] == "legs" and legs["measurements"] > 0.8 * r["measurements"]


# ------------------------------------------------------------------------------------------------ duplicates
def _standing(floor: FloorTracker, t: float, cam: str, tracks: list[tuple[int, float, float]]) -> None:
    floor.update(cam, t, [TrackObs(tid, (x, y), (0.01, 0.0, 0.01)) for tid, x, y in tracks])


def test_a_duplicate_that_appeared_on_top_of_a_shopper_is_folded_into_them():
    """cam2 first places a shopper 1.5 m off (a ray at the wrong height: crouching), which makes a second
    shopper there; over the next second its frames come onto the first one, where they stay: after
    ``merge_after_s`` the duplicate is gone and cam2's track feeds the first shopper."""
    floor = FloorTracker(scene_store(), FloorConfig(merge_after_s=1.0))
    for k in range(10):
        _standing(floor, k * 0.1, "cam1", [(1, 3.0, 2.5)])
    first = floor.live()[0]
    for k in range(10, 50):
        t = k * 0.1
        _standing(floor, t, "cam1", [(1, 3.0, 2.5)])
        _standing(floor, t + 0.01, "cam2", [(7, 4.5 - 1.48 * min(1.0, (k - 10) / 10), 2.5)])
        if k == 10:
            assert len(floor.live()) == 2 and floor.live()[1].origin == "unknown"
    assert [s.id for s in floor.live()] == [first.id]
    dup = next(s for s in floor.info if s is not first)
    assert dup.merged_into == first.id
    assert floor.info[floor.links["cam2"][7]] is first


def test_two_people_side_by_side_are_never_folded_together():
    """Someone appeared away from the gate next to a shopper, but one camera sees both as two tracks: two
    people, however long they stand 0.3 m apart."""
    floor = FloorTracker(scene_store(), FloorConfig(merge_after_s=1.0))
    for k in range(10):
        _standing(floor, k * 0.1, "cam1", [(1, 3.0, 2.5)])
    for k in range(10, 60):
        _standing(floor, k * 0.1, "cam1", [(1, 3.0, 2.5), (2, 3.0 if k == 10 else 3.3, 2.5 if k > 10 else 3.5)])
    assert len(floor.live()) == 2
    assert all(s.merged_into is None for s in floor.info)
