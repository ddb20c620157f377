"""Seed data for the ops app's tests, browser test, screenshots and benchmark.

:func:`seed_fusion` runs the real fusion service (in-process bus, SQLite or PostgreSQL, the ledger) on a
scripted session, with the ops evidence tap on the same bus, so the pages show real fusion output:

* erin (first, so hers is the oldest queue item) picks a P2 from L2 and a P3 from L3, then something from
  L4 that the shelf could not identify (an event of -150 g, P4 at p = 0.55, and P4 weighs 311 g): her visit
  is held with three lines (900), of which the P4 line is wrong;
* then the fusion scene of ``tests/helpers_fusion_scene.py`` 40 s later (alice charged, bob held for an
  unsure product, dave's card declined, carol's pick and put-back), with an event nobody was near
  (unassigned) and camera c3 offline for two seconds during carol's visit (held: offline device);
* load-cell blocks of shelf S1 (40 Hz) with each event's weight step, published as a recording gateway would.

:func:`render_evidence` draws the cameras' frames of the session's shoppers (the simulator's renderer) around
every shelf event into an evidence folder, as the edge cameras' evidence recorder would (2 frames a second).
:func:`seed_synthetic` adds visits straight through :mod:`fusion.store_db` (a party with a missing shopper),
and :func:`bulk_visits` many of them quickly for the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from calibration.store import Store
from fusion import store_db
from fusion.carts import Line
from fusion.db import Database
from fusion.ops.tap import EvidenceTap
from fusion.payments import LedgerGateway
from fusion.service import FusionService, ServiceSettings
from tests.fusion_scene import (
    T0,
    ScriptedShopper,
    entry,
    lane_target,
    scene_cameras,
    shelf_event,
    tracks_messages,
)
from tests.helpers_fusion_scene import ACCOUNTS, DECLINING, _shoppers, scene_messages, scene_store_with_id
from wire.bus import InProcessBus
from wire.messages import (
    Candidate,
    GateEntryMsg,
    LaneDelta,
    LoadCellMsg,
    ShelfEventMsg,
    StatusMsg,
    TracksMsg,
    moved_times,
)
from wire.topics import Kind

STORE_ID = "t1"
SHIFT = 40.0  # seconds the standard scene starts after erin's
SEQ_SHIFT = 10_000
ERIN = "acct-erin"
ALL_ACCOUNTS = {**ACCOUNTS, "erin": ERIN}
ERIN_T_END = 14.0
LOADCELL_HZ = 40.0
OFFLINE = (61.0, 63.0)  # camera c3 offline (seconds after T0): during carol's visit only


def ops_store() -> Store:
    return scene_store_with_id(STORE_ID)


@dataclass(frozen=True)
class Shifted:
    """A scripted shopper moved later in time."""

    base: ScriptedShopper
    dt: float

    @property
    def name(self) -> str:
        return self.base.name

    def at(self, t: float) -> np.ndarray | None:
        return self.base.at(t - self.dt)

    def wrists(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        return self.base.wrists(t - self.dt)

    def reaching(self, t: float) -> bool:
        return any(a <= t - self.dt <= b for a, b, _ in self.base.reaches)


def erin(store: Store) -> ScriptedShopper:
    def spot(lane: str) -> tuple[float, float]:
        return (lane_target(store, lane)[0], 2.65)

    s2, s3, s4 = spot("L2"), spot("L3"), spot("L4")
    return ScriptedShopper(
        "erin",
        [
            (1.0, 0.5, 0.5),
            (2.0, 0.8, 1.2),
            (3.5, *s2),
            (5.0, *s2),
            (5.7, *s3),
            (7.2, *s3),
            (7.9, *s4),
            (9.4, *s4),
            (10.5, 3.2, 2.0),
            (12.5, 5.5, 0.5),
            (13.0, 5.6, 0.3),
        ],
        [
            (3.8, 4.8, lane_target(store, "L2")),
            (6.0, 7.0, lane_target(store, "L3")),
            (8.2, 9.2, lane_target(store, "L4")),
        ],
    )


def shoppers(store: Store) -> list[Shifted]:
    """Every scripted shopper of the session, on the session's clock (seconds after T0)."""
    return [Shifted(erin(store), 0.0)] + [Shifted(s, SHIFT) for s in _shoppers(store)]


def _shift(msg: BaseModel) -> BaseModel:
    upd: dict[str, Any] = {**moved_times(msg, SHIFT), "seq": msg.seq + SEQ_SHIFT}  # type: ignore[arg-type,attr-defined]
    return msg.model_copy(update=upd)


def _erin_messages(store: Store) -> list[BaseModel]:
    msgs: list[BaseModel] = list(tracks_messages([erin(store)], scene_cameras(), ERIN_T_END, seed=7))
    msgs.append(entry(ERIN, 1.1, 1))
    msgs.append(shelf_event(store, "x1", "L2", 3.8, 4.8, 1))
    msgs.append(shelf_event(store, "x2", "L3", 6.0, 7.0, 2))
    wrong = shelf_event(store, "x3", "L4", 8.2, 9.2, 3)
    wrong = wrong.model_copy(
        update={
            "delta_g": -150.0,
            "lanes": [LaneDelta(lane="L4", delta_g=-150.0)],
            "candidates": [Candidate(sku="P4", qty=1, p=0.55)],
        }
    )
    msgs.append(wrong)
    return msgs


def _status(state: str, t: float, seq: int) -> StatusMsg:
    return StatusMsg(source="c3", seq=seq, ts=T0 + t, device="c3", kind="camera", state=state)


def loadcell_blocks(
    store: Store, events: list[ShelfEventMsg], t_end: float, seed: int = 3
) -> list[LoadCellMsg]:
    """Shelf S1's lanes at 40 Hz from T0 to T0 + t_end, blocks of 10 samples: each lane starts full, each
    event moves its lanes by their ``delta_g`` over [t_start, t_end] (with the hand's press at the start)."""
    rng = np.random.default_rng(seed)
    lanes = [ln.id for ln in store.shelves["S1"].lanes]
    n = int(t_end * LOADCELL_HZ)
    t = T0 + np.arange(n) / LOADCELL_HZ
    w = np.empty((n, len(lanes)))
    for j, lane in enumerate(lanes):
        sku = store.lanes[lane].sku
        w[:, j] = store.lanes[lane].capacity * store.products[sku].weight_g if sku else 0.0
    for ev in events:
        for d in ev.lanes:
            j = lanes.index(d.lane)
            a, b = float(ev.t_start), float(ev.t_end)
            ramp = np.clip((t - a) / max(b - a, 1e-3), 0.0, 1.0)
            press = 35.0 * np.exp(-(((t - a - 0.15) / 0.12) ** 2))
            w[:, j] += d.delta_g * ramp + press
    w += rng.normal(0.0, 0.8, w.shape)
    out = []
    for k, i in enumerate(range(0, n, 10)):
        out.append(
            LoadCellMsg(
                source="shelfrec",
                seq=k + 1,
                ts=float(t[i]),
                shelf="S1",
                rate_hz=LOADCELL_HZ,
                lanes=lanes,
                samples=[[round(float(x), 2) for x in row] for row in w[i : i + 10]],
            )
        )
    return out


def session_messages(store: Store) -> list[BaseModel]:
    """The whole scripted session in capture-time order."""
    msgs = _erin_messages(store) + [_shift(m) for m in scene_messages(STORE_ID)]
    msgs += [_status("offline", OFFLINE[0], 20_001), _status("online", OFFLINE[1], 20_002)]
    events = [m for m in msgs if isinstance(m, ShelfEventMsg)]
    t_end = max(float(m.ts) for m in msgs) - T0
    msgs += loadcell_blocks(store, events, t_end)
    return sorted(msgs, key=lambda m: (m.ts, m.source, m.seq))


_KIND = {
    TracksMsg: (Kind.TRACKS, "camera"),
    ShelfEventMsg: (Kind.SHELF_EVENTS, "shelf"),
    GateEntryMsg: (Kind.GATE_ENTRY, "gate"),
    StatusMsg: (Kind.STATUS, "device"),
    LoadCellMsg: (Kind.LOADCELLS, "shelf"),
}


@dataclass
class Seeded:
    store: Store
    ledger: LedgerGateway
    visits: dict[str, str]  # account -> visit
    events: list[ShelfEventMsg]
    tap: EvidenceTap


def seed_fusion(db: Database) -> Seeded:
    """Run fusion and the evidence tap over the session; returns the ledger and each account's visit."""
    store = ops_store()
    bus = InProcessBus(STORE_ID)
    ledger = LedgerGateway(db, currency=store.store.currency)
    for acct in ALL_ACCOUNTS.values():
        ledger.ensure_account(acct, declines=acct in DECLINING)
    service = FusionService(
        store, db, bus.client("fusion", "fusion"), ledger, settings=ServiceSettings(snapshot_every_s=30.0)
    )
    service.start()
    tap = EvidenceTap(db)
    tap_client = bus.client("ops-tap", "ops")
    tap.attach(tap_client)
    tap_client.start()
    pub = bus.client("sim", "sim")
    pub.start()
    msgs = session_messages(store)
    for m in msgs:
        kind, field = _KIND[type(m)]
        pub.publish(kind, getattr(m, field), m)
    tap.flush()
    service.stop()
    with db.read() as conn:
        visits = {r.account: r.visit for r in store_db.all_receipts(conn)}
    return Seeded(store, ledger, visits, [m for m in msgs if isinstance(m, ShelfEventMsg)], tap)


def render_evidence(store: Store, root: Path, events: list[ShelfEventMsg], fps: float = 2.0) -> int:
    """Evidence frames (JPEG, as ``edge.evidence.EvidenceStore`` keeps them) of cameras c1-c3 around every
    event, rendered by the simulator with the session's shoppers; returns how many were written."""
    from edge.evidence import EvidenceStore
    from sim.body import Appearance, Body
    from sim.pose import STAND, skeleton
    from sim.render import Renderer, RenderOptions

    cams = scene_cameras()
    renderer = Renderer(
        store, cams, seed=5, options=RenderOptions(supersample=1, drop_prob=0.0, flicker_prob=0.0)
    )
    ev_store = EvidenceStore(root, retention_s=1e9)
    people = shoppers(store)
    shirts = [(60, 60, 170), (160, 90, 40), (40, 140, 60), (120, 40, 130), (30, 120, 200)]
    times: set[float] = set()
    for ev in events:  # the recorder's grid points either side of the event's middle
        mid = (float(ev.t_start) + float(ev.t_end)) / 2 - T0
        times.add(round(math.floor(mid * fps) / fps, 3))
        times.add(round(math.ceil(mid * fps) / fps, 3))
    n = 0
    for t in sorted(times):
        bodies = []
        for i, p in enumerate(people):
            xy = p.at(t)
            if xy is None:
                continue
            ahead = p.at(t + 0.2)
            heading = math.pi / 2
            if ahead is not None and not p.reaching(t) and float(np.hypot(*(ahead - xy))) > 0.02:
                heading = math.atan2(ahead[1] - xy[1], ahead[0] - xy[0])
            lw, rw = p.wrists(t)
            # upright, no lean: the scene's track boxes sit around the head straight above (x, y)
            joints = skeleton(
                float(xy[0]),
                float(xy[1]),
                heading,
                1.0,
                STAND,
                wrists={"l": (lw, 1.0), "r": (rw, 1.0)} if p.reaching(t) else None,
            )
            bodies.append(Body(p.name, joints, Appearance(shirt=shirts[i % len(shirts)])))
        for cid in cams:
            frame = renderer.render(cid, t, bodies)
            ev_store.put(cid, T0 + t, frame.image)
            n += 1
    return n


# ------------------------------------------------------------------------------------------------ synthetic
def synthetic_visit(
    db: Database,
    store: Store,
    visit: str,
    account: str,
    lines: list[tuple[str, int]],
    *,
    status: str,
    reasons: list[str],
    entered_at: float,
    queue: bool = True,
    payment_id: str | None = None,
    hold: LedgerGateway | None = None,
    hold_amount: int = 5000,
) -> None:
    """A settled visit written straight through fusion's row functions (no engine): lines ``(sku, qty)``;
    with ``hold``, an entry hold of ``hold_amount`` is taken first (key ``hold:{visit}``), as fusion does."""
    with db.begin() as conn:
        store_db.visit_add(conn, visit=visit, account=account, gate="G1", party_size=1, entered_at=entered_at)
    if hold is not None:
        h = hold.hold(account, amount=hold_amount, key=f"hold:{visit}")
        with db.begin() as conn:
            store_db.visit_set_hold(conn, visit, h.id, h.status if h.status == "authorized" else "failed")
    with db.begin() as conn:
        cart = [
            Line(
                line_id=f"{visit}-e{i}",
                kind="pick",
                sku=sku,
                qty=qty,
                unit_price=store.products[sku].price,
                confidence=0.97,
                margin=0.8,
                uncertain=False,
                t=entered_at + 5 + i,
                event_id=f"{visit}-e{i}",
                shopper="s1",
                cameras=("c1",),
                lanes=(sku.replace("P", "L"),),
            )
            for i, (sku, qty) in enumerate(lines)
        ]
        store_db.cart_lines_add(conn, visit, cart)
        total = sum(ln.amount for ln in cart)
        receipt_lines = [
            {
                "sku": ln.sku,
                "name": store.products[ln.sku].name,
                "qty": ln.qty,
                "unit_price": ln.unit_price,
                "amount": ln.amount,
                "uncertain": False,
            }
            for ln in cart
        ]
        store_db.visit_advance(
            conn, visit, "closed", exited_at=entered_at + 30, settled_at=entered_at + 31, shoppers=["s1"]
        )
        store_db.receipt_add(
            conn,
            visit=visit,
            account=account,
            decision="hold" if queue else "charge",
            total=total,
            currency=store.store.currency,
            lines=receipt_lines,
            reasons=reasons,
            charge_key=f"capture:{visit}",
            entered_at=entered_at,
            exited_at=entered_at + 30,
            settled_at=entered_at + 31,
        )
        store_db.receipt_finish(conn, visit, status, payment_id=payment_id, failure_code=None)
        if queue:
            store_db.review_add(
                conn,
                key=f"visit:{visit}",
                kind="visit",
                reason="; ".join(reasons),
                visit=visit,
                details={"account": account, "total": total},
                event_ts=entered_at + 31,
            )


def seed_synthetic(db: Database, store: Store, ledger: LedgerGateway) -> dict[str, str]:
    """A few visits beside the fusion session: a party missing a shopper (held) and a charged one."""
    ledger.ensure_account("acct-frank")
    ledger.ensure_account("acct-gina")
    synthetic_visit(
        db,
        store,
        "syn-party-1",
        "acct-frank",
        [("P1", 2), ("P6", 1)],
        status="held_for_review",
        reasons=["party of 2 but 1 shopper(s) tracked"],
        entered_at=T0 + 100,
    )
    charge = ledger.capture(account="acct-gina", amount=2 * 300 + 500, key="capture:syn-paid-1")
    synthetic_visit(
        db,
        store,
        "syn-paid-1",
        "acct-gina",
        [("P3", 2), ("P5", 1)],
        status="charged",
        reasons=[],
        entered_at=T0 + 110,
        queue=False,
        payment_id=charge.id,
    )
    return {"acct-frank": "syn-party-1", "acct-gina": "syn-paid-1"}


def bulk_visits(db: Database, store: Store, n: int, *, start: int = 0, chunk: int = 2000) -> None:
    """``n`` settled visits (two lines each), about a third of them held with an open review item and one in
    ten unassigned events, inserted in bulk (the benchmark's 10,000 visits)."""
    import sqlalchemy as sa

    from fusion.db import cart_lines, receipts, review_items, utcnow, visits

    rng = np.random.default_rng(11)
    skus = [p.sku for p in store.catalogue]
    reasons = [
        "product identification p=0.55",
        "association margin 0.08 < 0.2",
        "offline during the visit: c2",
        "party of 2 but 1 shopper(s) tracked",
    ]
    now = utcnow()
    from datetime import timedelta

    for lo in range(start, start + n, chunk):
        vs, cl, rc, ri = [], [], [], []
        for i in range(lo, min(lo + chunk, start + n)):
            vid = f"bulk-{i:06d}"
            t = T0 + 1000 + i * 7.0
            created = now - timedelta(seconds=(start + n - i) * 30)
            held = i % 3 == 0
            vs.append(
                {
                    "visit": vid,
                    "account": f"acct-{i % 997}",
                    "gate": "G1",
                    "party_size": 1,
                    "entered_at": t,
                    "exited_at": t + 60,
                    "settled_at": t + 61,
                    "status": "closed",
                    "shoppers": [f"s{i}"],
                    "hold_id": None,
                    "hold_status": None,
                    "created_at": created,
                    "updated_at": created,
                }
            )
            lines = []
            for k in range(2):
                sku = skus[int(rng.integers(len(skus)))]
                price = store.products[sku].price
                cl.append(
                    {
                        "visit": vid,
                        "line_id": f"b{i}-{k}",
                        "kind": "pick",
                        "sku": sku,
                        "qty": 1,
                        "unit_price": price,
                        "amount": price,
                        "confidence": 0.9,
                        "margin": 0.5,
                        "uncertain": held and k == 0,
                        "reason": "",
                        "event_id": f"b{i}-{k}",
                        "shopper": f"s{i}",
                        "runner_up": None,
                        "cameras": ["c1"],
                        "lanes": ["L1"],
                        "t": t + 10 + k,
                        "created_at": created,
                    }
                )
                lines.append(
                    {
                        "sku": sku,
                        "name": sku,
                        "qty": 1,
                        "unit_price": price,
                        "amount": price,
                        "uncertain": False,
                    }
                )
            rc.append(
                {
                    "visit": vid,
                    "account": f"acct-{i % 997}",
                    "decision": "hold" if held else "charge",
                    "status": "held_for_review" if held else "charged",
                    "total": sum(x["amount"] for x in lines),
                    "currency": store.store.currency,
                    "lines": lines,
                    "reasons": [],
                    "charge_key": f"capture:{vid}",
                    "payment_id": None,
                    "failure_code": None,
                    "entered_at": t,
                    "exited_at": t + 60,
                    "settled_at": t + 61,
                    "created_at": created,
                    "updated_at": created,
                }
            )
            if held:
                ri.append(
                    {
                        "item_key": f"visit:{vid}",
                        "kind": "visit",
                        "visit": vid,
                        "event_id": None,
                        "reason": reasons[i % len(reasons)],
                        "details": None,
                        "state": "open",
                        "event_ts": t + 61,
                        "created_at": created,
                        "resolved_at": None,
                        "resolved_by": None,
                    }
                )
            if i % 10 == 5:
                ri.append(
                    {
                        "item_key": f"event:bx{i}",
                        "kind": "event",
                        "visit": None,
                        "event_id": f"bx{i}",
                        "reason": "no shopper near the lanes",
                        "details": None,
                        "state": "open",
                        "event_ts": t,
                        "created_at": created,
                        "resolved_at": None,
                        "resolved_by": None,
                    }
                )
        with db.begin() as conn:
            conn.execute(sa.insert(visits), vs)
            conn.execute(sa.insert(cart_lines), cl)
            conn.execute(sa.insert(receipts), rc)
            if ri:
                conn.execute(sa.insert(review_items), ri)
