"""What a shopper sees of their visits (the shopper API's reads): their visits, and a receipt with its
refunds (amount, reason and note) and disputes (state, outcome and why).  Only the account's own visits: another
account's visit raises :class:`fusion.ops.review.Missing`, exactly like a visit that does not exist."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from calibration.store import Store
from fusion.db import Database, disputes, ops_adjustments, receipts, visits
from fusion.ops.review import REASON_CODES, Missing


def shopper_visits(db: Database, account: str, currency: str, limit: int = 100) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(
                visits.c.visit,
                visits.c.entered_at,
                visits.c.exited_at,
                visits.c.status,
                receipts.c.status.label("receipt_status"),
                receipts.c.total,
                receipts.c.currency,
            )
            .select_from(visits.outerjoin(receipts, receipts.c.visit == visits.c.visit))
            .where(visits.c.account == account)
            .order_by(visits.c.entered_at.desc())
            .limit(limit)
        ).all()
        refunded = dict(
            conn.execute(
                sa.select(ops_adjustments.c.visit, sa.func.sum(ops_adjustments.c.refunded))
                .join(visits, visits.c.visit == ops_adjustments.c.visit)
                .where(visits.c.account == account)
                .group_by(ops_adjustments.c.visit)
            ).all()
        )
    return [
        {
            "visit": x.visit,
            "entered_at": x.entered_at,
            "exited_at": x.exited_at,
            "status": x.receipt_status or ("in_store" if x.status == "open" else "settling"),
            "total": None if x.total is None else int(x.total),
            "currency": x.currency or currency,
            "refunded": int(refunded.get(x.visit) or 0),
        }
        for x in rows
    ]


def shopper_receipt(db: Database, store: Store, account: str, visit: str) -> dict[str, Any]:
    """The receipt as the shopper sees it: lines, status, refunds with their reasons, disputes with
    their outcome.  :class:`Missing` for another account's visit (it does not say whether it exists)."""
    with db.read() as conn:
        v = conn.execute(
            sa.select(visits).where(visits.c.visit == visit, visits.c.account == account)
        ).first()
        if v is None:
            raise Missing(f"no visit {visit!r}")
        r = conn.execute(sa.select(receipts).where(receipts.c.visit == visit)).first()
        adjs = conn.execute(
            sa.select(ops_adjustments).where(ops_adjustments.c.visit == visit).order_by(ops_adjustments.c.id)
        ).all()
        disp = conn.execute(
            sa.select(disputes).where(disputes.c.visit == visit).order_by(disputes.c.id)
        ).all()
    products = store.products
    refunds: dict[str, dict[str, Any]] = {}
    for a in adjs:
        if not a.refunded:
            continue
        key = a.adjustment.split(".")[0]
        entry = refunds.setdefault(
            key,
            {
                "refund": key,
                "amount": 0,
                "reason_code": a.reason_code,
                "reason": REASON_CODES.get(a.reason_code, a.reason_code),
                "note": a.note,
                "lines": [],
                "at": a.created_at.isoformat(),
            },
        )
        entry["amount"] += int(a.refunded)
        entry["lines"].append(
            {
                "sku": a.sku,
                "name": products[a.sku].name if a.sku in products else a.sku,
                "qty": -int(a.qty),
                "amount": int(a.refunded),
            }
        )
    refunded = sum(e["amount"] for e in refunds.values())
    status = r.status if r is not None else ("in_store" if v.status == "open" else "settling")
    total = int(r.total) if r is not None else None
    return {
        "visit": visit,
        "status": status,
        "entered_at": v.entered_at,
        "exited_at": v.exited_at,
        "currency": r.currency if r is not None else store.store.currency,
        "lines": [
            {k: ln[k] for k in ("sku", "name", "qty", "unit_price", "amount")}
            for ln in (r.lines if r else [])
        ],
        "total": total,
        "charged": total if status == "charged" else 0,
        "refunded": refunded,
        "net": (total if status == "charged" else 0) - refunded,
        "refunds": list(refunds.values()),
        "disputes": [
            {
                "dispute": int(d.id),
                "sku": d.sku,
                "qty": int(d.qty),
                "reason": d.reason,
                "state": d.state,
                "outcome": d.outcome,
                "outcome_note": d.outcome_note,
                "refunded": int(d.refunded),
                "opened_at": d.created_at.isoformat(),
                "resolved_at": d.resolved_at.isoformat() if d.resolved_at else None,
            }
            for d in disp
        ],
    }
