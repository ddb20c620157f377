"""Identification of shelf changes: candidates, sub-events, misplaced put-backs, weight twins, priors."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.store import store_from_dict
from edge.shelf.detector import ShelfChange
from edge.shelf.identify import Identifier
from edge.shelf.planogram import Planogram

T0 = 1_700_000_000.0
# lanes: L1 DUR (battery), L2 ENR (its weight twin), L3 COLA, L4 COLA, L5 TEA, L6 GUM; BAN is on no lane
PRODUCTS = {"DUR": (105.0, 1.2), "ENR": (103.5, 1.2), "COLA": (355.0, 3.0), "TEA": (547.0, 4.0),
            "GUM": (45.0, 0.7), "BAN": (126.0, 4.0), "SOAP": (230.0, 2.0)}
LANES = ["DUR", "ENR", "COLA", "COLA", "TEA", "GUM"]


def planogram() -> Planogram:
    store = store_from_dict({
        "store": {"id": "idf", "size": [5.0, 5.0]},
        "catalogue": [{"sku": k, "name": k, "price": 100, "weight_g": w, "weight_sd_g": sd}
                      for k, (w, sd) in PRODUCTS.items()],
        "shelf_units": [{"id": "U", "shelves": [{"id": "S", "lanes": [
            {"id": f"L{j + 1}", "sku": sku, "box": {"min": [0.1 * j, 1, 1], "max": [0.1 * j + 0.1, 1.3, 1.3]}}
            for j, sku in enumerate(LANES)]}]}],
        "gates": [{"id": "G", "region": {"min": [0, 0], "max": [1, 0.5]}}],
        "exits": [{"id": "X", "region": {"min": [2, 0], "max": [3, 0.5]}}],
    })
    return Planogram.from_store(store)


def change(deltas: dict[int, float], t: float = 10.0) -> ShelfChange:
    d = np.zeros(len(LANES))
    for j, v in deltas.items():
        d[j] = v
    return ShelfChange("S", [f"L{j + 1}" for j in range(len(LANES))], T0 + t, T0 + t + 1, T0 + t + 1.4, d,
                       np.full(len(LANES), 0.3), np.abs(d) >= 3.0)


def summary(parts) -> list[tuple]:
    return [(p.action, p.best.sku, p.best.qty, p.best.foreign, [ln for ln, _ in p.lanes]) for p in parts]


@pytest.mark.parametrize("deltas, expected", [
    ({2: -355.5}, [("pick", "COLA", 1, False, ["L3"])]),
    ({2: -500.0, 3: -210.0}, [("pick", "COLA", 2, False, ["L3", "L4"])]),
    ({4: -540.0, 5: -8.0}, [("pick", "TEA", 1, False, ["L5", "L6"])]),  # spill onto the gum lane
    ({0: -105.2, 1: -103.4}, [("pick", "DUR", 1, False, ["L1"]), ("pick", "ENR", 1, False, ["L2"])]),  # twins
    ({2: -355.0, 5: 45.2}, [("pick", "COLA", 1, False, ["L3"]), ("put", "GUM", 1, False, ["L6"])]),
    ({2: -354.0, 3: 356.0}, []),  # a can slid from one cola lane to the next: nothing to charge
    ({3: 547.5}, [("put", "TEA", 1, True, ["L4"])]),  # a tea put on a cola lane: misplaced
])
def test_identify_table(deltas: dict[int, float], expected: list[tuple]) -> None:
    idf = Identifier(planogram())
    parts = idf.identify(change(deltas), learn=False)
    assert sorted(summary(parts)) == sorted(expected)
    if len(parts) > 1:
        assert {p.parts for p in parts} == {len(parts)} and sorted(p.part for p in parts) == list(range(len(parts)))
    for p in parts:
        assert p.best.p > 0.5 and p.explained


def test_unexplained_weight_has_no_confident_candidate() -> None:
    idf = Identifier(planogram())
    ch = change({2: -180.0})  # half a cola can: a hand, or an item half lifted
    (part,) = idf.identify(ch, learn=False)
    assert not part.explained
    assert not idf.explained_lanes(ch).any()


def test_misplaced_put_is_learnt_and_its_pick_identified() -> None:
    pg = planogram()
    idf = Identifier(pg)
    (put,) = idf.identify(change({4: 230.4}, t=10))  # SOAP is on no lane; lands on the tea lane
    assert (put.action, put.best.sku, put.best.foreign) == ("put", "SOAP", True)
    assert pg.holds("L5") == {"TEA": None, "SOAP": 1}
    (pick,) = idf.identify(change({4: -230.1}, t=20))
    assert (pick.action, pick.best.sku, pick.best.qty, pick.best.foreign) == ("pick", "SOAP", 1, True)
    assert pick.best.p > 0.9
    assert pg.holds("L5") == {"TEA": None}


def test_a_recent_pick_tells_weight_twins_apart_on_a_misplaced_put() -> None:
    pg = planogram()
    idf = Identifier(pg)
    (pick,) = idf.identify(change({1: -103.5}, t=10))  # an Energizer taken from its own lane
    assert pick.best.sku == "ENR"
    (put,) = idf.identify(change({4: 104.0}, t=40))  # ... and put on the tea lane later: ENR, not DUR
    assert (put.best.sku, put.best.foreign) == ("ENR", True) and put.best.p > 0.8
    (pick2,) = idf.identify(change({4: -104.1}, t=60))
    assert pick2.best.sku == "ENR" and "ENR" not in pg.holds("L5")


def test_twins_are_learnt_together_and_unlearnt_together() -> None:
    pg = planogram()
    idf = Identifier(pg)
    (put,) = idf.identify(change({4: 104.2}, t=10))  # no recent pick: DUR and ENR weigh the same
    assert put.best.foreign and {c.sku for c in put.candidates[:2]} == {"DUR", "ENR"}
    assert set(pg.holds("L5")) == {"TEA", "DUR", "ENR"}
    idf.identify(change({4: -104.2}, t=20))
    assert set(pg.holds("L5")) == {"TEA"}


@pytest.mark.parametrize("grams, expected", [
    (126.3, ("BAN", 1, True)),  # a banana on the gum lane: 3 x 45 g would be 135 g
    (90.2, ("GUM", 2, False)),  # two gums put back at once
])
def test_put_quantities_and_misplacements(grams: float, expected: tuple) -> None:
    (put,) = Identifier(planogram()).identify(change({5: grams}), learn=False)
    assert (put.best.sku, put.best.qty, put.best.foreign) == expected
