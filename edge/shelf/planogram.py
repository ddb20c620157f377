"""The shelf gateway's planogram: which products each lane holds, and their unit weights.

Two sources build it:

* :meth:`Planogram.from_store` — a walkout store description (lanes with ``sku`` and ``load_cells``, the
  catalogue with ``weight_g`` and ``weight_sd_g``);
* :meth:`Planogram.from_aifi_csv` — the AiFi product CSV as it is (columns ``Name,Gondola,Shelf,Plate,Weight,
  Price,Image``; ``Plate`` may list several plates as ``4,5``, ``4-6`` or ``[4, 5]``).  Each plate becomes a lane
  ``G.S.P`` on the shelf ``G.S``; products get an SKU made from their name (:func:`sku_from_name`), and rows
  with gondola ``-1`` are catalogue-only products.

Besides the fixed planogram (a lane's *home* products) the planogram learns: a misplaced put-back adds the
product to the lanes it landed on (:meth:`Planogram.learn`), and a later pick of it takes it off again
(:meth:`Planogram.forget`), so that pick is identified right.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from calibration.config import ConfigError
from calibration.store import Store

log = logging.getLogger(__name__)

_SKU_BAD = re.compile(r"[^A-Za-z0-9_.:\-]+")
LANE_RE = re.compile(r"^(?P<g>\d+)\.(?P<s>\d+)\.(?P<p>\d+)$")

# The AiFi catalogue gives one nominal weight per product, and the plates are not calibrated against it (the
# real FIJI .5 L bottle reads 559 g against a listed 538 g): the spread is a share of the unit weight.
AIFI_WEIGHT_SD_FRACTION = 0.05
AIFI_WEIGHT_SD_MIN_G = 2.0


@dataclass(frozen=True)
class ProductInfo:
    """One catalogue product as the gateway needs it."""

    sku: str
    name: str
    weight_g: float
    weight_sd_g: float
    price: int = 0  # integer minor units


@dataclass
class Planogram:
    """Products, shelves (lanes left to right) and what each lane holds.

    ``home[lane]`` is the set of SKUs the planogram puts on the lane; ``learned[lane][sku]`` the number of
    misplaced items of ``sku`` known to lie on it now.
    """

    products: dict[str, ProductInfo]
    shelves: dict[str, list[str]]
    home: dict[str, frozenset[str]] = field(default_factory=dict)
    learned: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    twins: dict[str, list[frozenset[str]]] = field(default_factory=lambda: defaultdict(list))
    belief: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def __post_init__(self) -> None:
        self.version = 0  # bumped by every change of what the lanes hold
        self.lane_shelf = {ln: s for s, lanes in self.shelves.items() for ln in lanes}
        self.lane_pos = {ln: i for lanes in self.shelves.values() for i, ln in enumerate(lanes)}
        for lane in self.lane_shelf:
            self.home.setdefault(lane, frozenset())

    # ---------------------------------------------------------------------------------------- queries
    def holds(self, lane: str) -> dict[str, int | None]:
        """SKUs on ``lane``: home products map to ``None`` (count unknown), learned ones to their count."""
        out: dict[str, int | None] = {sku: None for sku in self.home.get(lane, ())}
        for sku, n in self.learned.get(lane, Counter()).items():
            if n > 0 and sku not in out:
                out[sku] = n
        return out

    def is_home(self, lane: str, sku: str) -> bool:
        return sku in self.home.get(lane, ())

    # ---------------------------------------------------------------------------------------- learning
    def learn(self, lanes: list[str], sku: str, qty: int, alternatives: dict[str, float] | None = None) -> None:
        """A misplaced put-back of ``qty`` items of ``sku`` landed on ``lanes``: they now also hold it.

        ``alternatives`` are products the weight could not tell from ``sku`` (twins), with how likely each is
        relative to ``sku``: they are learnt as well, and a later pick of any of them unlearns them all."""
        alternatives = alternatives or {}
        group = frozenset((sku, *alternatives))
        for lane in lanes:
            for k in group:
                if not self.is_home(lane, k):
                    self.learned[lane][k] += qty
                    self.belief[lane][k] = max(self.belief[lane].get(k, 0.0), alternatives.get(k, 1.0))
            if len(group) > 1:
                self.twins[lane].append(group)
        self.version += 1
        log.info("planogram learned %d x %s on lanes %s%s", qty, sku, ",".join(lanes),
                 f" (or {', '.join(alternatives)})" if alternatives else "")

    def forget(self, lanes: list[str], sku: str, qty: int) -> None:
        """``qty`` misplaced items of ``sku`` (or of a twin learnt with it) were picked from ``lanes``."""
        self.version += 1
        for lane in lanes:
            group = {sku}
            for g in list(self.twins.get(lane, [])):
                if sku in g:
                    group |= g
                    self.twins[lane].remove(g)
                    break
            c = self.learned.get(lane)
            for k in group:
                if c and c.get(k, 0) > 0:
                    c[k] = max(0, c[k] - qty)
                    if c[k] == 0:
                        del c[k]
                        self.belief[lane].pop(k, None)

    def belief_of(self, lane: str, sku: str) -> float:
        """How sure the planogram is that ``lane`` holds ``sku`` (1 for home products and plain learnt
        ones, less for a weight twin learnt along with another)."""
        if self.is_home(lane, sku):
            return 1.0
        return self.belief.get(lane, {}).get(sku, 1.0)

    # ---------------------------------------------------------------------------------------- builders
    @classmethod
    def from_store(cls, store: Store) -> Planogram:
        products = {
            p.sku: ProductInfo(p.sku, p.name, float(p.weight_g), float(p.weight_sd_g), int(p.price))
            for p in store.catalogue
        }
        shelves = {s.id: [ln.id for ln in s.lanes] for s in store.shelves.values()}
        home = {ln.id: frozenset([ln.sku] if ln.sku else []) for ln in store.lanes.values()}
        return cls(products, shelves, home)

    @classmethod
    def from_aifi_csv(cls, path: str | Path, lanes: list[str] | None = None) -> Planogram:
        """Read an AiFi ``*-all_product.csv``.  ``lanes`` (ids ``G.S.P``, e.g. the plates of a trace folder)
        adds plates that hold nothing to their shelves, so every traced plate is a lane."""
        rows = _read_aifi_rows(Path(path))
        by_name: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_name[row["name"]].append(row)
        skus = _unique_skus(list(by_name))
        products: dict[str, ProductInfo] = {}
        home: dict[str, set[str]] = defaultdict(set)
        weightless = []
        for name, group in by_name.items():
            weight = _pick_weight(name, group, path)
            if weight is None:
                weightless.append(name)
                continue
            sku = skus[name]
            sd = max(AIFI_WEIGHT_SD_MIN_G, AIFI_WEIGHT_SD_FRACTION * weight)
            price = _pick_price(group)
            products[sku] = ProductInfo(sku, name, weight, sd, price)
            for row in group:
                for lane in row["lanes"]:
                    home[lane].add(sku)
        if weightless:
            log.warning("%s: %d products without a positive weight left out (%s)", path, len(weightless),
                        ", ".join(sorted(weightless)[:5]) + (" ..." if len(weightless) > 5 else ""))
        all_lanes = set(home) | set(lanes or ())
        shelves: dict[str, list[str]] = defaultdict(list)
        for lane in all_lanes:
            m = LANE_RE.match(lane)
            if m is None:
                continue
            shelves[f"{m['g']}.{m['s']}"].append(lane)
        for lanes_of in shelves.values():
            lanes_of.sort(key=lambda ln: int(ln.rsplit(".", 1)[1]))
        ordered = {s: shelves[s] for s in sorted(shelves, key=lambda s: tuple(int(x) for x in s.split(".")))}
        return cls(products, ordered, {ln: frozenset(v) for ln, v in home.items()})


# -------------------------------------------------------------------------------------------- AiFi helpers
def sku_from_name(name: str) -> str:
    """An SKU id (``[A-Za-z0-9][A-Za-z0-9_.:-]*``, at most 64 characters) made from a product name."""
    s = _SKU_BAD.sub("_", name.strip()).strip("_.:-")
    s = re.sub(r"_+", "_", s)
    if not s or not s[0].isalnum():
        s = "P" + s
    if len(s) > 64:
        s = s[:55] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return s


def _unique_skus(names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(names):
        base = sku_from_name(name)
        sku, k = base, 2
        while sku in used:
            suffix = f"-{k}"
            sku = base[: 64 - len(suffix)] + suffix
            k += 1
        used.add(sku)
        out[name] = sku
    return out


def parse_plates(text: str) -> list[int]:
    """Plates of an AiFi row: ``7``, ``4,5``, ``4-6``, ``[4, 5]``; ``-1`` means not on a shelf (empty list)."""
    t = text.strip().strip("[]()").strip()
    if not t:
        return []
    out: list[int] = []
    for part in re.split(r"[,;\s]+", t):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m[1]), int(m[2])
            out.extend(range(min(a, b), max(a, b) + 1))
        else:
            v = int(float(part))
            if v >= 1:
                out.append(v)
    return sorted(set(out))


_AIFI_COLUMNS = ("Name", "Gondola", "Shelf", "Plate", "Weight")


def _read_aifi_rows(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(path, "<file>", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "<file>", f"cannot read: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in _AIFI_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(path, "<header>", f"missing AiFi product columns {missing} "
                          f"(have {reader.fieldnames})")
    rows = []
    bad = 0
    for i, raw in enumerate(reader, start=2):
        try:
            name = (raw["Name"] or "").strip()
            g, s = int(float(raw["Gondola"])), int(float(raw["Shelf"]))
            plates = parse_plates(raw["Plate"] or "") if g >= 1 and s >= 1 else []
            weight = float(raw["Weight"])
            price = float(raw.get("Price") or 0)
        except (TypeError, ValueError) as exc:
            bad += 1
            log.warning("%s line %d: skipped (%s)", path, i, exc)
            continue
        if not name:
            bad += 1
            log.warning("%s line %d: skipped (no name)", path, i)
            continue
        rows.append({"name": name, "weight": weight, "price": price,
                     "lanes": [f"{g}.{s}.{p}" for p in plates]})
    if not rows:
        raise ConfigError(path, "<rows>", f"no usable product rows ({bad} bad)")
    return rows


def _pick_weight(name: str, group: list[dict], path: str | Path) -> float | None:
    """The unit weight of a product listed in several rows: placed rows first, then the most common
    positive weight.  None when no row has a positive weight."""
    placed = [r["weight"] for r in group if r["lanes"] and r["weight"] > 0]
    pool = placed or [r["weight"] for r in group if r["weight"] > 0]
    if not pool:
        return None
    weight, _ = Counter(pool).most_common(1)[0]
    if len(set(pool)) > 1 or len(pool) < sum(1 for r in group if r["weight"] > 0):
        log.info("%s: product %r has several weights; using %.1f g", path, name, weight)
    return float(weight)


def _pick_price(group: list[dict]) -> int:
    prices = [r["price"] for r in group if r["price"] >= 0]
    return round(Counter(prices).most_common(1)[0][0] * 100) if prices else 0
