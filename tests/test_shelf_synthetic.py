"""The shelf gateway on synthetic streams with exactly known events: a table of situations."""

from __future__ import annotations

import numpy as np
import pytest

from bench.shelf import T0, SynthEvent, render
from calibration.store import Store, store_from_dict
from edge.shelf.detector import ShelfDetector
from edge.shelf.gateway import Layout, ShelfGateway, run
from edge.shelf.planogram import Planogram
from edge.shelf.readers import ArrayReader
from wire.messages import ShelfEventMsg

# one shelf of 8 lanes: A on L1-L2, B on L3, C on L4-L5, D on L6, E on L7-L8; F and G are on no lane
PRODUCTS = {"A": 355.0, "B": 150.0, "C": 520.0, "D": 45.0, "E": 85.0, "F": 1200.0, "G": 230.0}
LANES = ["A", "A", "B", "C", "C", "D", "E", "E"]


def make_store() -> Store:
    return store_from_dict({
        "store": {"id": "syn", "size": [6.0, 6.0]},
        "catalogue": [{"sku": k, "name": f"Product {k}", "price": 100, "weight_g": w,
                       "weight_sd_g": round(0.01 * w, 2)} for k, w in PRODUCTS.items()],
        "shelf_units": [{"id": "U1", "shelves": [{"id": "S1", "lanes": [
            {"id": f"L{j + 1}", "sku": sku, "box": {"min": [0.1 * j, 1.0, 1.0], "max": [0.1 * j + 0.1, 1.4, 1.3]}}
            for j, sku in enumerate(LANES)]}]}],
        "gates": [{"id": "G1", "region": {"min": [0.0, 0.0], "max": [1.0, 0.5]}}],
        "exits": [{"id": "X1", "region": {"min": [2.0, 0.0], "max": [3.0, 0.5]}}],
    })


def ev(kind: str, t: float, lanes: dict[int, float], sku: str | None, qty: int = 1, **kw) -> SynthEvent:
    w = PRODUCTS[sku] if sku else 0.0
    return SynthEvent("S1", kind, T0 + t, lanes, w, sku, qty, **kw)


def run_case(events: list[SynthEvent], seconds: float = 20.0, seed: int = 0, noise_g: float = 1.0,
             drift: float = 0.5) -> tuple[list[ShelfEventMsg], ShelfGateway]:
    store = make_store()
    rng = np.random.default_rng(seed)
    ts, x = render(len(LANES), seconds, events, rng, noise_g, drift)
    lanes = [f"L{j + 1}" for j in range(len(LANES))]
    counter = iter(range(10_000))
    gw = ShelfGateway(Layout.from_store(store), Planogram.from_store(store), "syn-shelf", lambda: next(counter))
    gw.emit_times = {}
    out: list[ShelfEventMsg] = []
    run(ArrayReader(lanes, ts, x, block_s=0.25), gw, out.append)
    return out, gw


CASES = [
    # name, events, expected (action, sku, qty, foreign) in time order; "+" marks sub-events of one change
    ("noise only", [], []),
    ("strong drift", [], []),
    ("hand presses without taking", [ev("press", 5, {3: 1.0}, None, press_g=250.0, hold_s=1.5),
                                     ev("press", 11, {6: 0.6, 7: 0.4}, None, press_g=60.0, hold_s=0.4)], []),
    ("quick pick", [ev("pick", 5, {3: 1.0}, "C", press_g=40.0, wobble_g=30.0)], [("pick", "C", 1, False)]),
    ("slow pick over 3 s", [ev("slow", 5, {0: 1.0}, "A", ramp_s=3.0)], [("pick", "A", 1, False)]),
    ("item held half on the shelf for 3 s", [ev("held", 5, {6: 1.0}, "E", hold_s=3.0)],
     [("pick", "E", 1, False)]),
    ("two units at once", [ev("pick", 5, {1: 1.0}, "A", 2)], [("pick", "A", 2, False)]),
    ("item straddling onto the next product's lane", [ev("pick", 5, {4: 0.7, 5: 0.3}, "C")],
     [("pick", "C", 1, False)]),
    ("put-back", [ev("put", 5, {2: 1.0}, "B")], [("put", "B", 1, False)]),
    ("neighbouring events overlapping in time", [ev("pick", 5, {0: 1.0}, "A"), ev("pick", 5.3, {5: 1.0}, "D")],
     [("pick", "A", 1, False), ("pick", "D", 1, False)]),
    ("two products in one motion are split", [ev("pick", 5, {2: 1.0}, "B"), ev("pick", 5.05, {3: 1.0}, "C")],
     [("pick", "B", 1, False), ("pick", "C", 1, False)]),
    ("misplaced put-back, then its pick", [ev("put", 5, {4: 1.0}, "F"), ev("pick", 13, {4: 1.0}, "F")],
     [("put", "F", 1, True), ("pick", "F", 1, True)]),
    ("a pick while another item waits half lifted",
     [ev("held", 4, {6: 1.0}, "E", hold_s=4.0), ev("pick", 5, {2: 1.0}, "B")],
     [("pick", "B", 1, False), ("pick", "E", 1, False)]),
    # an item slid from one of its lanes to the next leaves one as it arrives on the other: nothing to charge;
    # a put-back and another shopper's pick on the two lanes cancel on the shelf too, but step apart in time
    ("an item slid along its lanes", [ev("pick", 5, {3: 1.0}, "C"), ev("put", 5, {4: 1.0}, "C")], []),
    ("slow slide", [ev("pick", 5, {3: 1.0}, "C", ramp_s=0.8), ev("put", 5, {4: 1.0}, "C", ramp_s=0.8)], []),
    ("put-back, then another shopper's pick on the next lane",
     [ev("put", 5, {3: 1.0}, "C"), ev("pick", 5.5, {4: 1.0}, "C")], [("put", "C", 1, False), ("pick", "C", 1, False)]),
    ("pick, then another shopper's put-back on the next lane",
     [ev("pick", 5, {4: 1.0}, "C"), ev("put", 5.4, {3: 1.0}, "C")], [("pick", "C", 1, False), ("put", "C", 1, False)]),
]


@pytest.mark.parametrize("name, events, expected", CASES, ids=[c[0] for c in CASES])
def test_synthetic_case(name: str, events: list[SynthEvent], expected: list[tuple]) -> None:
    drift = 10.0 if name == "strong drift" else 0.5
    msgs, _ = run_case(events, drift=drift)
    got = [(m.action, m.candidates[0].sku if m.candidates else None, m.candidates[0].qty if m.candidates else 0,
            m.candidates[0].foreign if m.candidates else None) for m in sorted(msgs, key=lambda m: m.t_start)]
    assert sorted(got) == sorted(expected), f"{name}: got {got}"
    for m in msgs:
        assert m.candidates[0].p > 0.6
        assert m.delta_g == pytest.approx(sum(ln.delta_g for ln in m.lanes), abs=0.05)
    truth = [e for e in events if e.action]
    for m in msgs:  # every event is emitted within a second of its shelf being stable again
        assert any(e.t0 - 0.5 <= m.t_start and m.t_end <= e.t_stable + 0.5 for e in truth)


def test_split_sub_events_share_a_parent() -> None:
    msgs, _ = run_case([ev("pick", 5, {2: 1.0}, "B"), ev("pick", 5.05, {3: 1.0}, "C")])
    assert len(msgs) == 2
    a, b = msgs
    assert a.parent_id is not None and a.parent_id == b.parent_id
    assert {a.event_id, b.event_id} == {a.parent_id + ".1", a.parent_id + ".2"}
    assert {a.lanes[0].lane, b.lanes[0].lane} == {"L3", "L4"}


def test_misplaced_item_is_learnt_and_unlearnt() -> None:
    store = make_store()
    pg = Planogram.from_store(store)
    rng = np.random.default_rng(3)
    events = [ev("put", 4, {4: 1.0}, "G"), ev("pick", 12, {4: 1.0}, "G")]
    ts, x = render(len(LANES), 20.0, events, rng)
    counter = iter(range(100))
    gw = ShelfGateway(Layout.from_store(store), pg, "syn", lambda: next(counter))
    lanes = [f"L{j + 1}" for j in range(len(LANES))]
    seen = []
    for b in ArrayReader(lanes, ts, x, block_s=0.25).blocks():
        for m in gw.feed(b, lanes):
            seen.append((m.action, m.candidates[0].sku, m.candidates[0].foreign, dict(pg.learned.get("L5", {}))))
    assert seen == [("put", "G", True, {"G": 1}), ("pick", "G", True, {})]


def test_latency_within_a_second_of_stable() -> None:
    events = [ev("pick", 3 + 4 * k, {k % 8: 1.0}, LANES[k % 8], wobble_g=0.05 * PRODUCTS[LANES[k % 8]])
              for k in range(8)]
    msgs, gw = run_case(events, seconds=40.0)
    assert len(msgs) == 8
    by_start = sorted(msgs, key=lambda m: m.t_start)
    for m, e in zip(by_start, events, strict=True):
        lag = gw.emit_times[m.event_id] - e.t_stable
        assert -1.0 < lag <= 1.0, (m.event_id, lag)  # early: the last swing is within the noise


@pytest.mark.parametrize("events, expected", [
    # lane -> its step, seconds after t0: the middle of the ramp (touch 0.2 s + half the ramp)
    ([ev("pick", 5, {3: 1.0}, "C", press_g=40.0, wobble_g=30.0)], {3: 0.325}),
    ([ev("put", 5, {3: 1.0}, "C"), ev("pick", 5.5, {4: 1.0}, "C")], {3: 0.325, 4: 0.825}),
    ([ev("slow", 5, {0: 1.0}, "A", ramp_s=2.0)], {0: 1.2}),
])
def test_detector_step_times(events: list[SynthEvent], expected: dict[int, float]) -> None:
    """The detector tells when each lane made its step (the middle of its ramp, late by half the boxcar)."""
    ts, x = render(len(LANES), 12.0, events, np.random.default_rng(1), 1.0, 0.5)
    det = ShelfDetector([("S1", [f"L{j + 1}" for j in range(len(LANES))])])
    changes = [ch for k in range(0, ts.size, 15) for ch in det.push(ts[k:k + 15], x[k:k + 15])]
    (ch,) = changes
    assert ch.t_step is not None
    lag = det.cfg.w / 2 / det.cfg.rate_hz
    for j, t in expected.items():
        first, last = ch.t_step[j] - T0 - 5.0 - lag
        assert t - 0.1 <= first <= last <= t + 0.1, (j, first, last)
