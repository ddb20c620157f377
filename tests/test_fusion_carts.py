"""A put-back's product is judged among what the cart holds (fusion/carts.py ``choose_put_back``)."""

from __future__ import annotations

import pytest

from fusion.carts import Cart, Line, choose_put_back

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
