"""Sessions end to end: the same seed gives the same bytes; the MCAP reads back with the store, cameras and
truth; receipts equal the sum of the true events; the events are steps in the recorded load-cell streams; a
truth head projected through the calibration code lands on the rendered head."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from mcap.reader import make_reader

from calibration.markers import MarkerLayout
from sim.body import Appearance, Body
from sim.pose import skeleton
from sim.render import Renderer, RenderOptions
from sim.run import simulate
from sim.scenario import scenario_from_file
from sim.session import Session
from sim.truth import read_mot, shopper_number
from walkout.cli import main


def small(seed: int = 4, **kw):
    scn = scenario_from_file(None, preset="standard", seed=seed, shoppers=4, duration_s=60, fps=2.0,
                             size=(200, 150), **kw)
    return scn.model_copy(update={"cameras": scn.cameras.model_copy(update={"only": ["cam1", "cam5"]})})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    a = tmp_path_factory.mktemp("a")
    b = tmp_path_factory.mktemp("b")
    ra = simulate(small(), a)
    rb = simulate(small(), b)
    return ra, rb


def test_same_seed_same_bytes(runs):
    ra, rb = runs
    for name in ("session.mcap", "truth.json", "truth/cam1.txt", "truth/cam5.txt", "truth/trajectories.csv"):
        assert (ra.out_dir / name).read_bytes() == (rb.out_dir / name).read_bytes(), name
    assert ra.counts["image"] > 100 and ra.counts["loadcells"] > 1000


def test_another_seed_differs(runs, tmp_path):
    ra, _ = runs
    rc = simulate(small(seed=5).model_copy(update={"cameras": small().cameras.model_copy(update={"frames": False})}),
                  tmp_path)
    assert json.loads((rc.out_dir / "truth.json").read_text())["shoppers"] != ra.truth["shoppers"]


def test_session_reads_back(runs):
    ra, _ = runs
    s = Session.open(ra.out_dir)
    assert s.store.store.id == "sim-store-1"
    assert set(s.cameras) == {"cam1", "cam5"}
    assert (s.cameras["cam1"].width, s.cameras["cam1"].height) == (200, 150)
    assert isinstance(s.markers, MarkerLayout)
    assert s.scenario["seed"] == 4
    assert s.truth["stats"] == ra.stats
    times = [m.log_time for m in s.messages()]
    assert times == sorted(times)
    gates = s.gate_entries()
    assert [(g.account, g.party_size) for g in gates] == [
        (v["account"], v["party_size"]) for v in sorted(ra.truth["visits"], key=lambda v: v["scan_t"])]
    img = next(s.images("cam5"))
    assert img.decode().shape == (150, 200, 3)
    with open(ra.out_dir / "session.mcap", "rb") as f:  # plain mcap reader: Foxglove's schema name
        summary = make_reader(f).get_summary()
    names = {sc.name for sc in summary.schemas.values()}
    assert {"foxglove.CompressedImage", "walkout.LoadCellMsg", "walkout.GateEntryMsg"} <= names


def test_receipts_are_the_sum_of_the_true_events(runs):
    ra, _ = runs
    truth = ra.truth
    products = {p.sku: p for p in Session.open(ra.out_dir).store.catalogue}
    qty = defaultdict(lambda: defaultdict(int))
    for ev in truth["events"]:
        qty[ev["visit"]][ev["sku"]] += ev["qty"] if ev["kind"] in ("pick", "pick_of_misplaced") else -ev["qty"]
        assert ev["grams"] == pytest.approx(sum(ev["item_grams"]) * (-1 if ev["grams"] < 0 else 1), abs=0.02)
    assert truth["events"]
    for v in truth["visits"]:
        want = {sku: n for sku, n in qty[v["visit"]].items() if n}
        got = {ln["sku"]: ln["qty"] for ln in v["receipt"]["lines"]}
        assert got == want
        assert v["receipt"]["total"] == sum(n * products[sku].price for sku, n in want.items())
        assert all(ln["amount"] == ln["qty"] * ln["unit_price"] for ln in v["receipt"]["lines"])


def test_recorded_load_cells_step_at_every_true_event(runs):
    ra, _ = runs
    s = Session.open(ra.out_dir)
    streams = s.loadcell_arrays()
    for ev in s.truth["events"]:
        t, g = streams[ev["lanes"][0]]
        pre = np.median(g[(t > ev["t_start"] - 0.5) & (t < ev["t_start"] - 0.05)])
        post = np.median(g[(t > ev["t_end"] + 0.05) & (t < ev["t_end"] + 0.5)])
        assert post - pre == pytest.approx(ev["grams"], abs=4.0 + 0.01 * abs(ev["grams"])), ev["event_id"]


def test_mot_truth_matches_the_projection_of_the_true_head(runs):
    """Every visible head in the MOT files is the calibration code's projection of the true 3D head."""
    ra, _ = runs
    s = Session.open(ra.out_dir)
    traj = np.genfromtxt(ra.out_dir / "truth" / "trajectories.csv", delimiter=",", names=True, dtype=None,
                         encoding=None)
    start, fps = s.start_epoch, s.truth["session"]["fps"]
    heads = {(round((row["t"] - start) * fps) + 1, shopper_number(row["shopper"])):
             np.array([row["head_x"], row["head_y"], row["head_z"]]) for row in traj}
    checked = 0
    for cid in ("cam1", "cam5"):
        for row in read_mot(ra.out_dir / "truth" / f"{cid}.txt"):
            key = (int(row[0]), int(row[1]))
            uv, _ok = s.cameras[cid].project(heads[key][None])
            assert np.allclose(uv[0], row[7:9], atol=0.02)
            checked += 1
    assert checked > 50


def test_truth_head_lands_on_the_rendered_head():
    """A body rendered twice without noise or blur, once with other head colours (hair and skin): the 3x3
    pixels around the head projected by the calibration code change colour, so they show the head."""
    from calibration.camera import load_cameras
    from calibration.store import load_store
    from sim.default_store import DEFAULT_DIR

    store = load_store(DEFAULT_DIR / "store.yaml")
    cams = load_cameras(store)
    opts = RenderOptions(noise=0, blur=0, jpeg_quality=None, lighting_drift=0, flicker_prob=0, drop_prob=0,
                         shadows=False, variety=False, supersample=1)
    joints = skeleton(8.0, 2.5, 1.0, 1.0)
    a = Body("S01", joints, Appearance(hair=(20, 200, 40), skin=(200, 60, 40), shirt=(90, 90, 90)))
    b = Body("S01", joints, Appearance(hair=(40, 20, 220), skin=(30, 220, 230), shirt=(90, 90, 90)))
    for cid in ("cam2", "cam6"):  # a pinhole and a fisheye
        img_a = Renderer(store, {cid: cams[cid]}, None, seed=1, options=opts).render(cid, 0.0, [a]).image
        img_b = Renderer(store, {cid: cams[cid]}, None, seed=1, options=opts).render(cid, 0.0, [b]).image
        uv, ok = cams[cid].project(a.head[None])
        assert ok[0]
        u, v = int(uv[0, 0]), int(uv[0, 1])
        diff = np.abs(img_a.astype(int) - img_b.astype(int)).sum(axis=2)
        assert diff[v - 1:v + 2, u - 1:u + 2].min() > 60, cid
        assert diff.sum() < 0.02 * diff.size * 255  # only the head changed


@pytest.mark.slow
def test_hard_preset_has_every_required_case(tmp_path, capsys):
    rc = main(["sim", "--preset", "hard", "--seed", "1", "--shoppers", "12", "--duration", "180", "--no-frames",
               "--out", str(tmp_path), "--json"])
    assert rc == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["shoppers"] == 12
    assert stats["neighbour_simultaneous_picks"] >= 3
    assert stats["groups"] >= 2
    assert stats["put_backs"] >= 3
    assert stats["misplacements"] >= 2
    assert stats["picks_of_misplaced"] >= 1
    assert stats["exit_crowd_max"] >= 3
    assert stats["occluded_head_views"] > 0
    assert stats["unfinished_shoppers"] == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["stats"] == stats
    assert set(stats) >= {"neighbour_simultaneous_picks", "groups", "put_backs", "misplacements",
                          "picks_of_misplaced", "shoppers", "visits", "events"}


@pytest.mark.parametrize("name", ["smoke", "hard-100s"])
def test_committed_sessions_open_and_are_consistent(name):
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "replay_data" / "sessions" / name
    s = Session.open(folder)
    assert s.truth["format"] == "walkout-sim-truth/1"
    assert len(s.gate_entries()) == s.truth["stats"]["visits"]
    streams = s.loadcell_arrays()
    assert set(streams) == set(s.store.lanes)
    for ev in s.truth["events"]:
        t, g = streams[ev["lanes"][0]]
        pre = np.median(g[(t > ev["t_start"] - 0.5) & (t < ev["t_start"] - 0.05)])
        post = np.median(g[(t > ev["t_end"] + 0.05) & (t < ev["t_end"] + 0.5)])
        assert post - pre == pytest.approx(ev["grams"], abs=4.0 + 0.01 * abs(ev["grams"]))
    for v in s.truth["visits"]:
        assert v["complete"] and v["receipt"]["total"] == sum(ln["amount"] for ln in v["receipt"]["lines"])
