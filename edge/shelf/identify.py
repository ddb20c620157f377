"""What was taken or put back: candidates ``(sku, qty, p)`` for a shelf change, from the planogram and the
weight likelihood, and the split of one change into per-product sub-events.

Model (per group of lanes that moved together)
----------------------------------------------
* **Weight**: the group's total ``G`` (grams, absolute) against ``q`` units of product ``P``:
  ``G ~ N(q * w_P, q * sd_P^2 + sd_meas^2 + (rel_sd * q * w_P)^2)``, ``q = 1 .. max_qty``; the prior of ``q``
  falls by ``qty_decay`` per extra unit (``qty_decay_put`` for puts: several units put back at once are rare).
* **Location**: the share of the group's moved grams that lies on lanes holding ``P`` (lanes next to them count
  ``neighbour_share``): an item straddling two plates spills onto a neighbour, but most of it lies on its own
  lanes.  The log-likelihood adds ``location_power * log(share)``.
* **Hidden spill**: an item lying partly on the next plate may leave it a change too small to count (below the
  detector's ``max(lane_min_g, k_lane * sd)``), so the group weighs less than the item.  Each uninvolved lane
  beside the group whose change has the group's sign adds a reading of the weight with that change included
  (its grams uniform below the threshold, ``hidden_spill_prior`` per side, against the lane's own noise); the
  likelihood is the mixture of the readings, and a group is explained when either reading fits.
* **Prior**: products on (or next to) the group's lanes share ``1 - foreign_prior - unknown_prior`` (a learnt
  weight twin only with the belief it was learnt with); other catalogue products share ``foreign_prior`` (a
  misplaced put-back; far smaller for picks).  For puts the prior follows what shoppers carry: products picked
  in the last ``outstanding_window_s`` and not put back are ``outstanding_boost`` times likelier to be the
  misplaced item, and every unit put back beyond those picked lately costs ``missing_put_factor``.
  ``unknown`` (not a catalogue item: a hand, half an item) has a flat density over ``unknown_range_g``.
* Candidates carry their posterior ``p`` (the unknown's share is what is missing to 1); ``foreign`` marks a
  product that does not belong to the lanes that carry most of the change.  A group is *explained* when its best
  candidate beats ``unknown``, lies within ``explain_max_z`` sds of the weight and (unless it is a misplaced
  item) has ``explain_min_share`` of the grams on its lanes; the detector emits only explained groups.

Groups and sub-events
---------------------
Lanes that changed are grouped by sign (a pick and a put in one motion are two sub-events).  Within a sign,
lanes are cut into clusters where two or more unchanged lanes lie between (an item lies on adjacent lanes
only); a cluster too light to be one unit of the products around it is noise and is dropped.  Each cluster is
then taken as one group or cut into up to three contiguous segments: the cut that explains the most grams wins,
then the one with more segments explained by the lanes' own products (separate lanes that each lost whole items
are separate takes; not counted where a segment is an item no lane holds, put down from elsewhere: then the
evidence decides between one such item across two lanes and a put-back beside it), then the highest evidence
(``split_prior`` per extra segment).  Two takes side by side with one item lying partly across the cut (up to
``spill_max_share`` of a unit) are found by moving those grams back: read as one group they would be so many units
of one of the two products.  Sub-events of one change share a parent id.  Two opposite groups of one
product on its own touching lanes that cancel are an item slid along its lanes: no event -- unless the
detector's step times show the two lanes stepped apart in time (more than ``slide_sync_s`` between them).  A
slid item leaves one lane as it arrives on the next: the two lanes pass half their change together.  A
put-back and another shopper's pick of the same product at about the same moment step one after the other
(between them the shelf holds one item more, or one less) and are two events.

Learning
--------
A put identified as a product from elsewhere teaches the planogram that the lanes now hold it (with its weight
twins, at their relative belief, when the weight cannot tell them apart); a later pick of it unlearns it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field, replace
from itertools import combinations, pairwise

import numpy as np

from edge.shelf.detector import ShelfChange
from edge.shelf.planogram import Planogram

log = logging.getLogger(__name__)

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


@dataclass(frozen=True)
class IdentifyConfig:
    rel_sd: float = 0.01  # scale error of a lane, relative
    max_qty: int = 24
    qty_decay: float = 0.35  # prior of q units falls by this factor per extra unit (picks)
    qty_decay_put: float = 0.05  # puts of several units at once are rarer still
    location_power: float = 4.0
    neighbour_share: float = 0.1
    location_floor: float = 0.02
    foreign_prior_put: float = 0.05
    foreign_prior_pick: float = 0.0005
    unknown_prior: float = 0.05
    unknown_range_g: float = 5000.0
    split_prior: float = 0.3
    event_min_g: float = 8.0
    learn_min_p: float = 0.5  # a put is learnt as misplaced when products from elsewhere have this much p
    learn_twin_min_p: float = 0.15  # ... each with at least this much p is learnt (weight twins)
    outstanding_boost: float = 50.0  # a misplaced put is this much likelier a product picked lately
    outstanding_window_s: float = 1800.0  # ... within this many seconds (capture time)
    missing_put_factor: float = 0.2  # each unit put back beyond those picked lately makes a put this unlikelier
    explain_max_z: float = 3.5  # a group is explained when its best candidate is this close in weight
    explain_min_share: float = 0.6  # ... and most of the moved grams lie on lanes holding it
    spill_max_share: float = 0.35  # two takes side by side: at most this much of one unit lay across the cut
    spill_prior: float = 0.1  # ... which happens this often
    # an item lying partly on the next lane leaves it a change too small to count (below the detector's
    # k_lane sds): the group then weighs less than the item.  A same-signed change of an uninvolved neighbour
    # may be such a hidden spill, this often on each side
    hidden_spill_prior: float = 0.02
    hidden_spill_k: float = 6.0  # the detector's k_lane and lane_min_g: a hidden spill lies below the larger
    hidden_spill_min_g: float = 3.0  # ... of this many sds of the lane and this many grams
    slide_sync_s: float = 0.2  # the two lanes of a slid item pass half their change no further apart than this
    min_p: float = 0.001
    max_candidates: int = 8


@dataclass
class Candidate:
    sku: str
    qty: int
    p: float
    foreign: bool = False


@dataclass
class Identified:
    """One (sub-)event: ``lanes`` ``[(lane id, delta_g)]``, its total, action and candidates.  Sub-events of
    one change have ``parts > 1`` and ``part`` 0, 1, ..."""

    change: ShelfChange
    lanes: list[tuple[str, float]]
    total_g: float
    action: str
    candidates: list[Candidate]
    p_unknown: float
    z: float = 0.0  # weight residual of the best candidate, in its standard deviations
    share: float = 1.0  # of the moved grams, the share on lanes that hold the best candidate (1: foreign)
    explained: bool = True  # the best candidate explains the group (see Identifier._explained)
    part: int = 0
    parts: int = 1
    dropped: list[tuple[str, float]] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclass
class _View:
    """What the lanes of a change's shelf hold, as arrays over the shelf's products (rows) and lanes."""

    holds: list[dict[str, int | None]]  # per lane of the shelf: SKU -> learnt count (None: home)
    home: list[frozenset[str]]
    skus: list[str]  # products on the shelf (rows below)
    held: np.ndarray  # (k, lanes) bool: the lane holds the product
    placed: np.ndarray  # (k, lanes) location weight: 1 on its lanes, neighbour_share beside them
    is_home: np.ndarray  # (k, lanes) bool
    belief: np.ndarray  # (k, lanes) how sure the lane holds it (0 where it does not)
    count: np.ndarray  # (k, lanes) units learnt there (inf for home products, 0 where it is not)
    scored: dict = field(default_factory=dict)  # (lanes, sign) -> _Scored, for this change


@dataclass
class _Scored:
    skus: list[str]
    qty: np.ndarray  # (H,)
    logp: np.ndarray  # (H,) unnormalised log posterior
    prod: np.ndarray  # (H,) index into skus
    foreign: np.ndarray  # (P,) bool per product
    log_unknown: float
    evidence: float
    z: np.ndarray  # (H,) weight residual in sds
    share: np.ndarray  # (P,) location share per product (1 for products from elsewhere)


class Identifier:
    """Identifies shelf changes against a planogram (which it updates on misplaced put-backs)."""

    def __init__(self, planogram: Planogram, config: IdentifyConfig | None = None):
        self.pg = planogram
        self.cfg = config or IdentifyConfig()
        skus = sorted(planogram.products)
        self.all_skus = skus
        self.sku_index = {s: i for i, s in enumerate(skus)}
        self.w = np.array([planogram.products[s].weight_g for s in skus])
        self.sd = np.array([planogram.products[s].weight_sd_g for s in skus])
        self.sd2 = self.sd**2
        self._last: tuple | None = None  # (key, result) of the last identification
        self.outstanding = np.zeros(len(skus))  # units picked lately and not put back, per SKU
        self._picked: dict[int, deque] = {}  # SKU index -> (capture time, units) of those picks
        self._acct_version = 0

    # ------------------------------------------------------------------------------------- public
    def explained_lanes(self, change: ShelfChange) -> np.ndarray:
        """The detector's ``explain`` callback: per lane of the shelf, whether a product (better than
        'unknown') explains the group the lane moved with.  An item slid along its own lanes counts as
        explained (there is nothing to emit for it)."""
        parts, consumed = self._identify(change)
        mask = np.zeros(len(change.lanes), bool)
        pos = {ln: j for j, ln in enumerate(change.lanes)}
        for p in parts:
            if p.explained:
                for ln, _ in p.lanes:
                    mask[pos[ln]] = True
        for ln in consumed:
            mask[pos[ln]] = True
        return mask

    def identify(self, change: ShelfChange, learn: bool = True) -> list[Identified]:
        """Candidates for a change, split into sub-events where it spans several products or both signs.
        With ``learn``, a misplaced put-back teaches the planogram and a pick of a learnt item unlearns it."""
        out, _ = self._identify(change)
        if learn:
            for r in out:
                self._learn(r)
                self._account(r)
        return out

    def _account(self, r: Identified) -> None:
        """Keep the units picked lately and not put back (the prior of misplaced put-backs)."""
        best = r.best
        t = r.change.t_end
        self._acct_version += 1
        for i, q in list(self._picked.items()):  # forget picks older than the window
            while q and q[0][0] < t - self.cfg.outstanding_window_s:
                self.outstanding[i] -= q.popleft()[1]
            if not q:
                del self._picked[i]
        if best is None or best.p < 0.5:
            return
        i = self.sku_index[best.sku]
        if r.action == "pick":
            self._picked.setdefault(i, deque()).append((t, best.qty))
            self.outstanding[i] += best.qty
            return
        left = best.qty
        q = self._picked.get(i)
        while q and left > 0:  # a put-back returns the oldest units first
            tq, n = q.popleft()
            used = min(n, left)
            left -= used
            self.outstanding[i] -= used
            if n > used:
                q.appendleft((tq, n - used))

    def _identify(self, change: ShelfChange) -> tuple[list[Identified], list[str]]:
        """(sub-events, lanes consumed without an event: an item that slid along its lanes).  The detector's
        question and the gateway's are usually the same change: the last answer is kept."""
        key = (change.shelf, change.t_start, change.t_emit, change.delta.tobytes(), change.involved.tobytes(),
               None if change.t_step is None else change.t_step.tobytes(), self.pg.version, self._acct_version)
        if self._last is not None and self._last[0] == key:
            parts, consumed = self._last[1]
            return [replace(p, change=change) for p in parts], consumed
        result = self._identify_uncached(change)
        self._last = (key, result)
        return result

    def _identify_uncached(self, change: ShelfChange) -> tuple[list[Identified], list[str]]:
        c = self.cfg
        inv = np.flatnonzero(change.involved)
        view = self._view(change)
        out: list[Identified] = []
        dropped: list[tuple[str, float]] = []
        for sign in (-1.0, 1.0):
            lanes = [int(j) for j in inv if np.sign(change.delta[j]) == sign]
            if not lanes:
                continue
            if abs(change.delta[lanes].sum()) < c.event_min_g:
                dropped.extend((change.lanes[j], float(change.delta[j])) for j in lanes)
                continue
            for cluster in self._clusters(change, lanes, dropped, view):
                segs, spilt = self._best_partition(change, cluster, sign, view)
                if spilt is None:
                    out.extend(self._result(change, seg, sign, view) for seg in segs)
                    continue
                log.info("shelf %s: two takes side by side, one spilt across lanes %s | %s", change.shelf,
                         [change.lanes[j] for j in segs[0]], [change.lanes[j] for j in segs[1]])
                ch, v = replace(change, delta=spilt), replace(view, scored={})
                out.extend(replace(self._result(ch, seg, sign, v), change=change) for seg in segs)
        # two same-product groups of opposite sign that cancel: an item slid along its lanes, no event
        if len(out) == 2 and out[0].action != out[1].action and self._is_slide(change, out):
            log.info("shelf %s: item slid between lanes (%.1f g / %.1f g); no event", change.shelf,
                     out[0].total_g, out[1].total_g)
            return [], [ln for r in out for ln, _ in r.lanes]
        for k, r in enumerate(out):
            r.part, r.parts = k, len(out)
            r.dropped = dropped
        return out, []

    # ------------------------------------------------------------------------------------- grouping
    def _clusters(self, change: ShelfChange, lanes: list[int], dropped: list[tuple[str, float]],
                  view: _View) -> list[list[int]]:
        """Lanes of one sign cut where two or more quiet lanes lie between (one item spans adjacent lanes
        only); a cluster too light to be one unit of the products around it is noise and is dropped."""
        c = self.cfg
        clusters: list[list[int]] = []
        for j in sorted(lanes):
            if clusters and j - clusters[-1][-1] <= 2:
                clusters[-1].append(j)
            else:
                clusters.append([j])
        keep = []
        for cl in clusters:
            mass = abs(float(change.delta[cl].sum()))
            ws = [self.pg.products[s].weight_g for s in self._near_products(view, cl)]
            need = max(c.event_min_g, 0.5 * min(ws)) if ws else c.event_min_g
            if mass < need and (len(clusters) > 1 or mass < c.event_min_g):
                dropped.extend((change.lanes[j], float(change.delta[j])) for j in cl)
            else:
                keep.append(cl)
        return keep

    def _near_products(self, view: _View, lanes: list[int]) -> set[str]:
        out: set[str] = set()
        n = len(view.holds)
        for j in lanes:
            for k in (j - 1, j, j + 1):
                if 0 <= k < n:
                    out |= {s for s in view.holds[k] if s in self.pg.products}
        return out

    def _best_partition(self, change: ShelfChange, cluster: list[int], sign: float, view: _View,
                        max_parts: int = 3) -> tuple[list[list[int]], np.ndarray | None]:
        """The cluster as one item group or cut into up to ``max_parts`` contiguous segments (several items
        side by side), whichever explains more of the moved grams by products, then in more parts explained
        by the lanes' own products (separate lanes that each lost whole items are separate takes), then has
        the higher evidence (``split_prior`` per extra segment).  With it, the change's lane deltas corrected for
        an item spilt across the cut (see :meth:`_spill_split`), or None when no such correction was made."""
        n = len(cluster)
        if n == 1:
            return [cluster], None
        cache: dict[tuple[int, int], tuple[float, int, float, bool]] = {}
        rows = {sku: r for r, sku in enumerate(view.skus)}

        def ev(a: int, b: int) -> tuple[float, int, float, bool]:
            """(grams a product explains, 1 if a product of these lanes explains them, evidence, whether a
            product no lane of the segment holds explains them) of the segment cluster[a:b]."""
            if (a, b) not in cache:
                seg = cluster[a:b]
                sc = self._score(change, seg, sign, view)
                ok = self._explained(sc)
                prod = sc.prod[int(np.argmax(sc.logp))] if ok else 0
                row = rows.get(sc.skus[prod]) if ok else None
                elsewhere = ok and (row is None or not view.held[row, seg].any())
                mass = float(np.abs(change.delta[seg]).sum())
                cache[(a, b)] = (mass if ok else 0.0, int(ok and not sc.foreign[prod]), sc.evidence, elsewhere)
            return cache[(a, b)]

        def own(parts: list[tuple[float, int, float, bool]]) -> int:
            """Parts explained by their lanes' own products -- none where a part is an item no lane holds (one
            put down from elsewhere): whether one such item spilt across two lanes or a put-back landed beside
            it is for the evidence to say (the own part would win by count alone)."""
            return 0 if any(p[3] for p in parts) else sum(p[1] for p in parts)

        log_split = float(np.log(self.cfg.split_prior))
        whole = ev(0, n)
        best = (round(whole[0], 0), own([whole]), whole[2], [(0, n)])
        for k in range(1, min(max_parts, n)):
            for cuts in combinations(range(1, n), k):
                segs = list(pairwise([0, *cuts, n]))
                parts = [ev(a, b) for a, b in segs]
                key = (round(sum(p[0] for p in parts), 0), own(parts), sum(p[2] for p in parts) + k * log_split)
                if key > best[:3]:
                    best = (*key, segs)
        split = [cluster[a:b] for a, b in best[3]]
        if best[1] < 2:  # not two takes of the lanes' own products: one item may have spilt across a cut
            spilt = self._spill_split(change, cluster, sign, view)
            if spilt is not None and spilt[0] > best[:3]:
                return spilt[1], spilt[2]
        return split, None

    def _spill_split(self, change: ShelfChange, cluster: list[int], sign: float, view: _View
                     ) -> tuple[tuple[float, int, float], list[list[int]], np.ndarray] | None:
        """Two takes side by side, one item of which lay partly on the other's lane: the cluster cut in two
        where, with up to ``spill_max_share`` of one unit moved back across the cut, each side is whole units
        of its own lanes' product (two shoppers at neighbouring lanes of near-equal weights: read as one group,
        it would be so many units of one of them).  ``(key, segments, corrected delta)`` of the best such cut
        (key as in :meth:`_best_partition`), or None."""
        c = self.cfg
        mass = np.abs(change.delta)
        best = None
        for cut in range(1, len(cluster)):
            left, right = cluster[:cut], cluster[cut:]
            jl, jr = left[-1], right[0]
            m_left, m_right = float(mass[left].sum()), float(mass[right].sum())
            moves = set()  # grams to move from the right side's boundary lane to the left side's
            for side, m_side, sgn in ((left, m_left, 1.0), (right, m_right, -1.0)):
                rows = np.flatnonzero(view.held[:, side].any(axis=1))
                for r in rows:
                    w = self.pg.products[view.skus[r]].weight_g
                    for q in range(1, 4):
                        short = q * w - m_side  # of q units, the grams that lay across the cut
                        if 0 < short <= c.spill_max_share * w:
                            moves.add(round(sgn * short, 3))
            for t in sorted(moves):
                m = mass.copy()
                m[jl] += t
                m[jr] -= t
                if m[jl] <= 0 or m[jr] <= 0:
                    continue
                delta = change.delta.copy()
                delta[[jl, jr]] = sign * m[[jl, jr]]
                ch = replace(change, delta=delta)
                v = replace(view, scored={})
                scored = [self._score(ch, seg, sign, v) for seg in (left, right)]
                if not all(self._explained(sc) and not sc.foreign[sc.prod[int(np.argmax(sc.logp))]]
                           for sc in scored):
                    continue
                key = (round(float(m[cluster].sum()), 0), 2,
                       sum(sc.evidence for sc in scored) + float(np.log(c.split_prior * c.spill_prior)))
                if best is None or key > best[0]:
                    best = (key, [left, right], delta)
        return best

    def _explained(self, sc: _Scored) -> bool:
        """Whether the best candidate explains the group: better than 'unknown', close in weight, and lying
        mostly on lanes that hold it."""
        c = self.cfg
        if sc.logp.size == 0:
            return False
        h = int(np.argmax(sc.logp))
        p_unknown = float(np.exp(sc.log_unknown - sc.evidence))
        return p_unknown < 0.5 and sc.z[h] <= c.explain_max_z and sc.share[sc.prod[h]] >= c.explain_min_share

    def _is_slide(self, change: ShelfChange, parts: list[Identified]) -> bool:
        """An item pushed along its own lanes: the same product leaves one lane and arrives on the next, the
        two changes cancel, both lanes are the product's home, and (where the step times are known) the two
        lanes made their steps together."""
        a, b = parts
        if abs(a.total_g + b.total_g) >= self.cfg.event_min_g:
            return False
        ba, bb = a.best, b.best
        if ba is None or bb is None or ba.sku != bb.sku or ba.qty != bb.qty:
            return False
        pos = {ln: j for j, ln in enumerate(change.lanes)}
        ja = [pos[ln] for ln, _ in a.lanes]
        jb = [pos[ln] for ln, _ in b.lanes]
        touching = min(abs(x - y) for x in ja for y in jb) <= 1
        own = all(self.pg.is_home(change.lanes[j], ba.sku) for j in ja + jb)
        return touching and own and self._stepped_together(change, ja, jb)

    def _stepped_together(self, change: ShelfChange, ja: list[int], jb: list[int]) -> bool:
        """Whether lanes ``ja`` and ``jb`` stepped at the same time: the spans from the first to the last time
        each group lay past half its change overlap, give or take ``slide_sync_s``.  True when a step time is
        unknown (no evidence against a slide)."""
        if change.t_step is None:
            return True
        sa, sb = change.t_step[ja], change.t_step[jb]
        if not (np.isfinite(sa).all() and np.isfinite(sb).all()):
            return True
        gap = max(sa[:, 0].min(), sb[:, 0].min()) - min(sa[:, 1].max(), sb[:, 1].max())
        if gap > self.cfg.slide_sync_s:
            log.info("shelf %s: opposite changes of one product stepped %.2f s apart: two events, not a slide",
                     change.shelf, gap)
            return False
        return True

    # ------------------------------------------------------------------------------------- scoring
    def _view(self, change: ShelfChange) -> _View:
        """What each lane of the change's shelf holds (computed once per change)."""
        holds = [self.pg.holds(ln) for ln in change.lanes]
        home = [self.pg.home.get(ln, frozenset()) for ln in change.lanes]
        n = len(change.lanes)
        skus = sorted({k for hs in holds for k in hs if k in self.pg.products})
        row = {k: i for i, k in enumerate(skus)}
        held = np.zeros((len(skus), n), bool)
        belief = np.zeros((len(skus), n))
        count = np.zeros((len(skus), n))
        for j, hs in enumerate(holds):
            for k, cnt in hs.items():
                if k in row:
                    held[row[k], j] = True
                    belief[row[k], j] = self.pg.belief_of(change.lanes[j], k)
                    count[row[k], j] = np.inf if cnt is None else cnt
        nb = np.zeros_like(held)
        nb[:, 1:] |= held[:, :-1]
        nb[:, :-1] |= held[:, 1:]
        placed = np.where(held, 1.0, np.where(nb, self.cfg.neighbour_share, 0.0))
        is_home = np.array([[k in home[j] for j in range(n)] for k in skus], bool).reshape(len(skus), n)
        return _View(holds, home, skus, held, placed, is_home, belief, count)

    def _score(self, change: ShelfChange, lanes: list[int], sign: float, view: _View | None = None) -> _Scored:
        view = view or self._view(change)
        key = (tuple(lanes), sign)
        hit = view.scored.get(key)
        if hit is None:
            hit = view.scored[key] = self._score_uncached(change, lanes, sign, view)
        return hit

    def _score_uncached(self, change: ShelfChange, lanes: list[int], sign: float, view: _View) -> _Scored:
        c = self.cfg
        n_lanes = len(change.lanes)
        mass = np.abs(change.delta[lanes])
        G = float(abs(change.delta[lanes].sum()))
        sd_meas2 = float((change.sd[lanes] ** 2).sum())
        total_mass = float(mass.sum()) or 1.0
        # products held by these lanes or their neighbours ("local"), with what the view knows of them
        near_lanes = sorted({j + o for j in lanes for o in (-1, 0, 1) if 0 <= j + o < n_lanes})
        rows = np.flatnonzero(view.held[:, near_lanes].any(axis=1)) if view.skus else np.zeros(0, np.intp)
        local = [view.skus[r] for r in rows]
        foreign_prior = c.foreign_prior_put if sign > 0 else c.foreign_prior_pick
        local_prior = 1.0 - foreign_prior - c.unknown_prior
        n_local = max(1, len(local))
        n_foreign = max(1, len(self.all_skus) - len(local))
        # foreign products: only those one to three units of which come near the weight (more units of a
        # product that does not belong here are too unlikely to matter)
        qmax = int(min(c.max_qty, max(1, np.ceil(G / max(self.w.min(), 1e-6)) + 1)))
        q_near = np.clip(np.rint(G / self.w), 1, 3)
        mu_n = q_near * self.w
        z2 = (G - mu_n) ** 2 / (q_near * self.sd2 + sd_meas2 + (c.rel_sd * mu_n) ** 2)
        local_idx = np.array([self.sku_index[k] for k in local], np.intp)
        idx = np.union1d(np.flatnonzero(z2 <= 36.0), local_idx).astype(np.intp)
        skus = [self.all_skus[i] for i in idx]
        pos = np.searchsorted(idx, local_idx)  # where the local products sit in idx
        is_local = np.zeros(idx.size, bool)
        is_local[pos] = True
        if sign > 0:  # a misplaced put-back is most likely something picked lately and not put back
            b = c.outstanding_boost
            out_foreign = float(self.outstanding.sum() - self.outstanding[local_idx].sum())
            log_foreign = (np.log(foreign_prior) + np.log1p(b * self.outstanding[idx])
                           - np.log(n_foreign + b * max(out_foreign, 0.0)))
        else:
            log_foreign = np.full(idx.size, np.log(foreign_prior / n_foreign))
        log_prior = np.where(is_local, np.log(local_prior / n_local), log_foreign)
        loc = np.zeros(idx.size)
        shares = np.ones(idx.size)
        foreign = ~is_local
        if rows.size:  # the local products, all at once
            lanes_arr = np.asarray(lanes, np.intp)
            share = (view.placed[rows][:, lanes_arr] @ mass) / total_mass
            belief = np.where(view.held[rows][:, near_lanes], view.belief[rows][:, near_lanes], 0.0).max(axis=1)
            placed = (np.log(local_prior / n_local) + np.log(np.maximum(belief, 1e-9))
                      + c.location_power * np.log(np.maximum(share, c.location_floor)))
            home_share = (view.is_home[rows][:, lanes_arr] @ mass) / total_mass
            is_foreign = home_share < 0.5
            # a product of the next lane put down here is a misplacement, no likelier than any other
            misplaced = is_foreign & (log_foreign[pos] > placed)
            foreign[pos] = is_foreign
            log_prior[pos] = np.where(misplaced, log_foreign[pos], log_prior[pos])
            loc[pos] = np.where(misplaced, 0.0, placed - log_prior[pos])
            shares[pos] = np.where(misplaced, 1.0, share)
        q = np.arange(1, qmax + 1)
        w, sd = self.w[idx], self.sd[idx]
        mu = w[:, None] * q[None, :]
        var = q[None, :] * sd[:, None] ** 2 + sd_meas2 + (c.rel_sd * mu) ** 2
        ll = -0.5 * (G - mu) ** 2 / var - 0.5 * np.log(var) - _LOG_SQRT_2PI
        z = np.abs(G - mu) / np.sqrt(var)
        spills = self._hidden_spills(change, lanes, sign)
        if spills:  # the weight read with each neighbour's hidden spill added, as a mixture with it read alone
            terms = [np.log1p(-c.hidden_spill_prior * len(spills)) + ll]
            zs = [z]
            for n, sd_n, log_odds in spills:
                var_n = var + sd_n ** 2
                ll_n = -0.5 * (G + n - mu) ** 2 / var_n - 0.5 * np.log(var_n) - _LOG_SQRT_2PI
                terms.append(log_odds + ll_n)
                zs.append(np.abs(G + n - mu) / np.sqrt(var_n))
            ll = np.logaddexp.reduce(np.stack(terms), axis=0)
            z = np.min(zs, axis=0)  # explained when either reading fits
        log_q = (q - 1) * np.log(c.qty_decay if sign < 0 else c.qty_decay_put)
        logp = ll + log_q[None, :] + (log_prior + loc)[:, None]
        if sign > 0:  # a shopper puts back what was taken: units not picked lately are less likely
            missing = np.maximum(0.0, q[None, :] - self.outstanding[idx][:, None])
            logp += missing * np.log(c.missing_put_factor)
        if rows.size:  # a misplaced item is only there as often as it was put there
            cnt = np.where(view.held[rows][:, near_lanes], view.count[rows][:, near_lanes], 0.0).max(axis=1)
            limited = np.isfinite(cnt) & ~view.is_home[rows, lanes[0]]
            for p_, cap in zip(pos[limited], cnt[limited], strict=True):
                logp[p_, q > cap] = -np.inf
        log_unknown = float(np.log(c.unknown_prior) - np.log(c.unknown_range_g))
        flat = logp.ravel()
        top = float(np.max(flat)) if flat.size else -np.inf
        evidence = float(np.logaddexp(log_unknown, top + np.log(np.exp(flat - top).sum()))
                         if np.isfinite(top) else log_unknown)
        prod = np.repeat(np.arange(idx.size), q.size)
        z = z.ravel()
        return _Scored(skus, np.tile(q, idx.size), flat, prod, foreign, log_unknown, evidence, z, shares)

    def _hidden_spills(self, change: ShelfChange, lanes: list[int], sign: float
                       ) -> list[tuple[float, float, float]]:
        """The uninvolved lanes beside the group whose change has the group's sign: ``(grams, sd, log odds)``
        each, the log odds of its change being a hidden spill of the group's item (uniform below the detector's
        threshold, ``hidden_spill_prior``) rather than the lane's noise (normal, its sd)."""
        c = self.cfg
        if c.hidden_spill_prior <= 0:
            return []
        out = []
        for j in (min(lanes) - 1, max(lanes) + 1):
            if not 0 <= j < len(change.lanes) or change.involved[j]:
                continue
            n, sd_n = float(change.delta[j]) * sign, float(change.sd[j])
            if n <= 0 or sd_n <= 0:
                continue
            noise = -0.5 * (n / sd_n) ** 2 - np.log(sd_n) - _LOG_SQRT_2PI
            below = max(c.hidden_spill_min_g, c.hidden_spill_k * sd_n)
            out.append((n, sd_n, float(np.log(c.hidden_spill_prior) - np.log(below) - noise)))
        return out

    def _result(self, change: ShelfChange, lanes: list[int], sign: float, view: _View | None = None
                ) -> Identified:
        c = self.cfg
        sc = self._score(change, lanes, sign, view)
        post = np.exp(sc.logp - sc.evidence)
        p_unknown = float(np.exp(sc.log_unknown - sc.evidence))
        order = np.argsort(-post)[: c.max_candidates]
        cands = [Candidate(sc.skus[sc.prod[h]], int(sc.qty[h]), float(post[h]), bool(sc.foreign[sc.prod[h]]))
                 for h in order if post[h] >= c.min_p]
        total = float(change.delta[lanes].sum())
        h = int(np.argmax(sc.logp)) if sc.logp.size else -1
        z = float(sc.z[h]) if h >= 0 else float("inf")
        share = float(sc.share[sc.prod[h]]) if h >= 0 else 0.0
        return Identified(change, [(change.lanes[j], float(change.delta[j])) for j in lanes], total,
                          "pick" if total < 0 else "put", cands, p_unknown, z, share, self._explained(sc))

    # ------------------------------------------------------------------------------------- learning
    def _learn(self, r: Identified) -> None:
        """A put of a product that does not belong here teaches the planogram (with its weight twins when the
        weight cannot tell them apart); a pick of a learnt one unlearns it."""
        c = self.cfg
        best = r.best
        if best is None or not best.foreign:
            return
        lanes = [ln for ln, _ in r.lanes]
        if r.action == "put":
            foreign = [x for x in r.candidates if x.foreign and x.qty == best.qty]
            if sum(x.p for x in foreign) < c.learn_min_p:
                return
            twins = {x.sku: x.p / best.p for x in foreign[1:] if x.p >= c.learn_twin_min_p}
            self.pg.learn(lanes, best.sku, best.qty, twins)
        elif best.p >= c.learn_twin_min_p:
            self.pg.forget(lanes, best.sku, best.qty)
