"""The simulated shoppers: collision-free walking, hands that really go into the lane they act on, groups that
enter on one scan, items that are neither created nor lost."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.store import load_store
from sim.body import J
from sim.default_store import DEFAULT_DIR
from sim.director import make_cast
from sim.floor import FloorMap, point_in_box
from sim.scenario import scenario_from_file
from sim.world import DT, World


@pytest.fixture(scope="module")
def sim():
    scn = scenario_from_file(None, preset="standard", seed=3, shoppers=7, duration_s=100, frames=False)
    store = load_store(DEFAULT_DIR / "store.yaml")
    floor = FloorMap(store)
    cast = make_cast(store, floor, scn, np.random.default_rng([3, 1]))
    world = World(store, floor, cast.shoppers, cast.visits, cast.plans, cast.inventory, scn.duration_s,
                  np.random.default_rng([3, 2]), cast.bookings, cast.pair_lanes).run()
    return store, floor, cast, world


def test_shoppers_shop_and_leave(sim):
    _, _, _cast, world = sim
    assert len(world.events) >= 8
    assert sum(a.exit_t is not None for a in world.agents) == len(world.agents)
    assert all(a.entry_t < a.exit_t for a in world.agents)


def test_bodies_never_overlap_and_stay_off_the_shelves(sim):
    _, floor, _, world = sim
    tr = world.track
    radii = np.array([s.radius for s in world.shoppers])
    k = len(radii)
    for i in range(k):
        for j in range(i + 1, k):
            both = tr.present[:, i] & tr.present[:, j]
            if both.any():
                gap = np.linalg.norm(tr.xy[both, i] - tr.xy[both, j], axis=1) - radii[i] - radii[j]
                assert gap.min() >= 0.0, (world.shoppers[i].id, world.shoppers[j].id)
        xy = tr.xy[tr.present[:, i], i]
        assert floor.clearance_at(xy).min() >= radii[i] - 0.02


def test_hands_go_into_the_lane_they_act_on(sim):
    store, _, _, world = sim
    k_of = {s.id: k for k, s in enumerate(world.shoppers)}
    for ev in world.events:
        box = store.lanes[ev.lane].box
        assert point_in_box(box, np.asarray(ev.wrist))[0], (ev.id, ev.kind, ev.lane)
        body = world.body_at(k_of[ev.shopper], ev.t_change)  # the posed skeleton agrees with the record
        wrist = body.joints[J[ev.hand + "wrist"]]
        assert np.linalg.norm(wrist - np.asarray(ev.wrist)) < 0.02
        assert point_in_box(box, wrist)[0]
        assert ev.t_contact < ev.t_change < ev.t_release


def test_reaches_take_one_to_two_seconds(sim):
    _, _, _, world = sim
    lane_motions = [m for m in world.motions if len(m.keys) == 6]
    assert lane_motions
    durations = np.array([m.t1 - m.t0 for m in lane_motions])
    assert durations.min() >= 1.0 and durations.max() <= 2.6


def test_one_scan_per_party_then_the_members_walk_in(sim):
    _, _, _cast, world = sim
    scans = {vid: (t, size) for t, _, vid, _, size in world.scans}
    assert set(scans) == set(world.visits)
    agents = {a.spec.id: a for a in world.agents}
    for vid, v in world.visits.items():
        t_scan, size = scans[vid]
        assert size == len(v.members)
        for m in v.members[1:]:
            assert t_scan < agents[m].entry_t < t_scan + 10.0


def test_items_are_conserved_and_put_backs_return_the_same_item(sim):
    _, _, _, world = sim
    on_shelves = [i for ids in world.inventory.values() for i in ids]
    in_baskets = [i for a in world.agents for i in a.basket]
    assert sorted(on_shelves + in_baskets) == sorted(i for ids in world.initial.values() for i in ids)
    taken = {}
    for ev in world.events:
        for item in ev.items:
            if ev.grams < 0:
                taken[item] = ev
            elif item in taken:
                assert world.items[item].weight_g == pytest.approx(-taken[item].grams / taken[item].qty, abs=0.02) \
                    or taken[item].qty > 1


def test_track_is_sampled_on_the_world_clock(sim):
    _, _, _, world = sim
    assert np.allclose(np.diff(world.track.t), DT)
