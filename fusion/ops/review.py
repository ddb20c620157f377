"""Every ops action on a visit, and the reads of the visit page.

Actions (:class:`Reviewer`; each checks the actor's role, runs under a per-visit lock, and writes an audit
entry ``entity="visit"`` with the state before and after):

* ``confirm``: a person looked at a line and agrees; nothing in the cart changes.
* ``remove`` / ``add`` / ``move`` a line, before the visit is charged: a new append-only cart line of kind
  ``adjustment`` (``-qty`` of the removed line; ``+qty`` of an added product at the catalogue price; a move
  is ``-qty`` here and ``+qty`` in the other visit), named after its row in ``ops_adjustments``.  Lines are
  never edited.  A line's *remaining* quantity is its own plus the adjustments that target it.
* ``approve``: the corrected receipt (net quantity per product over all lines) is captured through the
  payment gateway with the visit's capture key (``capture:{visit}``; ``capture:{visit}:retryN`` after a
  declined attempt), or the entry hold is cancelled when nothing is left to pay.  The receipt row goes to
  ``pending`` first (no edit is accepted from then on), then to its outcome, so an approval interrupted by a
  crash is finished by approving again (the same key replays; nothing is charged twice).
* ``refund`` part (one line, some of its quantity) or all of a charged visit, with a reason code: the money
  through the gateway with key ``refund:{adjustment}``, then the adjustment lines.  Refunds above
  ``refund_limit`` need an admin.  A refund resolves the visit's open disputes of the same product.
* disputes (opened by shoppers through the API, :meth:`Reviewer.open_dispute`, which queues the visit) are
  resolved by a refund, by removing the line before the visit is charged (``corrected``), or rejected with
  a note; the shopper sees the outcome and why (:mod:`fusion.ops.shopper`).
* unassigned events: ``assign`` (a line in an editable visit) or ``dismiss``.

Every form carries a fresh adjustment id, so a form submitted twice does its work once.  The queue itself is
:mod:`fusion.ops.queue`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from calibration.store import Store
from fusion.carts import Cart, Line
from fusion.db import (
    Database,
    audit_log,
    cart_lines,
    disputes,
    ops_adjustments,
    ops_event_evidence,
    payment_records,
    receipts,
    record_audit,
    review_items,
    trajectories,
    utcnow,
    visits,
)
from fusion.ops.auth import User
from fusion.payments import Charge, NotFound, PaymentError, PaymentGateway

log = logging.getLogger(__name__)

#: Why money goes back or a line changes (stored with the adjustment; the shopper sees the label).
REASON_CODES: dict[str, str] = {
    "wrong_product": "a different product was taken",
    "not_taken": "the product was not taken",
    "wrong_shopper": "another shopper took it",
    "put_back_missed": "the product was put back",
    "quantity": "a different quantity was taken",
    "missed_pick": "a product taken was missing from the cart",
    "damaged": "the product was damaged",
    "goodwill": "goodwill",
    "other": "other",
}
EDITABLE = ("held_for_review", "payment_failed")
ADJ_RE = re.compile(r"^adj-[a-z0-9]{8,32}$")
MAX_QTY = 100
MAX_NOTE = 1000
MAX_OPEN_DISPUTES = 20


class ReviewError(Exception):
    """An action that does not apply (its message is shown to the user as it is)."""


class Forbidden(ReviewError):
    """The actor's role does not allow the action."""


class Missing(ReviewError, LookupError):
    """Unknown visit, line, event or dispute."""


@dataclass(frozen=True)
class ReviewSettings:
    refund_limit: int = 5000  # minor units a reviewer may refund at once; above it, an admin
    max_open_disputes: int = MAX_OPEN_DISPUTES


def new_adjustment_id() -> str:
    return "adj-" + secrets.token_hex(8)


def _need(user: User, role: str) -> None:
    if not user.can(role):
        raise Forbidden(f"{user.name} ({user.role}) may not do this: it needs the {role} role")


def _adj(adj: str) -> str:
    if not isinstance(adj, str) or not ADJ_RE.match(adj):
        raise ReviewError("the form is stale or malformed (bad adjustment id); reload the page")
    return adj


def _note(note: str | None) -> str:
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise ReviewError(f"the note is longer than {MAX_NOTE} characters")
    return note


def _reason(code: str) -> str:
    if code not in REASON_CODES:
        raise ReviewError(f"unknown reason code {code!r}")
    return code


def _qty(qty: object) -> int:
    try:
        q = int(qty)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ReviewError(f"quantity {qty!r} is not a whole number") from None
    if not 1 <= q <= MAX_QTY:
        raise ReviewError(f"quantity must be 1..{MAX_QTY}")
    return q


# ------------------------------------------------------------------------------------------------ locks
class _VisitLocks:
    """One lock per visit in this process (the app serves from threads); PostgreSQL adds an advisory lock so
    several app processes queue too."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    @contextmanager
    def hold(self, db: Database, keys: Sequence[str]) -> Iterator[None]:
        keys = sorted(set(keys))
        with self._guard:
            locks = [self._locks[k] for k in keys]
        for lk in locks:
            lk.acquire()
        try:
            if db.dialect == "postgresql":
                with db.engine.connect() as conn, conn.begin():
                    for k in keys:
                        digest = hashlib.sha256(f"walkout.ops:{db.schema or ''}:{k}".encode()).digest()
                        conn.execute(
                            sa.select(
                                sa.func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))
                            )
                        )
                    yield
            else:
                yield
        finally:
            for lk in reversed(locks):
                lk.release()


_LOCKS = _VisitLocks()


# ------------------------------------------------------------------------------------------------ views
@dataclass
class LineView:
    line_id: str
    kind: str
    sku: str
    name: str
    qty: int
    unit_price: int
    amount: int
    confidence: float
    margin: float
    uncertain: bool
    reason: str
    event_id: str | None
    shopper: str | None
    runner_up: str | None
    cameras: list[str]
    lanes: list[str]
    t: float
    remaining: int = 0
    confirmed_by: str | None = None
    adjustment: dict[str, Any] | None = None
    evidence: bool = False


@dataclass
class VisitView:
    visit: dict[str, Any]
    receipt: dict[str, Any] | None
    lines: list[LineView]
    corrected: list[dict[str, Any]]  # receipt lines (net per product) after every adjustment
    corrected_total: int
    charge: Charge | None
    refunded: int
    adjustments: list[dict[str, Any]]
    disputes: list[dict[str, Any]]
    review: list[dict[str, Any]]
    history: list[dict[str, Any]]
    shoppers: list[str]
    editable: bool
    refundable: bool
    currency: str
    payments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.receipt["status"] if self.receipt else self.visit["status"]

    @property
    def open_review(self) -> list[dict[str, Any]]:
        return [r for r in self.review if r["state"] == "open"]


def _line_obj(row: Any) -> Line:
    return Line(
        line_id=row.line_id,
        kind=row.kind,
        sku=row.sku,
        qty=int(row.qty),
        unit_price=int(row.unit_price),
        confidence=float(row.confidence),
        margin=float(row.margin),
        uncertain=bool(row.uncertain),
        t=float(row.t),
        event_id=row.event_id,
        shopper=row.shopper,
        runner_up=row.runner_up,
        cameras=tuple(row.cameras or ()),
        reason=row.reason or "",
        lanes=tuple(row.lanes or ()),
    )


def corrected_receipt(store: Store, visit: str, rows: Sequence[Any]) -> tuple[list[dict[str, Any]], int]:
    """Receipt lines (net quantity per product, positive only) of all of a visit's cart lines, and their total."""
    cart = Cart(visit, [_line_obj(r) for r in rows])
    lines = cart.receipt_lines(store)
    return lines, sum(int(ln["amount"]) for ln in lines)


def _cart(conn: Connection, visit: str) -> list[SimpleNamespace]:
    """A visit's cart lines in order, as attribute objects (a Row's ``.t`` is its tuple, not the column)."""
    rows = conn.execute(sa.select(cart_lines).where(cart_lines.c.visit == visit).order_by(cart_lines.c.id))
    return [SimpleNamespace(**dict(r._mapping)) for r in rows]


class Reviewer:
    """Reads and actions of the ops app on one database, store and payment gateway."""

    def __init__(
        self, db: Database, store: Store, payments: PaymentGateway, settings: ReviewSettings | None = None
    ):
        self.db = db
        self.store = store
        self.payments = payments
        self.settings = settings or ReviewSettings()
        self.currency = store.store.currency

    # ------------------------------------------------------------------------------------------- reads
    def _visit_rows(self, conn: Connection, visit: str, *, lock: bool = False) -> tuple[Any, Any, list, list]:
        v = conn.execute(sa.select(visits).where(visits.c.visit == visit)).first()
        if v is None:
            raise Missing(f"no visit {visit!r}")
        rq = sa.select(receipts).where(receipts.c.visit == visit)
        if lock and conn.dialect.name == "postgresql":
            rq = rq.with_for_update()
        r = conn.execute(rq).first()
        lines = _cart(conn, visit)
        adjs = conn.execute(
            sa.select(ops_adjustments).where(ops_adjustments.c.visit == visit).order_by(ops_adjustments.c.id)
        ).all()
        return v, r, lines, adjs

    @staticmethod
    def remaining(lines: Sequence[Any], adjs: Sequence[Any]) -> dict[str, int]:
        """Each line's quantity after the adjustments that target it; an adjustment line that targets
        another line (remove, refund, move out) counts there, so its own remaining quantity is 0."""
        targeting = {a.adjustment for a in adjs if a.line_id is not None}
        rem = {ln.line_id: 0 if ln.line_id in targeting else int(ln.qty) for ln in lines}
        for a in adjs:
            if a.line_id is not None and a.line_id in rem:
                rem[a.line_id] += int(a.qty)
        return rem

    def visit_view(self, visit: str) -> VisitView:
        with self.db.read() as conn:
            v, r, lines, adjs = self._visit_rows(conn, visit)
            disp = conn.execute(
                sa.select(disputes).where(disputes.c.visit == visit).order_by(disputes.c.id)
            ).all()
            review = conn.execute(
                sa.select(review_items).where(review_items.c.visit == visit).order_by(review_items.c.id)
            ).all()
            hist = conn.execute(
                sa.select(audit_log)
                .where(audit_log.c.entity == "visit", audit_log.c.entity_id == visit)
                .order_by(audit_log.c.seq)
            ).all()
            events = [ln.event_id for ln in lines if ln.event_id]
            with_evidence = set()
            if events:
                with_evidence = set(
                    conn.execute(
                        sa.select(ops_event_evidence.c.event_id).where(
                            ops_event_evidence.c.event_id.in_(events)
                        )
                    ).scalars()
                )
            shoppers = sorted(
                set(
                    conn.execute(
                        sa.select(trajectories.c.shopper).where(trajectories.c.visit == visit).distinct()
                    ).scalars()
                )
                | set(v.shoppers or [])
            )
            keys = [f"hold:{visit}", f"cancel:{visit}"]
            pay_rows = conn.execute(
                sa.select(payment_records)
                .where(
                    sa.or_(
                        payment_records.c.idempotency_key.in_(keys),
                        payment_records.c.idempotency_key.like(f"capture:{visit}%"),
                        payment_records.c.idempotency_key.in_(
                            [f"refund:{a.adjustment.split('.')[0]}" for a in adjs if a.refunded] or ["-"]
                        ),
                    )
                )
                .order_by(payment_records.c.seq)
            ).all()
        rem = self.remaining(lines, adjs)
        confirmed = {}
        for h in hist:
            if h.action == "confirm_line" and isinstance(h.after, dict):
                confirmed[h.after.get("line")] = h.actor
        adj_by_id = {a.adjustment: dict(a._mapping) for a in adjs}
        products = self.store.products
        views = [
            LineView(
                line_id=ln.line_id,
                kind=ln.kind,
                sku=ln.sku,
                name=products[ln.sku].name if ln.sku in products else ln.sku,
                qty=int(ln.qty),
                unit_price=int(ln.unit_price),
                amount=int(ln.amount),
                confidence=float(ln.confidence),
                margin=float(ln.margin),
                uncertain=bool(ln.uncertain),
                reason=ln.reason or "",
                event_id=ln.event_id,
                shopper=ln.shopper,
                runner_up=ln.runner_up,
                cameras=list(ln.cameras or []),
                lanes=list(ln.lanes or []),
                t=float(ln.t),
                remaining=rem[ln.line_id],
                confirmed_by=confirmed.get(ln.line_id),
                adjustment=adj_by_id.get(ln.line_id),
                evidence=ln.event_id in with_evidence,
            )
            for ln in lines
        ]
        corrected, total = corrected_receipt(self.store, visit, lines)
        charge = None
        status = r.status if r is not None else None
        if r is not None and r.payment_id and status == "charged":
            try:
                charge = self.payments.get_charge(r.payment_id)
            except NotFound:
                charge = None
        return VisitView(
            visit=dict(v._mapping),
            receipt=None if r is None else dict(r._mapping),
            lines=views,
            corrected=corrected,
            corrected_total=total,
            charge=charge,
            refunded=sum(int(a.refunded) for a in adjs),
            adjustments=[dict(a._mapping) for a in adjs],
            disputes=[dict(d._mapping) for d in disp],
            review=[dict(x._mapping) for x in review],
            history=[dict(h._mapping) for h in hist],
            shoppers=shoppers,
            editable=status in EDITABLE,
            refundable=charge is not None and charge.refundable > 0,
            currency=r.currency if r is not None else self.currency,
            payments=[dict(p._mapping) for p in pay_rows],
        )

    def trajectories(self, visit: str) -> dict[str, list[tuple[float, float, float]]]:
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(trajectories.c.shopper, trajectories.c.t, trajectories.c.x, trajectories.c.y)
                .where(trajectories.c.visit == visit)
                .order_by(trajectories.c.shopper, trajectories.c.bucket)
            ).all()
        out: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for s, t, x, y in rows:
            out[s].append((float(t), float(x), float(y)))
        return dict(out)

    def trajectories_between(self, t0: float, t1: float) -> dict[str, list[tuple[float, float, float]]]:
        """Positions of every visit's shoppers in event time [t0, t1], keyed ``visit/shopper``."""
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(
                    trajectories.c.visit,
                    trajectories.c.shopper,
                    trajectories.c.t,
                    trajectories.c.x,
                    trajectories.c.y,
                )
                .where(trajectories.c.t >= t0, trajectories.c.t <= t1)
                .order_by(trajectories.c.visit, trajectories.c.shopper, trajectories.c.bucket)
                .limit(20000)
            ).all()
        out: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for v, s, t, x, y in rows:
            out[f"{v}/{s}"].append((float(t), float(x), float(y)))
        return dict(out)

    def line(self, visit: str, line_id: str) -> LineView:
        for ln in self.visit_view(visit).lines:
            if ln.line_id == line_id:
                return ln
        raise Missing(f"visit {visit} has no line {line_id!r}")

    def event_evidence(self, event_id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(ops_event_evidence).where(ops_event_evidence.c.event_id == event_id)
            ).first()
        return None if row is None else dict(row._mapping)

    def event_view(self, event_id: str) -> dict[str, Any]:
        """An event's review item, its evidence, and the visits on the floor at its time (to assign it)."""
        with self.db.read() as conn:
            item = conn.execute(
                sa.select(review_items).where(review_items.c.item_key == f"event:{event_id}")
            ).first()
            ev = conn.execute(
                sa.select(ops_event_evidence).where(ops_event_evidence.c.event_id == event_id)
            ).first()
            if item is None and ev is None:
                raise Missing(f"no event {event_id!r} under review")
            t = float(ev.t_end) if ev is not None else float(item.event_ts or 0.0)
            near = conn.execute(
                sa.select(
                    visits.c.visit,
                    visits.c.account,
                    visits.c.entered_at,
                    visits.c.exited_at,
                    receipts.c.status,
                )
                .select_from(visits.outerjoin(receipts, receipts.c.visit == visits.c.visit))
                .where(
                    visits.c.entered_at <= t + 60,
                    sa.or_(visits.c.exited_at.is_(None), visits.c.exited_at >= t - 60),
                )
                .order_by(visits.c.entered_at)
                .limit(50)
            ).all()
        return {
            "event_id": event_id,
            "item": None if item is None else dict(item._mapping),
            "evidence": None if ev is None else dict(ev._mapping),
            "t": t,
            "visits": [dict(n._mapping) for n in near],
        }

    # ------------------------------------------------------------------------------------------- helpers
    def _audit(
        self, conn: Connection, actor: User | str, action: str, visit: str, before: Any, after: Any
    ) -> None:
        record_audit(
            conn,
            actor=actor if isinstance(actor, str) else actor.name,
            action=action,
            entity="visit",
            entity_id=visit,
            before=before,
            after=after,
        )

    @staticmethod
    def _done(conn: Connection, adj: str) -> list[Any]:
        """Adjustment rows already written by the form with id ``adj`` (a resubmitted form)."""
        a = ops_adjustments
        return conn.execute(
            sa.select(a)
            .where(sa.or_(a.c.adjustment == adj, a.c.adjustment.like(f"{adj}.%")))
            .order_by(a.c.id)
        ).all()

    def _add_adjustment(
        self,
        conn: Connection,
        *,
        adjustment: str,
        visit: str,
        action: str,
        sku: str,
        qty: int,
        unit_price: int,
        reason_code: str,
        note: str,
        actor: User,
        line_id: str | None = None,
        refunded: int = 0,
        payment_id: str | None = None,
        dispute_id: int | None = None,
        other_visit: str | None = None,
        t: float = 0.0,
    ) -> None:
        now = utcnow()
        conn.execute(
            ops_adjustments.insert().values(
                adjustment=adjustment,
                visit=visit,
                action=action,
                line_id=line_id,
                sku=sku,
                qty=qty,
                amount=qty * unit_price,
                refunded=refunded,
                reason_code=reason_code,
                note=note,
                payment_id=payment_id,
                dispute_id=dispute_id,
                other_visit=other_visit,
                actor=actor.name,
                created_at=now,
            )
        )
        what = f"{action} {line_id}" if line_id else action
        text = f"ops {what} by {actor.name}: {REASON_CODES.get(reason_code, reason_code)}"
        conn.execute(
            cart_lines.insert().values(
                visit=visit,
                line_id=adjustment,
                kind="adjustment",
                sku=sku,
                qty=qty,
                unit_price=unit_price,
                amount=qty * unit_price,
                confidence=1.0,
                margin=1.0,
                uncertain=False,
                reason=(text + (f" — {note}" if note else ""))[:2000],
                event_id=None,
                shopper=None,
                runner_up=None,
                cameras=[],
                lanes=[],
                t=t,
                created_at=now,
            )
        )

    def _editable(self, r: Any, visit: str) -> None:
        if r is None:
            raise ReviewError(f"visit {visit} is not settled yet: fusion is still building its cart")
        if r.status not in EDITABLE:
            hint = " (refund instead)" if r.status == "charged" else ""
            raise ReviewError(f"visit {visit} is {r.status}: its cart can no longer be changed{hint}")

    @staticmethod
    def _line_row(lines: Sequence[Any], line_id: str, visit: str) -> Any:
        for ln in lines:
            if ln.line_id == line_id:
                return ln
        raise Missing(f"visit {visit} has no line {line_id!r}")

    def _resolve_disputes(
        self,
        conn: Connection,
        visit: str,
        sku: str | None,
        outcome: str,
        note: str,
        actor: User,
        refunded: int = 0,
        dispute_id: int | None = None,
    ) -> list[int]:
        d = disputes
        where = [d.c.visit == visit, d.c.state == "open"]
        if dispute_id is not None:
            where.append(d.c.id == dispute_id)
        elif sku is not None:
            where.append(d.c.sku == sku)
        ids = [int(x) for x in conn.execute(sa.select(d.c.id).where(*where).order_by(d.c.id)).scalars()]
        now = utcnow()
        for i, did in enumerate(ids):
            conn.execute(
                d.update()
                .where(d.c.id == did)
                .values(
                    state="resolved",
                    outcome=outcome,
                    outcome_note=note[:MAX_NOTE],
                    refunded=refunded if i == 0 else 0,
                    resolved_at=now,
                    resolved_by=actor.name,
                )
            )
            self._resolve_item(conn, f"dispute:{did}", actor, now)
        return ids

    @staticmethod
    def _resolve_item(conn: Connection, key: str, actor: User, now: datetime | None = None) -> bool:
        res = conn.execute(
            review_items.update()
            .where(review_items.c.item_key == key, review_items.c.state == "open")
            .values(state="resolved", resolved_at=now or utcnow(), resolved_by=actor.name),
            execution_options={"preserve_rowcount": True},
        )
        return res.rowcount == 1

    # ------------------------------------------------------------------------------------------- actions
    def confirm(self, visit: str, line_id: str, *, actor: User, note: str = "") -> None:
        _need(actor, "reviewer")
        note = _note(note)
        with _LOCKS.hold(self.db, [visit]), self.db.begin() as conn:
            _v, _r, lines, adjs = self._visit_rows(conn, visit, lock=True)
            ln = self._line_row(lines, line_id, visit)
            self._audit(
                conn,
                actor,
                "confirm_line",
                visit,
                {"line": line_id, "uncertain": bool(ln.uncertain)},
                {"line": line_id, "sku": ln.sku, "qty": self.remaining(lines, adjs)[line_id], "note": note},
            )
        log.info("visit %s: line %s confirmed by %s", visit, line_id, actor.name)

    def remove(
        self,
        visit: str,
        line_id: str,
        *,
        actor: User,
        reason_code: str,
        note: str = "",
        adj: str,
        qty: int | None = None,
    ) -> bool:
        """Take a line (or ``qty`` of it) out of an unsettled cart; False when this form was done before."""
        _need(actor, "reviewer")
        reason_code, note, adj = _reason(reason_code), _note(note), _adj(adj)
        with _LOCKS.hold(self.db, [visit]), self.db.begin() as conn:
            if self._done(conn, adj):
                return False
            _v, r, lines, adjs = self._visit_rows(conn, visit, lock=True)
            self._editable(r, visit)
            ln = self._line_row(lines, line_id, visit)
            left = self.remaining(lines, adjs)[line_id]
            if left == 0:
                raise ReviewError(f"line {line_id} was removed already")
            take = left if qty is None else (_qty(qty) if left > 0 else -_qty(qty))
            if abs(take) > abs(left):
                raise ReviewError(f"line {line_id} has {left} left; cannot remove {take}")
            _before, total_before = corrected_receipt(self.store, visit, lines)
            self._add_adjustment(
                conn,
                adjustment=adj,
                visit=visit,
                action="remove",
                sku=ln.sku,
                qty=-take,
                unit_price=int(ln.unit_price),
                reason_code=reason_code,
                note=note,
                actor=actor,
                line_id=line_id,
                t=float(ln.t),
            )
            resolved = (
                self._resolve_disputes(
                    conn,
                    visit,
                    ln.sku,
                    "corrected",
                    f"removed from the receipt before payment: {REASON_CODES[reason_code]}",
                    actor,
                )
                if take > 0
                else []
            )
            lines2 = _cart(conn, visit)
            _after, total_after = corrected_receipt(self.store, visit, lines2)
            self._audit(
                conn,
                actor,
                "remove_line",
                visit,
                {"line": line_id, "remaining": left, "total": total_before},
                {
                    "line": line_id,
                    "adjustment": adj,
                    "qty": -take,
                    "remaining": left - take,
                    "total": total_after,
                    "reason_code": reason_code,
                    "note": note,
                    "disputes": resolved,
                },
            )
        log.info("visit %s: %s removed %d of line %s (%s)", visit, actor.name, take, line_id, reason_code)
        return True

    def add(
        self,
        visit: str,
        sku: str,
        qty: int,
        *,
        actor: User,
        reason_code: str,
        note: str = "",
        adj: str,
        action: str = "add",
        event_id: str | None = None,
    ) -> bool:
        """Add ``qty`` of a catalogue product to an unsettled cart (a pick the system missed)."""
        _need(actor, "reviewer")
        reason_code, note, adj, qty = _reason(reason_code), _note(note), _adj(adj), _qty(qty)
        product = self.store.products.get(sku)
        if product is None:
            raise ReviewError(f"SKU {sku!r} is not in the catalogue")
        with _LOCKS.hold(self.db, [visit]), self.db.begin() as conn:
            if self._done(conn, adj):
                return False
            v, r, lines, _adjs = self._visit_rows(conn, visit, lock=True)
            self._editable(r, visit)
            _b, total_before = corrected_receipt(self.store, visit, lines)
            self._add_adjustment(
                conn,
                adjustment=adj,
                visit=visit,
                action=action,
                sku=sku,
                qty=qty,
                unit_price=product.price,
                reason_code=reason_code,
                note=(f"event {event_id}. " if event_id else "") + note,
                actor=actor,
                t=float(v.exited_at or v.entered_at),
            )
            lines2 = _cart(conn, visit)
            _a, total_after = corrected_receipt(self.store, visit, lines2)
            self._audit(
                conn,
                actor,
                f"{action}_line",
                visit,
                {"total": total_before},
                {
                    "adjustment": adj,
                    "sku": sku,
                    "qty": qty,
                    "unit_price": product.price,
                    "total": total_after,
                    "reason_code": reason_code,
                    "note": note,
                    "event_id": event_id,
                },
            )
        log.info("visit %s: %s added %d x %s (%s)", visit, actor.name, qty, sku, reason_code)
        return True

    def move(
        self,
        visit: str,
        line_id: str,
        target: str,
        *,
        actor: User,
        reason_code: str,
        note: str = "",
        adj: str,
    ) -> bool:
        """Move what is left of a line to another unsettled visit (the other shopper took it)."""
        _need(actor, "reviewer")
        reason_code, note, adj = _reason(reason_code), _note(note), _adj(adj)
        if target == visit:
            raise ReviewError("a line cannot move to its own visit")
        with _LOCKS.hold(self.db, [visit, target]), self.db.begin() as conn:
            if self._done(conn, adj):
                return False
            _v, r, lines, adjs = self._visit_rows(conn, visit, lock=True)
            self._editable(r, visit)
            try:
                _tv, tr, tlines, _ = self._visit_rows(conn, target, lock=True)
            except Missing:
                raise ReviewError(f"no visit {target!r} to move the line to") from None
            self._editable(tr, target)
            ln = self._line_row(lines, line_id, visit)
            left = self.remaining(lines, adjs)[line_id]
            if left <= 0:
                raise ReviewError(f"line {line_id} has nothing left to move")
            _b, src_before = corrected_receipt(self.store, visit, lines)
            _b, dst_before = corrected_receipt(self.store, target, tlines)
            common = {
                "sku": ln.sku,
                "unit_price": int(ln.unit_price),
                "reason_code": reason_code,
                "note": note,
                "actor": actor,
                "t": float(ln.t),
            }
            self._add_adjustment(
                conn,
                adjustment=f"{adj}.out",
                visit=visit,
                action="move_out",
                qty=-left,
                line_id=line_id,
                other_visit=target,
                **common,
            )
            self._add_adjustment(
                conn,
                adjustment=f"{adj}.in",
                visit=target,
                action="move_in",
                qty=left,
                other_visit=visit,
                **common,
            )
            resolved = self._resolve_disputes(
                conn, visit, ln.sku, "corrected", "another shopper took it; removed before payment", actor
            )
            for vid, before in ((visit, src_before), (target, dst_before)):
                rows = _cart(conn, vid)
                _a, after = corrected_receipt(self.store, vid, rows)
                self._audit(
                    conn,
                    actor,
                    "move_line",
                    vid,
                    {"total": before},
                    {
                        "line": line_id,
                        "from": visit,
                        "to": target,
                        "sku": ln.sku,
                        "qty": left,
                        "adjustment": adj,
                        "total": after,
                        "reason_code": reason_code,
                        "note": note,
                        "disputes": resolved if vid == visit else [],
                    },
                )
        log.info(
            "line %s (%s x %d) moved from visit %s to %s by %s",
            line_id,
            ln.sku,
            left,
            visit,
            target,
            actor.name,
        )
        return True

    # --------------------------------------------------------------------------------------------- money
    def _capture_key(self, conn: Connection, visit: str, stored: str | None) -> str:
        base = stored or f"capture:{visit}"
        used = conn.execute(
            sa.select(payment_records.c.idempotency_key, payment_records.c.status)
            .where(
                sa.or_(
                    payment_records.c.idempotency_key == base,
                    payment_records.c.idempotency_key.like(f"{base}:retry%"),
                )
            )
            .order_by(payment_records.c.seq)
        ).all()
        if not used:
            return base
        return f"{base}:retry{len(used)}"

    def approve(self, visit: str, *, actor: User, note: str = "") -> dict[str, Any]:
        """Settle a held (or failed) visit at its corrected total; returns the receipt's outcome.

        Approving an approved visit returns its outcome again and moves no money."""
        _need(actor, "reviewer")
        note = _note(note)
        with _LOCKS.hold(self.db, [visit]):
            with self.db.begin() as conn:
                v, r, lines, _adjs = self._visit_rows(conn, visit, lock=True)
                if r is None:
                    raise ReviewError(f"visit {visit} is not settled yet: fusion is still building its cart")
                if r.status in ("charged", "no_charge"):
                    return {
                        "status": r.status,
                        "total": int(r.total),
                        "payment_id": r.payment_id,
                        "again": True,
                    }
                if r.status != "pending" and r.status not in EDITABLE:
                    raise ReviewError(f"visit {visit} is {r.status}; there is nothing to approve")
                before = {"status": r.status, "total": int(r.total), "lines": list(r.lines)}
                if r.status == "pending":  # an approval interrupted before its outcome was written
                    total, key = int(r.total), r.charge_key
                else:
                    corrected, total = corrected_receipt(self.store, visit, lines)
                    key = self._capture_key(conn, visit, r.charge_key) if total > 0 else None
                    conn.execute(
                        receipts.update()
                        .where(receipts.c.visit == visit)
                        .values(
                            status="pending",
                            total=total,
                            lines=corrected,
                            charge_key=key,
                            updated_at=utcnow(),
                        )
                    )
            status, payment_id, code = self._settle(v, r.account, visit, total, key)
            with self.db.begin() as conn:
                reasons = list(r.reasons or []) + [
                    f"approved by {actor.name}" + (f": {note}" if note else "")
                ]
                conn.execute(
                    receipts.update()
                    .where(receipts.c.visit == visit, receipts.c.status == "pending")
                    .values(
                        status=status,
                        payment_id=payment_id,
                        failure_code=code,
                        reasons=reasons[-64:],
                        updated_at=utcnow(),
                    )
                )
                now = utcnow()
                if status != "payment_failed":
                    conn.execute(
                        review_items.update()
                        .where(
                            review_items.c.visit == visit,
                            review_items.c.state == "open",
                            review_items.c.kind == "visit",
                            ~review_items.c.item_key.like("dispute:%"),
                        )
                        .values(state="resolved", resolved_at=now, resolved_by=actor.name)
                    )
                after = {
                    "status": status,
                    "total": total,
                    "payment_id": payment_id,
                    "failure_code": code,
                    "key": key,
                    "note": note,
                }
                self._audit(conn, actor, "approve", visit, before, after)
        log.info("visit %s approved by %s: %s, total %d", visit, actor.name, status, total)
        return {
            "status": status,
            "total": total,
            "payment_id": payment_id,
            "failure_code": code,
            "again": False,
        }

    def _settle(
        self, v: Any, account: str, visit: str, total: int, key: str | None
    ) -> tuple[str, str | None, str | None]:
        hold_ok = v.hold_status == "authorized" and v.hold_id is not None
        if hold_ok:
            try:
                hold_ok = self.payments.get_hold(v.hold_id).status == "authorized"
            except NotFound:
                hold_ok = False
        if total == 0:
            if not hold_ok:
                return "no_charge", None, None
            cancel = self.payments.cancel(v.hold_id, key=f"cancel:{visit}")
            return "no_charge", cancel.id, None
        assert key is not None
        try:
            if hold_ok:
                charge = self.payments.capture(v.hold_id, amount=total, key=key)
            else:
                charge = self.payments.capture(account=account, amount=total, key=key)
        except NotFound:
            return "payment_failed", None, "unknown_account"
        except PaymentError as exc:
            raise ReviewError(f"the payment provider refused the capture: {exc}") from exc
        if charge.succeeded:
            return "charged", charge.id, None
        log.warning("visit %s: capture of %d declined (%s)", visit, total, charge.failure_code)
        return "payment_failed", charge.id, charge.failure_code

    def refund(
        self,
        visit: str,
        *,
        actor: User,
        reason_code: str,
        adj: str,
        line_id: str | None = None,
        qty: int | None = None,
        note: str = "",
        dispute_id: int | None = None,
    ) -> dict[str, Any]:
        """Refund one line (``qty`` of it, all of it by default) or, without ``line_id``, everything left."""
        _need(actor, "reviewer")
        reason_code, note, adj = _reason(reason_code), _note(note), _adj(adj)
        with _LOCKS.hold(self.db, [visit]):
            with self.db.read() as conn:
                done = self._done(conn, adj)
                if done:
                    return {"amount": sum(int(a.refunded) for a in done), "again": True}
                _v, r, lines, adjs = self._visit_rows(conn, visit)
            if r is None or r.status != "charged" or not r.payment_id:
                raise ReviewError(f"visit {visit} has not been charged; remove the line instead")
            rem = self.remaining(lines, adjs)
            net: dict[str, int] = defaultdict(int)
            for ln in lines:
                net[ln.sku] += rem[ln.line_id]
            plan: list[tuple[Any, int]] = []  # (line, qty to refund)
            if line_id is not None:
                ln = self._line_row(lines, line_id, visit)
                left = min(rem[line_id], net[ln.sku])
                want = left if qty is None else _qty(qty)
                if left <= 0:
                    raise ReviewError(f"line {line_id} has nothing left to refund")
                if want > left:
                    raise ReviewError(f"line {line_id} has {left} left; cannot refund {want}")
                plan.append((ln, want))
            else:
                for sku, n in sorted(net.items()):
                    for ln in lines:
                        if n <= 0:
                            break
                        if ln.sku == sku and rem[ln.line_id] > 0:
                            take = min(rem[ln.line_id], n)
                            plan.append((ln, take))
                            n -= take
            amount = sum(q * int(ln.unit_price) for ln, q in plan)
            if amount <= 0:
                raise ReviewError("there is nothing to refund")
            if amount > self.settings.refund_limit and not actor.can("admin"):
                raise Forbidden(
                    f"a refund of {amount} is above the reviewers' limit of {self.settings.refund_limit}: "
                    "an admin must do it"
                )
            try:
                refund = self.payments.refund(
                    r.payment_id, amount=amount, reason_code=reason_code, key=f"refund:{adj}"
                )
            except PaymentError as exc:
                raise ReviewError(f"the payment provider refused the refund: {exc}") from exc
            with self.db.begin() as conn:
                if self._done(conn, adj):  # a concurrent submission of the same form wrote it
                    return {"amount": refund.amount, "again": True}
                for k, (ln, q) in enumerate(plan):
                    self._add_adjustment(
                        conn,
                        adjustment=adj if line_id is not None else f"{adj}.{k + 1}",
                        visit=visit,
                        action="refund",
                        sku=ln.sku,
                        qty=-q,
                        unit_price=int(ln.unit_price),
                        reason_code=reason_code,
                        note=note,
                        actor=actor,
                        line_id=ln.line_id,
                        refunded=q * int(ln.unit_price),
                        payment_id=refund.id,
                        dispute_id=dispute_id,
                        t=float(ln.t),
                    )
                why = REASON_CODES[reason_code] + (f": {note}" if note else "")
                resolved: list[int] = []
                if dispute_id is not None:
                    resolved = self._resolve_disputes(
                        conn, visit, None, "refunded", why, actor, refund.amount, dispute_id=dispute_id
                    )
                else:
                    for sku in sorted({ln.sku for ln, _ in plan}):
                        part = sum(q * int(ln.unit_price) for ln, q in plan if ln.sku == sku)
                        resolved += self._resolve_disputes(conn, visit, sku, "refunded", why, actor, part)
                self._audit(
                    conn,
                    actor,
                    "refund",
                    visit,
                    {"refunded_before": sum(int(a.refunded) for a in adjs)},
                    {
                        "adjustment": adj,
                        "amount": refund.amount,
                        "refund_id": refund.id,
                        "key": f"refund:{adj}",
                        "lines": [{"line": ln.line_id, "sku": ln.sku, "qty": q} for ln, q in plan],
                        "reason_code": reason_code,
                        "note": note,
                        "disputes": resolved,
                    },
                )
        log.info(
            "visit %s: refund %s of %d by %s (%s)", visit, refund.id, refund.amount, actor.name, reason_code
        )
        return {"amount": refund.amount, "refund_id": refund.id, "again": False}

    # ------------------------------------------------------------------------------------------- disputes
    def open_dispute(self, visit: str, account: str, sku: str, qty: int, reason: str) -> int:
        """A shopper disputes ``qty`` of product ``sku`` on their receipt; queues the visit for review."""
        reason = (reason or "").strip()
        if not 3 <= len(reason) <= MAX_NOTE:
            raise ReviewError(f"say why in 3 to {MAX_NOTE} characters")
        qty = _qty(qty)
        with _LOCKS.hold(self.db, [visit]), self.db.begin() as conn:
            r = conn.execute(sa.select(receipts).where(receipts.c.visit == visit)).first()
            if r is None or r.account != account:
                raise Missing(f"no visit {visit!r}")
            lines = _cart(conn, visit)
            current = {ln["sku"]: int(ln["qty"]) for ln in (r.lines or [])}
            if r.status in EDITABLE or r.status == "pending":
                current = {ln["sku"]: int(ln["qty"]) for ln in corrected_receipt(self.store, visit, lines)[0]}
            if sku not in current:
                raise ReviewError(f"product {sku!r} is not on this receipt")
            if qty > current[sku]:
                raise ReviewError(f"the receipt has {current[sku]} of {sku}")
            n_open = conn.execute(
                sa.select(sa.func.count())
                .select_from(disputes)
                .where(disputes.c.visit == visit, disputes.c.state == "open")
            ).scalar_one()
            if n_open >= self.settings.max_open_disputes:
                raise ReviewError("this visit has too many open disputes already")
            now = utcnow()
            did = conn.execute(
                disputes.insert()
                .values(
                    visit=visit,
                    account=account,
                    sku=sku,
                    qty=qty,
                    reason=reason,
                    state="open",
                    refunded=0,
                    created_at=now,
                )
                .returning(disputes.c.id)
            ).scalar_one()
            name = self.store.products[sku].name if sku in self.store.products else sku
            conn.execute(
                review_items.insert().values(
                    item_key=f"dispute:{did}",
                    kind="visit",
                    visit=visit,
                    event_id=None,
                    reason=f"dispute: {qty} x {name}: {reason}"[:2000],
                    details={"dispute": int(did), "sku": sku, "qty": qty, "account": account},
                    state="open",
                    event_ts=None,
                    created_at=now,
                )
            )
            self._audit(
                conn,
                f"shopper:{account}",
                "open_dispute",
                visit,
                None,
                {"dispute": int(did), "sku": sku, "qty": qty, "reason": reason},
            )
        log.info("visit %s: dispute %d opened by the shopper (%s x %d)", visit, did, sku, qty)
        return int(did)

    def reject_dispute(self, visit: str, dispute_id: int, *, actor: User, note: str) -> None:
        _need(actor, "reviewer")
        note = _note(note)
        if len(note) < 3:
            raise ReviewError("say why the dispute is rejected (the shopper sees it)")
        with _LOCKS.hold(self.db, [visit]), self.db.begin() as conn:
            ids = self._resolve_disputes(
                conn, visit, None, "rejected", note, actor, dispute_id=int(dispute_id)
            )
            if not ids:
                raise ReviewError(f"dispute {dispute_id} of visit {visit} is not open")
            self._audit(
                conn,
                actor,
                "reject_dispute",
                visit,
                {"dispute": int(dispute_id), "state": "open"},
                {"dispute": int(dispute_id), "state": "resolved", "outcome": "rejected", "note": note},
            )

    # ------------------------------------------------------------------------------------------- events
    def assign_event(
        self, event_id: str, visit: str, sku: str, qty: int, *, actor: User, adj: str, note: str = ""
    ) -> bool:
        """Put an unassigned shelf event's product in a visit's cart and close the event's review item."""
        done = self.add(
            visit,
            sku,
            qty,
            actor=actor,
            reason_code="missed_pick",
            note=note,
            adj=adj,
            action="assign",
            event_id=event_id,
        )
        with self.db.begin() as conn:
            if self._resolve_item(conn, f"event:{event_id}", actor):
                record_audit(
                    conn,
                    actor=actor.name,
                    action="assign_event",
                    entity="event",
                    entity_id=event_id,
                    before={"state": "open"},
                    after={"visit": visit, "sku": sku, "qty": qty, "adjustment": adj},
                )
        return done

    def dismiss_event(self, event_id: str, *, actor: User, note: str) -> None:
        _need(actor, "reviewer")
        note = _note(note)
        if len(note) < 3:
            raise ReviewError("say why the event is dismissed")
        with self.db.begin() as conn:
            if not self._resolve_item(conn, f"event:{event_id}", actor):
                raise ReviewError(f"event {event_id} is not open for review")
            record_audit(
                conn,
                actor=actor.name,
                action="dismiss_event",
                entity="event",
                entity_id=event_id,
                before={"state": "open"},
                after={"state": "resolved", "note": note},
            )
