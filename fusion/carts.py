"""Virtual carts: append-only logs of lines (pick, put-back, misplaced return, ops adjustment).

A line never changes once written; totals and the receipt are derived from the lines.  A put-back removes from
the cart of the shopper who put it back, matching the product among that cart's items by the shelf's weight
candidates (:func:`choose_put_back`, after reweighing them by what the cart's own items weighed when picked:
:func:`item_weight_factors` of :func:`weighed_items`), or, when none of those is in the cart, by the weight itself
(:func:`match_by_weight`: an item put back on another product's lane of a close weight).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from calibration.store import Store


@dataclass(frozen=True)
class Line:
    line_id: str
    kind: str  # pick | put_back | misplaced_return | adjustment
    sku: str
    qty: int  # signed: positive adds to the cart
    unit_price: int
    confidence: float
    margin: float
    uncertain: bool
    t: float
    event_id: str | None = None
    shopper: str | None = None
    runner_up: str | None = None
    cameras: tuple[str, ...] = ()
    reason: str = ""
    lanes: tuple[str, ...] = ()
    grams: float | None = None  # the shelf's measured weight change behind the line (absolute), if weighed

    @property
    def amount(self) -> int:
        return self.qty * self.unit_price

    def as_dict(self) -> dict:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        d["lanes"] = list(self.lanes)
        d["amount"] = self.amount
        return d


@dataclass
class Cart:
    visit: str
    lines: list[Line] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)  # reasons to hold the visit for review

    def append(self, line: Line) -> None:
        if any(ln.line_id == line.line_id for ln in self.lines):
            return  # the same evidence applied twice (replay after restart): once only
        self.lines.append(line)

    def holdings(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for ln in self.lines:
            c[ln.sku] += ln.qty
        return c

    @property
    def total(self) -> int:
        return sum(ln.amount for ln in self.lines)

    @property
    def uncertain(self) -> bool:
        return any(ln.uncertain for ln in self.lines) or bool(self.issues)

    def receipt_lines(self, store: Store) -> list[dict]:
        """Net quantity per SKU (positive only), priced from the lines themselves."""
        out = []
        price: dict[str, int] = {}
        flagged: set[str] = set()
        for ln in self.lines:
            price.setdefault(ln.sku, ln.unit_price)
            if ln.uncertain:
                flagged.add(ln.sku)
        for sku, qty in sorted(self.holdings().items()):
            if qty > 0:
                p = store.products.get(sku)
                out.append({"sku": sku, "name": p.name if p else sku, "qty": qty, "unit_price": price[sku],
                            "amount": qty * price[sku], "uncertain": sku in flagged})
        return out


def weighed_items(cart: Cart) -> dict[str, list[tuple[float, int]]]:
    """The cart's weighed pick lines per product: (grams, quantity) each, for :func:`item_weight_factors`."""
    items: dict[str, list[tuple[float, int]]] = {}
    for ln in cart.lines:
        if ln.kind == "pick" and ln.qty > 0 and ln.grams is not None:
            items.setdefault(ln.sku, []).append((ln.grams, ln.qty))
    return items


def item_weight_factors(items: dict[str, list[tuple[float, int]]], candidates: list[tuple[str, int, float]],
                        delta_g: float, weights: dict[str, tuple[float, float]], event_sd_g: float,
                        odd_share: float) -> list[tuple[str, int, float]]:
    """The shelf's candidates reweighed by earlier weighings of the very items they could be.

    The shelf reads a change against the catalogue (unit weight mean and sd per product).  An item put back
    came out of the cart, and its pick was weighed (:func:`weighed_items`); an item taken from a lane where
    goods were misplaced was weighed when it was put there.  Two products of near the same catalogue weight (a
    Twix and a pack of peanut M&Ms, 1-2 g apart) the catalogue cannot tell apart, but the very item weighs
    within the shelf's own error (``event_sd_g`` per weighing) of what it weighed before.  Each candidate's p
    is multiplied by the likelihood of ``delta_g`` under the known ``items`` of that product (sku -> (grams,
    quantity) of each weighing: a mixture over them; n items weighed together predict q of them at q/n of
    the grams, spread by both weighings and, for part of them, the unit spread) over its likelihood under the
    catalogue, and the candidates renormalised.  Both likelihoods carry an ``odd_share`` of odd weighings
    (uniform within ten catalogue spreads), so a weighing far from everything rules nothing out.  Candidates
    with no known items keep their factor 1."""
    d = abs(delta_g)
    s2 = event_sd_g * event_sd_g
    out = []
    for sku, q, p in candidates:
        own = items.get(sku)
        if not own or sku not in weights:
            out.append((sku, q, p))
            continue
        mu, sd = weights[sku]
        cat_var = q * sd * sd + s2
        odd = odd_share / (20.0 * math.sqrt(cat_var))  # an odd weighing: anywhere within 10 spreads either way
        cat = (1 - odd_share) * _normal(d, q * mu, cat_var) + odd
        num = den = 0.0
        for grams, n in own:
            if q > n:
                continue
            var = s2 + (q / n) ** 2 * s2 + q * (n - q) / n * sd * sd
            num += n * _normal(d, grams * q / n, var)
            den += n
        if den == 0:
            out.append((sku, q, p))
            continue
        out.append((sku, q, p * ((1 - odd_share) * num / den + odd) / cat))
    total = sum(c[2] for c in out)
    return [(sku, q, p / total) for sku, q, p in out] if total > 0 else list(candidates)


def _normal(x: float, mean: float, var: float) -> float:
    return math.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def match_by_weight(cart: Cart, delta_g: float, weights: dict[str, tuple[float, float]], shelf_sd_g: float,
                    max_z: float, max_qty: int = 3) -> tuple[str, int, float] | None:
    """What the cart holds that weighs ``delta_g`` grams: ``(sku, qty, z)`` with z = |delta - qty w| /
    sqrt(qty sd^2 + shelf_sd_g^2) from ``weights`` (sku -> unit weight and its sd), the smallest one within
    ``max_z`` -- and None when another holding is within ``max_z`` too (which one came back is not known)."""
    fits = []
    for sku, held in sorted(cart.holdings().items()):
        if sku not in weights:
            continue
        for q in range(1, min(held, max_qty) + 1):
            z = weight_z(delta_g, q, weights[sku], shelf_sd_g)
            if z <= max_z:
                fits.append((z, sku, q))
    if len({sku for _, sku, _ in fits}) != 1:
        return None
    z, sku, q = min(fits)
    return sku, q, z


def weight_z(delta_g: float, qty: int, unit: tuple[float, float], shelf_sd_g: float) -> float:
    """How many spreads ``delta_g`` grams lie from ``qty`` units of weight ``unit`` (mean, sd)."""
    w, sd = unit
    return abs(abs(delta_g) - qty * w) / (qty * sd * sd + shelf_sd_g * shelf_sd_g) ** 0.5


def choose_put_back(cart: Cart, candidates: list[tuple[str, int, float]], min_mass: float = 0.0,
                    weighs_right: Callable[[str, int], bool] | None = None) -> tuple[str, int, float] | None:
    """The candidate (sku, qty, p) a put-back most likely returns, among what the cart holds.

    What is put back came out of this cart, so the shelf's probabilities are conditioned on that: the
    returned ``p`` is the candidate's share of the candidates the cart could have given back -- when those
    together hold at least ``min_mass`` of the shelf's belief, or ``weighs_right(sku, qty)`` says the chosen
    one's weight fits the change (a misplaced item whose weight several catalogue products share: the shelf
    splits its belief among them, the cart holds one).  Otherwise the shelf's own ``p`` stands (the cart
    explains the weight poorly: something else went wrong, and the line stays as unsure as the shelf was)."""
    held = cart.holdings()
    fitting = [c for c in candidates if held.get(c[0], 0) >= c[1]]
    if not fitting:
        return None
    sku, qty, p = max(fitting, key=lambda c: (c[2], c[0]))
    mass = sum(c[2] for c in fitting)
    if mass > 0 and (mass >= min_mass or (weighs_right is not None and weighs_right(sku, qty))):
        p = p / mass
    return sku, qty, p
