"""What a run left behind (receipts, payment journal) and how two runs compare.

Receipts are compared per account (one visit per account in the sessions; a visit id carries its gate scan's
time, which a skewed gate clock shifts): status, total, lines (SKU, quantity, unit price, amount, uncertain)
and the reasons of a held visit.  Money is compared through the payment journal: one capture per charged or
declined visit, never two records under one idempotency key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from fusion import store_db
from fusion.db import Database, payment_records


@dataclass
class Outcome:
    receipts: dict[str, dict[str, Any]]  # account -> comparable receipt
    visits: dict[str, str]  # account -> visit id
    pending: int  # receipts not yet settled
    journal: list[dict[str, Any]]
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # account -> (entered, exited) times
    offset: float = 0.0  # capture time = session time (s from the first message) + offset
    published: list[Any] = field(default_factory=list)  # ReceiptMsg the watcher saw
    counters: dict[str, int] = field(default_factory=dict)

    def span(self, account: str) -> tuple[float, float]:
        """A visit's entry and exit in session time."""
        a, b = self.spans[account]
        return a - self.offset, b - self.offset

    def captures(self) -> Counter[str]:
        """Capture records per visit key (succeeded or declined)."""
        return Counter(r["key"] for r in self.journal if r["kind"] == "capture")

    def statuses(self) -> Counter[str]:
        return Counter(r["status"] for r in self.receipts.values())


def outcome_of(db: Database) -> Outcome:
    with db.read() as conn:
        rows = store_db.all_receipts(conn)
        pay = conn.execute(sa.select(payment_records).order_by(payment_records.c.seq)).all()
    receipts, visits, spans, pending = {}, {}, {}, 0
    for r in rows:
        spans[r.account] = (r.entered_at, r.exited_at)
        if r.status == "pending":
            pending += 1
        visits[r.account] = r.visit
        receipts[r.account] = {
            "status": r.status,
            "total": r.total,
            "lines": [(ln["sku"], ln["qty"], ln["unit_price"], ln["amount"], bool(ln.get("uncertain", False)))
                      for ln in r.lines],
            "reasons": list(r.reasons),
        }
    journal = [{"key": p.idempotency_key, "kind": p.kind, "account": p.account_id, "amount": p.amount,
                "status": p.status} for p in pay]
    return Outcome(receipts, visits, pending, journal, spans)


def receipt_diffs(ref: Outcome, got: Outcome, accounts: set[str] | None = None) -> list[str]:
    """Accounts whose receipts differ (with what differs); ``accounts`` limits the comparison."""
    out = []
    for acct in sorted(set(ref.receipts) | set(got.receipts)):
        if accounts is not None and acct not in accounts:
            continue
        a, b = ref.receipts.get(acct), got.receipts.get(acct)
        if a != b:
            if a is None or b is None:
                out.append(f"{acct}: {'missing' if b is None else 'extra'}")
            else:
                what = [k for k in a if a[k] != b.get(k)]
                out.append(f"{acct}: {', '.join(f'{k} {a[k]!r} -> {b[k]!r}' for k in what)}")
    return out


def double_charges(out: Outcome) -> int:
    """Visits with more than one capture record, plus idempotency keys recorded twice."""
    caps = out.captures()
    keys = Counter(r["key"] for r in out.journal)
    return sum(1 for n in caps.values() if n > 1) + sum(1 for n in keys.values() if n > 1)


def charges_per_visit_ok(out: Outcome) -> bool:
    """Exactly one capture for every charged or declined visit, none for the others."""
    caps = out.captures()
    for acct, r in out.receipts.items():
        key = f"capture:{out.visits[acct]}"
        want = 1 if r["status"] in ("charged", "payment_failed") else 0
        if caps.get(key, 0) != want:
            return False
    return double_charges(out) == 0


def wrong_charges(ref: Outcome, got: Outcome) -> list[str]:
    """Visits settled without a person (charged, or closed with nothing to charge) whose outcome, amount or
    lines differ from the reference's (a visit held for review instead is not a wrong charge: a person
    decides; a visit let go without a charge that the reference charged is one)."""
    out = []
    for acct, r in got.receipts.items():
        if r["status"] not in ("charged", "no_charge"):
            continue
        want = ref.receipts.get(acct)
        if want is None or (want["status"], want["total"], want["lines"]) != (r["status"], r["total"], r["lines"]):
            out.append(f"{acct}: {r['status']} {r['total']} ({r['lines']}), reference "
                       f"{want and (want['status'], want['total'])}")
    return out


def published_match(out: Outcome) -> list[str]:
    """Published receipts that disagree with the database (a restart may publish one again: that is fine)."""
    bad = []
    for msg in out.published:
        row = out.receipts.get(msg.account)
        if row is None:
            bad.append(f"{msg.visit}: published but not in the database")
            continue
        lines = [(ln.sku, ln.qty, ln.unit_price, ln.amount, ln.uncertain) for ln in msg.lines]
        if (msg.status, msg.total, lines) != (row["status"], row["total"], row["lines"]):
            bad.append(f"{msg.visit}: published {msg.status} {msg.total}, database {row['status']} {row['total']}")
    return bad


def wrong_vs_truth(out: Outcome, truth: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Visits settled without a person (charged or not charged) whose lines differ from what the shopper
    really took (the simulator's truth)."""
    bad = []
    for acct, r in sorted(out.receipts.items()):
        if r["status"] not in ("charged", "no_charge") or acct not in truth:
            continue
        got = sorted((sku, qty) for sku, qty, *_ in r["lines"])
        if got != truth[acct]:
            bad.append(f"{acct}: {r['status']} {got}, took {truth[acct]}")
    return bad
