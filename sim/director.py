"""Casting and scripting a session: who comes (parties, groups, bodies, looks), what the shelves hold, and each
shopper's plan — random stops and reaches, plus the scripted hard cases of the preset (neighbours picking side
by side within a second, groups with hand-offs, put-backs, misplacements and picks of misplaced items, a crowd
at the exit), placed deliberately so they always occur.

Times in plans are estimates made from walking distances; the world waits where a plan says ``not_before``,
so scripted moments happen when planned even if a shopper arrives early.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from calibration.store import Store
from sim.body import Appearance
from sim.floor import FloorMap
from sim.scenario import Resolved
from sim.world import Action, Booking, Item, Plan, ShopperSpec, Stop, VisitSpec, spot_distance

log = logging.getLogger(__name__)

EXIT_MARGIN_S = 14.0  # plans end this long before the session does (time to reach the exit and leave)
ACTION_S = 2.6  # estimated seconds per arm motion including its pause

_SHIRTS = [(40, 40, 170), (150, 80, 30), (60, 140, 60), (30, 120, 200), (120, 60, 120), (200, 200, 200),
           (30, 30, 30), (90, 160, 200), (170, 110, 60), (60, 200, 220), (110, 110, 110), (40, 90, 40),
           (180, 60, 160), (20, 60, 140), (210, 160, 110)]
_TROUSERS = [(50, 40, 30), (90, 60, 30), (40, 40, 45), (130, 120, 110), (70, 50, 20), (30, 30, 80),
             (150, 140, 120), (20, 20, 20)]
_SKIN = [(95, 130, 180), (120, 150, 190), (70, 100, 150), (60, 80, 120), (140, 170, 210), (45, 65, 100)]
_HAIR = [(30, 30, 40), (20, 40, 80), (40, 80, 140), (150, 170, 190), (10, 10, 15), (60, 60, 70)]


@dataclass
class Cast:
    shoppers: list[ShopperSpec]
    visits: list[VisitSpec]
    plans: list[Plan]
    inventory: dict[str, list[Item]]
    bookings: list[Booking] = field(default_factory=list)
    script: list[dict] = field(default_factory=list)
    pair_lanes: list[tuple[str, str]] = field(default_factory=list)


def stock_shelves(store: Store, rng: np.random.Generator) -> dict[str, list[Item]]:
    """Each lane with a product gets 60-100 % of its capacity; every item has its own weight."""
    inventory: dict[str, list[Item]] = {}
    next_id = 1
    for _, _, lane in store.iter_lanes():
        items: list[Item] = []
        if lane.sku is not None and lane.capacity > 0:
            p = store.products[lane.sku]
            n = max(1, round(lane.capacity * rng.uniform(0.6, 1.0)))
            w = rng.normal(p.weight_g, p.weight_sd_g, n)
            w = np.clip(w, p.weight_g - 3 * p.weight_sd_g, p.weight_g + 3 * p.weight_sd_g)
            w = np.maximum(w, 0.2 * p.weight_g)
            for k in range(n):
                items.append(Item(next_id, lane.sku, round(float(w[k]), 2), lane.id))
                next_id += 1
        inventory[lane.id] = items
    return inventory


class Director:
    def __init__(self, store: Store, floor: FloorMap, scn: Resolved, rng: np.random.Generator):
        self.store = store
        self.floor = floor
        self.scn = scn
        self.rng = rng
        self.beh = scn.behaviour
        self.scr = scn.scripted
        self.duration = scn.duration_s
        self.fronts = floor.lane_fronts
        self.shelf_lanes = {s.id: [ln.id for ln in s.lanes] for s in store.shelves.values()}
        self.unit_of = {s.id: u.id for u in store.shelf_units for s in u.shelves}
        self.unit_shelves = {u.id: [s.id for s in u.shelves] for u in store.shelf_units}
        self.pickable = [ln.id for _, _, ln in store.iter_lanes() if ln.sku is not None]
        self.bookings: list[Booking] = []
        self.script: list[dict] = []
        self._ref = 0
        self._paths: dict[tuple, float] = {}
        gate = store.gates[0].region
        self.gate_xy = (np.asarray(gate.min) + np.asarray(gate.max)) / 2
        ex = store.exits[0].region
        self.exit_xy = (np.asarray(ex.min) + np.asarray(ex.max)) / 2

    # ------------------------------------------------------------------------------------------ helpers
    def ref(self, prefix: str) -> str:
        self._ref += 1
        return f"{prefix}{self._ref}"

    def spot_xy(self, lane: str, offset: float = 0.0, radius: float = 0.25) -> np.ndarray:
        return self.floor.spot(lane, offset, spot_distance(radius))

    def path_length(self, a: np.ndarray, b: np.ndarray) -> float:
        key = (round(float(a[0]), 1), round(float(a[1]), 1), round(float(b[0]), 1), round(float(b[1]), 1))
        if key not in self._paths:
            try:
                pts = [np.asarray(a, float)] + self.floor.plan(np.asarray(a, float), np.asarray(b, float))
                self._paths[key] = float(sum(np.linalg.norm(q - p) for p, q in itertools.pairwise(pts)))
            except ValueError:
                self._paths[key] = 1.5 * float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
        return self._paths[key]

    def walk_s(self, a: np.ndarray, b: np.ndarray, speed: float) -> float:
        """Estimated walking time: the planned path at 85 % of the shopper's speed, plus starting and
        stopping."""
        return self.path_length(a, b) / (0.85 * speed) + 1.5

    def stop_s(self, stop: Stop) -> float:
        return stop.browse + ACTION_S * len(stop.actions)

    def shelf_of(self, lane: str) -> str:
        return self.store.lane_shelf[lane]

    def nearby_lanes(self, lane: str) -> list[str]:
        """Lanes a shopper standing at ``lane`` can reach: beside it and directly above/below."""
        shelf = self.shelf_of(lane)
        row = self.shelf_lanes[shelf]
        k = row.index(lane)
        out = [row[j] for j in (k - 1, k + 1) if 0 <= j < len(row)]
        shelves = self.unit_shelves[self.unit_of[shelf]]
        si = shelves.index(shelf)
        for sj in (si - 1, si + 1):
            if 0 <= sj < len(shelves):
                other = self.shelf_lanes[shelves[sj]]
                c = self.fronts[lane].front
                best = min(other, key=lambda ln: float(np.linalg.norm(self.fronts[ln].front - c)))
                if np.linalg.norm(self.fronts[best].front - c) < 0.2:
                    out.append(best)
        return [ln for ln in out if self.store.lanes[ln].sku is not None]

    def sku_of(self, lane: str) -> str | None:
        return self.store.lanes[lane].sku

    # ------------------------------------------------------------------------------------------ cast
    def cast(self) -> tuple[list[ShopperSpec], list[VisitSpec]]:
        rng = self.rng
        n = self.scn.shoppers
        sizes: list[int] = []
        left = n
        for g in range(self.scr.groups):
            size = 3 if g % 2 == 0 else 2
            if left - size < 1 and g > 0:
                break
            size = min(size, left)
            if size < 2:
                break
            sizes.append(size)
            left -= size
        solo_or_random: list[int] = []
        while left > 0:
            if left >= 2 and rng.random() < self.beh.group_prob:
                size = int(min(left, rng.integers(2, 4)))
            else:
                size = 1
            solo_or_random.append(size)
            left -= size
        # scripted groups arrive early-ish but not first: interleave them among the others
        parties = solo_or_random[:]
        for k, size in enumerate(sizes):
            parties.insert(min(len(parties), 1 + 2 * k), size)
        window = self.beh.arrival_window * self.duration
        gap = window / max(len(parties), 1)
        shoppers: list[ShopperSpec] = []
        visits: list[VisitSpec] = []
        sid = 0
        for pi, size in enumerate(parties):
            arrival = 1.0 + pi * gap + float(rng.uniform(0, 0.4 * gap))
            vid = f"V{pi + 1:02d}"
            account = f"acct-{int(rng.integers(16**6)):06x}"
            members = []
            for m in range(size):
                sid += 1
                spec = self._body(f"S{sid:02d}", vid, account, m == 0)
                shoppers.append(spec)
                members.append(spec.id)
            visits.append(VisitSpec(vid, account, members, self.store.gates[0].id, round(arrival, 3)))
        return shoppers, visits

    def _body(self, sid: str, vid: str, account: str, leader: bool) -> ShopperSpec:
        rng = self.rng
        lo, hi = self.beh.height_m
        height = float(np.clip(rng.normal((lo + hi) / 2, (hi - lo) / 4), lo, hi))
        s = height / 1.75
        build = float(rng.uniform(0.85, 1.2))
        torso = 0.16 * s * build
        app = Appearance(
            shirt=_SHIRTS[int(rng.integers(len(_SHIRTS)))],
            trousers=_TROUSERS[int(rng.integers(len(_TROUSERS)))],
            skin=_SKIN[int(rng.integers(len(_SKIN)))],
            hair=_HAIR[int(rng.integers(len(_HAIR)))],
            head_radius=round(0.105 * s, 4),
            torso_radius=round(torso, 4),
            arm_radius=round(0.048 * s * build, 4),
            leg_radius=round(0.075 * s * build, 4),
            carries_basket=bool(rng.random() < 0.35),
        )
        radius = round(min(0.29, max(0.22, torso + 0.08)), 3)
        speed = round(float(rng.uniform(*self.beh.speed_mps)), 3)
        hand = "r" if rng.random() < 0.88 else "l"
        return ShopperSpec(sid, vid, account, leader, round(height, 3), radius, speed, hand, app)

    # ------------------------------------------------------------------------------------------ random plans
    def random_stop(self, avoid_unit: str | None = None) -> Stop:
        rng = self.rng
        for _ in range(20):
            lane = self.pickable[int(rng.integers(len(self.pickable)))]
            if self.unit_of[self.shelf_of(lane)] != avoid_unit:
                break
        stop = Stop(lane, browse=round(float(rng.uniform(*self.beh.browse_s)), 2))
        if rng.random() < self.beh.linger_prob:
            stop.linger = True
            stop.browse = round(stop.browse + float(rng.uniform(3, 8)), 2)
            return stop
        for _ in range(int(rng.integers(self.beh.reaches[0], self.beh.reaches[1] + 1))):
            target = lane
            near = self.nearby_lanes(lane)
            if near and rng.random() < self.beh.neighbour_lane_prob:
                target = near[int(rng.integers(len(near)))]
            if rng.random() < self.beh.press_prob:
                stop.actions.append(Action("press", target, pause=round(float(rng.uniform(0.5, 1.5)), 2)))
                continue
            qty = 2 if rng.random() < self.beh.qty2_prob else 1
            ref = self.ref("r")
            stop.actions.append(Action("pick", target, qty=qty, ref=ref,
                                       pause=round(float(rng.uniform(0.5, 1.5)), 2)))
            if rng.random() < self.beh.put_back_prob:
                stop.actions.append(Action("put_back", ref=ref, qty=1, pause=0.8, tag="random"))
        return stop

    def random_plan(self, spec: ShopperSpec, arrival: float) -> Plan:
        rng = self.rng
        n = int(rng.integers(self.beh.stops[0], self.beh.stops[1] + 1))
        stops: list[Stop] = []
        unit = None
        for _ in range(n):
            stop = self.random_stop(avoid_unit=unit)
            unit = self.unit_of[self.shelf_of(stop.lane)]
            stops.append(stop)
        # random misplacements: something picked earlier is left at the next stop
        for i in range(len(stops) - 1):
            picks = [a for a in stops[i].actions if a.kind == "pick" and a.ref]
            nxt = stops[i + 1]
            if picks and not nxt.linger and rng.random() < self.beh.misplace_prob:
                src = picks[-1]
                if self.sku_of(nxt.lane) != self.sku_of(src.lane or stops[i].lane):
                    nxt.actions.insert(0, Action("misplace", nxt.lane, ref=src.ref, tag="random"))
        return Plan(spec.id, arrival, stops, exit=self.store.exits[0].id)

    # ------------------------------------------------------------------------------------------ timeline
    def timeline(self, spec: ShopperSpec, plan: Plan, entry: float) -> list[tuple[float, float]]:
        """Estimated (arrive, leave) of each stop."""
        t = entry
        pos = self.gate_xy
        out = []
        for stop in plan.stops:
            xy = self.spot_xy(stop.lane, stop.offset or 0.0)
            t += self.walk_s(pos, xy, spec.speed)
            start = max(t + stop.browse, stop.not_before or 0.0)
            first_nb = min((a.not_before for a in stop.actions if a.not_before is not None), default=None)
            if first_nb is not None:
                start = max(start, first_nb)
            leave = start + ACTION_S * len(stop.actions)
            out.append((t, leave))
            t = leave
            pos = xy
        return out

    def finish(self, spec: ShopperSpec, plan: Plan, entry: float) -> float:
        tl = self.timeline(spec, plan, entry)
        end = tl[-1][1] if tl else entry
        pos = self.spot_xy(plan.stops[-1].lane) if plan.stops else self.gate_xy
        end = max(end, plan.exit_not_before or 0.0)
        return end + self.walk_s(pos, self.exit_xy, spec.speed)

    # ------------------------------------------------------------------------------------------ the script
    def direct(self) -> Cast:
        inventory_rng = np.random.default_rng(self.rng.integers(2**63))
        inventory = stock_shelves(self.store, inventory_rng)
        shoppers, visits = self.cast()
        by_id = {s.id: s for s in shoppers}
        entry = {}
        for v in visits:
            for k, m in enumerate(v.members):
                entry[m] = v.arrival + 1.4 + (0.4 + 0.6 * k if k else 0.0)
        plans: dict[str, Plan] = {}
        for v in visits:
            lead = by_id[v.members[0]]
            plans[lead.id] = self.random_plan(lead, v.arrival)
            for m in v.members[1:]:
                plans[m] = Plan(m, v.arrival, [], exit=plans[lead.id].exit)
        self.script_neighbour_pairs(shoppers, visits, plans, entry)
        self.clear_zones([by_id[v.members[0]] for v in visits], plans, entry)
        for v in visits:
            for nth, m in enumerate(v.members[1:], start=1):
                plans[m].stops += self.member_plan(by_id[m], v.arrival, plans[v.members[0]], nth).stops
        self.clear_zones([by_id[m] for v in visits for m in v.members[1:]], plans, entry)
        self.script_put_backs(shoppers, plans)
        misplaced = self.script_misplacements(shoppers, plans, entry)
        self.script_picks_of_misplaced(shoppers, plans, entry, misplaced)
        self.script_handoffs(visits, plans)
        self.fit(shoppers, plans, entry)
        self.script_exit_crowd(visits, by_id, plans, entry)
        return Cast(shoppers, visits, [plans[s.id] for s in shoppers], inventory, self.bookings, self.script,
                    self.neighbour_lane_pairs())

    def member_plan(self, spec: ShopperSpec, arrival: float, lead: Plan, nth: int) -> Plan:
        """A group member follows the leader's stops, standing at a lane beside the leader's (the first
        member to one side, the second to the other)."""
        rng = self.rng
        stops = []
        order = (2, 3, 1) if nth % 2 else (-2, -3, -1)
        for ls in lead.stops:
            if ls.offset is not None:
                continue  # the leader's scripted neighbour pick: the member does its own shopping
            row = self.shelf_lanes[self.shelf_of(ls.lane)]
            k = row.index(ls.lane)
            cands = [row[k + d] for d in order + tuple(-d for d in order) if 0 <= k + d < len(row)
                     and self.store.lanes[row[k + d]].sku is not None]
            lane = cands[0] if cands else ls.lane
            stop = Stop(lane, browse=round(ls.browse + float(rng.uniform(0, 1.5)), 2))
            if rng.random() < 0.5:
                stop.actions.append(Action("pick", lane, ref=self.ref("m"), pause=1.0))
            else:
                stop.linger = True
            stops.append(stop)
        return Plan(spec.id, arrival, stops, exit=lead.exit)

    def neighbour_lane_pairs(self) -> list[tuple[str, str]]:
        """Adjacent lanes of different products on middle shelves, nearly equal weights first, one per unit
        in turn."""
        per_unit: dict[str, list[tuple[float, str, str]]] = {}
        for u in self.store.shelf_units:
            shelves = u.shelves[1:-1] if len(u.shelves) > 2 else u.shelves
            for s in shelves:
                for a, b in zip(s.lanes, s.lanes[1:], strict=False):
                    if a.sku is None or b.sku is None or a.sku == b.sku:
                        continue
                    wa, wb = self.store.products[a.sku].weight_g, self.store.products[b.sku].weight_g
                    per_unit.setdefault(u.id, []).append((abs(wa - wb) / max(wa, wb), a.id, b.id))
        for v in per_unit.values():
            v.sort()
        out = []
        units = sorted(per_unit)
        k = 0
        while any(per_unit.values()):
            u = units[k % len(units)]
            if per_unit[u]:
                _, a, b = per_unit[u].pop(0)
                out.append((a, b))
            k += 1
        return out

    def script_neighbour_pairs(self, shoppers, visits, plans, entry) -> None:
        n = self.scr.neighbour_pairs
        if n == 0:
            return
        rng = self.rng
        solo = {v.id for v in visits if len(v.members) == 1}
        leaders = {v.members[0] for v in visits}
        pool = sorted(shoppers, key=lambda s: (s.visit not in solo, s.id not in leaders, entry[s.id]))
        pairs = self.neighbour_lane_pairs()
        used: set[str] = set()
        k = 0
        i = 0
        while k < n and i < len(pool) - 1 and k < len(pairs):
            a = pool[i]
            b = next((s for s in pool[i + 1:] if s.visit != a.visit and s.id not in used), None)
            if a.id in used or b is None:
                i += 1
                continue
            used |= {a.id, b.id}
            la, lb = pairs[k]
            spot_a, spot_b = self.spot_xy(la, -0.2, a.radius), self.spot_xy(lb, 0.2, b.radius)
            t_ready = max(entry[a.id] + self.walk_s(self.gate_xy, spot_a, a.speed),
                          entry[b.id] + self.walk_s(self.gate_xy, spot_b, b.speed)) + 5.0
            t_pick = round(t_ready, 2)
            delay = round(float(rng.uniform(0.0, 0.4)), 2)
            tag = f"neighbour-{k + 1}"
            sa = Stop(la, browse=1.0, offset=-0.2, pair=tag, role=0,
                      actions=[Action("pick", la, side="r", ref=self.ref("n"), not_before=t_pick, tag=tag,
                                      sync=tag, sync_delay=0.3)])
            sb = Stop(lb, browse=1.0, offset=0.2, pair=tag, role=1,
                      actions=[Action("pick", lb, side="l", ref=self.ref("n"), not_before=t_pick, tag=tag,
                                      sync=tag, sync_delay=0.3 + delay)])
            plans[a.id].stops.insert(0, sa)
            plans[b.id].stops.insert(0, sb)
            for s, xy in ((a, spot_a), (b, spot_b)):
                self.bookings.append(Booking(s.id, xy, s.radius, t_pick - 12.0, t_pick + 4.0))
            self.script.append({"case": "neighbour_pair", "tag": f"neighbour-{k + 1}", "shoppers": [a.id, b.id],
                                "lanes": [la, lb], "t": t_pick})
            k += 1
            i += 1

    def clear_zones(self, shoppers, plans, entry) -> None:
        """Move other stops away from the stretch of shelf of a scripted neighbour pair around its time."""
        zones = []
        for c in self.script:
            if c["case"] == "neighbour_pair":
                centre = (self.fronts[c["lanes"][0]].front + self.fronts[c["lanes"][1]].front) / 2
                zones.append((centre, c["t"] - 15.0, c["t"] + 6.0))
        if not zones:
            return

        def blocked(lane: str, t0: float, t1: float) -> bool:
            xy = self.fronts[lane].front
            return any(z0 < t1 and t0 < z1 and np.linalg.norm(xy - c) < 1.0 for c, z0, z1 in zones)

        for spec in shoppers:
            plan = plans[spec.id]
            for _ in range(4):
                moved = False
                tl = self.timeline(spec, plan, entry[spec.id])
                for stop, (t0, t1) in zip(plan.stops, tl, strict=True):
                    if stop.offset is not None or not blocked(stop.lane, t0, t1):
                        continue
                    lanes = [ln for ln in self.pickable if not blocked(ln, t0 - 10, t1 + 10)]
                    _relocate(stop, lanes[int(self.rng.integers(len(lanes)))])
                    moved = True
                    break  # times changed: recompute the timeline
                if not moved:
                    break

    def script_put_backs(self, shoppers, plans) -> None:
        rng = self.rng
        done = 0
        order = [shoppers[int(j)] for j in rng.permutation(len(shoppers))]
        for spec in order:
            if done >= self.scr.put_backs:
                break
            plan = plans[spec.id]
            cands = [i for i, s in enumerate(plan.stops) if not s.linger and not any(
                a.not_before is not None for a in s.actions)]
            if not cands:
                continue
            i = cands[int(rng.integers(len(cands)))]
            stop = plan.stops[i]
            ref = self.ref("p")
            tag = f"put-back-{done + 1}"
            stop.actions.append(Action("pick", stop.lane, ref=ref, pause=round(float(rng.uniform(1.5, 4.0)), 2),
                                       tag=tag))
            if done % 2 == 1 and i + 1 < len(plan.stops):
                # carried away, then brought back: a later stop at the same lane
                plan.stops.insert(i + 2, Stop(stop.lane, browse=1.0,
                                              actions=[Action("put_back", ref=ref, tag=tag)]))
            else:
                stop.actions.append(Action("put_back", ref=ref, tag=tag))
            self.script.append({"case": "put_back", "tag": tag, "shopper": spec.id, "lane": stop.lane})
            stop.linger = False
            done += 1

    def script_misplacements(self, shoppers, plans, entry) -> list[tuple[str, str, float, str]]:
        """Returns (shopper, lane, estimated time, tag) of each scripted misplacement."""
        rng = self.rng
        out = []
        order = [shoppers[int(j)] for j in rng.permutation(len(shoppers))]
        for spec in order:
            if len(out) >= self.scr.misplacements:
                break
            plan = plans[spec.id]
            free = [j for j, st in enumerate(plan.stops) if st.offset is None and st.not_before is None]
            pair = next(((i, j) for i, j in itertools.pairwise(free) if j == i + 1
                         and self.sku_of(plan.stops[j].lane) != self.sku_of(plan.stops[i].lane)), None)
            if pair is None:
                continue
            i, j = pair
            src, dst = plan.stops[i], plan.stops[j]
            ref = self.ref("x")
            tag = f"misplace-{len(out) + 1}"
            src.actions.append(Action("pick", src.lane, ref=ref, tag=tag))
            src.linger = False
            dst.actions.insert(0, Action("misplace", dst.lane, ref=ref, tag=tag))
            dst.linger = False
            tl = self.timeline(spec, plan, entry[spec.id])
            t_est = tl[j][0] + dst.browse + 2.0
            out.append((spec.id, dst.lane, t_est, tag))
            self.script.append({"case": "misplacement", "tag": tag, "shopper": spec.id, "lane": dst.lane,
                                "t_est": round(t_est, 2)})
        return out

    def script_picks_of_misplaced(self, shoppers, plans, entry, misplaced) -> None:
        rng = self.rng
        for k, (who, lane, t_est, tag) in enumerate(misplaced[: self.scr.picks_of_misplaced]):
            cands = [s for s in shoppers if s.id != who and s.visit != next(
                x.visit for x in shoppers if x.id == who)]
            cands.sort(key=lambda s: abs(self.finish(s, plans[s.id], entry[s.id]) - (t_est + 25.0)))
            if not cands:
                continue
            spec = cands[int(rng.integers(min(3, len(cands))))]
            plan = plans[spec.id]
            stop = Stop(lane, browse=2.0, not_before=round(t_est + 6.0, 2),
                        actions=[Action("pick_foreign", lane, ref=tag, tag=f"pick-of-{tag}")])
            plan.stops.append(stop)
            self.script.append({"case": "pick_of_misplaced", "tag": f"pick-of-{tag}", "shopper": spec.id,
                                "lane": lane})

    def script_handoffs(self, visits, plans) -> None:
        done = 0
        for v in visits:
            if done >= self.scr.handoffs:
                break
            if len(v.members) < 2:
                continue
            lead, member = v.members[0], v.members[1]
            lp, mp = plans[lead], plans[member]
            match = next(((i, j) for i, ls in enumerate(lp.stops) if ls.offset is None and ls.not_before is None
                          for j, ms in enumerate(mp.stops)
                          if self.shelf_of(ms.lane) == self.shelf_of(ls.lane)), None)
            if match is None:
                continue
            i, j = match
            ref = self.ref("h")
            hid = f"handoff-{done + 1}"
            lp.stops[i].actions.append(Action("pick", lp.stops[i].lane, ref=ref, pause=0.5, tag=hid))
            lp.stops[i].actions.append(Action("give", partner=member, handoff=hid, ref=ref, tag=hid))
            lp.stops[i].linger = False
            mp.stops[j].actions.append(Action("receive", partner=lead, handoff=hid, ref=ref, tag=hid))
            mp.stops[j].linger = False
            self.script.append({"case": "handoff", "tag": hid, "giver": lead, "receiver": member})
            done += 1

    def fit(self, shoppers, plans, entry) -> None:
        """Drop random stops (from the end) until each plan ends before the session does."""
        limit = self.duration - EXIT_MARGIN_S
        for spec in shoppers:
            plan = plans[spec.id]
            while plan.stops and self.finish(spec, plan, entry[spec.id]) > limit:
                removable = [j for j, s in enumerate(plan.stops) if not _scripted(s)]
                if not removable:
                    break
                del plan.stops[removable[-1]]
                _drop_orphans(plan)

    def script_exit_crowd(self, visits, by_id, plans, entry) -> None:
        """The parties finishing last (but in time) all reach the exit at about the same moment."""
        n = min(self.scr.exit_crowd, len(visits))
        if n < 2:
            return
        finishes = []
        for v in visits:
            f = max(self.finish(by_id[m], plans[m], entry[m]) for m in v.members)
            finishes.append((f, v))
        finishes.sort(key=lambda x: x[0])
        limit = self.duration - EXIT_MARGIN_S
        ok = [(f, v) for f, v in finishes if f <= limit]
        if len(ok) < 2:
            return
        chosen = ok[-n:]
        t_crowd = round(max(f for f, _ in chosen), 2)
        for _, v in chosen:
            for m in v.members:
                spec, plan = by_id[m], plans[m]
                # fill the time with more shopping rather than waiting
                for _ in range(4):
                    extra = self.random_stop()
                    plan.stops.append(extra)
                    if self.finish(spec, plan, entry[m]) > t_crowd - 12.0:
                        plan.stops.pop()
                        break
                plan.exit_not_before = round(t_crowd - 4.0, 2)  # they wait near the exit, then all go
                plan.exit_at = round(t_crowd - 4.0, 2)
        self.script.append({"case": "exit_crowd", "visits": [v.id for _, v in chosen], "t": t_crowd})


def _relocate(stop: Stop, lane: str) -> None:
    """Move a random stop to ``lane``: its reaches (and a misplacement) go to that lane instead."""
    stop.lane = lane
    for a in stop.actions:
        if a.kind in ("pick", "press", "misplace"):
            a.lane = lane


def _scripted(stop: Stop) -> bool:
    return stop.offset is not None or stop.not_before is not None or any(
        a.tag and a.tag != "random" for a in stop.actions)


def _drop_orphans(plan: Plan) -> None:
    """Remove put-backs/misplacements whose pick was dropped with a stop."""
    refs = {a.ref for s in plan.stops for a in s.actions if a.kind == "pick" and a.ref}
    for s in plan.stops:
        s.actions = [a for a in s.actions if a.kind not in ("put_back", "misplace") or a.ref in refs]


def make_cast(store: Store, floor: FloorMap, scn: Resolved, rng: np.random.Generator) -> Cast:
    return Director(store, floor, scn, rng).direct()
