"""A put-back's product is judged among what the cart holds (fusion/carts.py ``choose_put_back``), or by its weight
when the shelf read it as something the cart does not hold (``match_by_weight``)."""

from __future__ import annotations

import math

import pytest

from fusion.carts import (
    Cart,
    Line,
    choose_put_back,
    item_weight_factors,
    match_by_weight,
    weighed_items,
    weight_z,
)

SHELF = [("POWERADE", 1, 0.65), ("GATORADE", 1, 0.30), ("WATER", 2, 0.05)]  # a misplaced 640 g return


def _cart(*skus: str) -> Cart:
    cart = Cart("v1")
    for k, sku in enumerate(skus):
        cart.append(Line(line_id=f"e{k}", kind="pick", sku=sku, qty=1, unit_price=100, confidence=1.0,
                         margin=1.0, uncertain=False, t=float(k)))
    return cart


@pytest.mark.parametrize(("held", "min_mass", "expected"), [
    (("POWERADE",), 0.3, ("POWERADE", 1, 1.0)),  # only one candidate could have come from this cart
    (("GATORADE",), 0.3, ("GATORADE", 1, 1.0)),  # the shelf's second guess, but the cart only holds it
    (("POWERADE", "GATORADE"), 0.3, ("POWERADE", 1, 0.65 / 0.95)),  # both held: still unsure
    (("GATORADE",), 0.5, ("GATORADE", 1, 0.30)),  # the cart explains too little of the weight: shelf's p
    (("WATER", "WATER"), 0.3, ("WATER", 2, 0.05)),
    (("POWERADE",), 0.0, ("POWERADE", 1, 1.0)),
    (("JUICE",), 0.3, None),  # nothing of the kind in the cart
    ((), 0.3, None),
])
def test_a_put_back_is_judged_among_what_the_cart_holds(held, min_mass, expected):
    got = choose_put_back(_cart(*held), SHELF, min_mass)
    if expected is None:
        assert got is None
    else:
        assert got[:2] == expected[:2] and got[2] == pytest.approx(expected[2])


# a misplaced 211 g return whose weight three catalogue products share: the shelf splits its belief
TWINS = [("GOLDFISH", 1, 0.53), ("APPLE", 1, 0.21), ("MANGO", 1, 0.21)]


@pytest.mark.parametrize(("held", "weighs_right", "expected"), [
    (("APPLE",), lambda sku, qty: True, ("APPLE", 1, 1.0)),  # the cart holds one of them, and it weighs right
    (("APPLE",), lambda sku, qty: False, ("APPLE", 1, 0.21)),  # ... it does not: the shelf's p stands
    (("APPLE",), None, ("APPLE", 1, 0.21)),
    (("APPLE", "MANGO"), lambda sku, qty: True, ("MANGO", 1, 0.5)),  # two of them held: a coin toss
    (("GOLDFISH",), lambda sku, qty: False, ("GOLDFISH", 1, 1.0)),  # enough of the shelf's belief anyway
])
def test_a_put_back_that_weighs_right_is_judged_among_what_the_cart_holds(held, weighs_right, expected):
    got = choose_put_back(_cart(*held), TWINS, 0.3, weighs_right)
    assert got[:2] == expected[:2] and got[2] == pytest.approx(expected[2])


@pytest.mark.parametrize(("delta_g", "qty", "unit", "expected"), [
    (-146.0, 2, (73.0, 1.5), 0.0),
    (77.5, 1, (73.0, 1.5), 4.5 / (1.5**2 + 1.5**2) ** 0.5),  # picks and puts alike
    (-70.0, 1, (73.0, 0.0), 2.0),
])
def test_weight_z(delta_g, qty, unit, expected):
    assert weight_z(delta_g, qty, unit, 1.5) == pytest.approx(expected)


WEIGHTS = {"CLIF": (73.0, 1.5), "BANDAID": (75.0, 1.2), "CHIPS": (28.0, 1.0)}


@pytest.mark.parametrize(("held", "delta_g", "expected"), [
    (("CLIF",), 77.5, ("CLIF", 1, 4.5 / (1.5 ** 2 + 1.5 ** 2) ** 0.5)),  # a Clif bar on the Band-Aid lane
    (("CLIF", "CLIF"), 146.5, ("CLIF", 2, 0.5 / (2 * 1.5 ** 2 + 1.5 ** 2) ** 0.5)),  # two of them at once
    (("CLIF", "CHIPS"), 28.4, ("CHIPS", 1, 0.4 / (1.0 + 1.5 ** 2) ** 0.5)),
    (("CLIF", "BANDAID"), 74.0, None),  # both weigh that much: which came back is not known
    (("CLIF",), 90.0, None),  # nothing in the cart weighs that
    (("JUICE",), 73.0, None),  # no weight known for it
    ((), 73.0, None),
])
def test_a_put_back_nothing_on_the_shelf_explains_is_matched_to_the_cart_by_weight(held, delta_g, expected):
    got = match_by_weight(_cart(*held), delta_g, WEIGHTS, shelf_sd_g=1.5, max_z=4.0)
    if expected is None:
        assert got is None
    else:
        assert got[:2] == expected[:2] and got[2] == pytest.approx(expected[2])


# two candy bars the catalogue cannot tell apart (55.0 and 53.5 g, 0.8 g spread; the shelf weighs to 1 g)
BAR_WEIGHTS = {"TWIX": (55.0, 0.8), "MMS": (53.5, 0.8)}


def _shelf(delta_g: float) -> list[tuple[str, int, float]]:
    """The shelf's belief from the catalogue alone, as the gateway's identification gives it."""
    like = {sku: math.exp(-0.5 * (abs(delta_g) - mu) ** 2 / (sd * sd + 1.0)) for sku, (mu, sd) in
            BAR_WEIGHTS.items()}
    total = sum(like.values())
    return [(sku, 1, v / total) for sku, v in like.items()]


def _weighed(*picks: tuple[str, int, float | None]) -> Cart:
    cart = Cart("v1")
    for k, (sku, qty, grams) in enumerate(picks):
        cart.append(Line(line_id=f"e{k}", kind="pick", sku=sku, qty=qty, unit_price=100, confidence=1.0,
                         margin=1.0, uncertain=False, t=float(k), grams=grams))
    return cart


@pytest.mark.parametrize(("picks", "delta_g", "twix"), [
    # a light Twix (53.6 g) and a heavy M&Ms (55.2 g) picked: the catalogue reads 53.7 g as the M&Ms
    ((("TWIX", 1, 53.6), ("MMS", 1, 55.2)), 53.7, (0.6, 1.0)),
    ((("TWIX", 1, 53.6), ("MMS", 1, 55.2)), -55.1, (0.0, 0.4)),  # ... and 55.1 g as the Twix (sign: either)
    ((("TWIX", 1, 54.3), ("MMS", 1, 54.3)), 54.3, (0.4, 0.6)),  # both weighed alike: no help
    ((("TWIX", 1, None), ("MMS", 1, None)), 53.7, (0.3, 0.4)),  # lines not weighed: the shelf's p stands
    ((("TWIX", 2, 107.2), ("MMS", 1, 55.2)), 53.7, (0.6, 1.0)),  # one of a pair: half the pair's grams
    ((("TWIX", 1, 53.6), ("MMS", 1, 55.2)), 75.0, (0.99, 1.0)),  # far from every item: the shelf's reading stands
])
def test_a_put_back_is_reweighed_by_what_the_carts_items_weighed(picks, delta_g, twix):
    shelf = _shelf(delta_g)
    got = item_weight_factors(weighed_items(_weighed(*picks)), shelf, delta_g, BAR_WEIGHTS, 1.0, 0.05)
    p = {sku: pr for sku, _, pr in got}
    assert sum(p.values()) == pytest.approx(1.0)
    assert twix[0] <= p["TWIX"] <= twix[1], ({s: q for s, _, q in shelf}, p)
