"""The review queue: the open ``review_items``, oldest first, with counts and ages per category.

Fusion queues held visits (``visit:{id}``) and shelf events no cart took (``event:{id}``); a shopper's dispute
adds ``dispute:{id}`` (:meth:`fusion.ops.review.Reviewer.open_dispute`).  Categories: ``dispute``,
``unassigned`` (an event), ``offline`` (a device was down during the visit: fusion's reason says so) and
``uncertain`` (any other reason to hold a visit: an unsure association or product, a party without all its
shoppers).  The page reads one page of items through the partial index ``ix_review_items_open_queue``
(migration 0003) and the counts in one grouped scan of the open items.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from fusion.db import Database, receipts, review_items, utcnow

CATEGORIES = ("uncertain", "dispute", "offline", "unassigned")
OFFLINE_MARK = "offline during the visit"


class QueueError(ValueError):
    """A bad queue request (unknown category)."""


@dataclass(frozen=True)
class QueueItem:
    id: int
    key: str
    category: str
    kind: str
    visit: str | None
    event_id: str | None
    account: str | None
    total: int | None
    currency: str | None
    receipt_status: str | None
    reason: str
    created_at: datetime
    age_s: float


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueItem]
    counts: dict[str, int]
    oldest_age_s: dict[str, float]
    total: int
    page: int
    per_page: int
    category: str | None

    @property
    def pages(self) -> int:
        n = self.counts.get(self.category, 0) if self.category else self.total
        return max(1, -(-n // self.per_page))


def category_expr() -> sa.ColumnElement[str]:
    ri = review_items
    return sa.case(
        (ri.c.item_key.like("dispute:%"), "dispute"),
        (ri.c.kind == "event", "unassigned"),
        (ri.c.reason.like(f"%{OFFLINE_MARK}%"), "offline"),
        else_="uncertain",
    )


def queue(
    db: Database,
    *,
    category: str | None = None,
    page: int = 1,
    per_page: int = 50,
    now: datetime | None = None,
) -> QueuePage:
    """The open review items, oldest first (``page`` from 1), with counts and the oldest age per category."""
    if category is not None and category not in CATEGORIES:
        raise QueueError(f"unknown category {category!r}")
    page = max(1, int(page))
    per_page = min(max(1, int(per_page)), 500)
    now = now or utcnow()
    ri, r = review_items, receipts
    cat = category_expr()
    stmt = (
        sa.select(
            ri.c.id,
            ri.c.item_key,
            ri.c.kind,
            ri.c.visit,
            ri.c.event_id,
            ri.c.reason,
            ri.c.created_at,
            cat.label("category"),
            r.c.account,
            r.c.total,
            r.c.currency,
            r.c.status,
        )
        .select_from(ri.outerjoin(r, r.c.visit == ri.c.visit))
        .where(ri.c.state == "open")
        .order_by(ri.c.created_at, ri.c.id)
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    if category is not None:
        stmt = stmt.where(cat == category)
    counts_stmt = (
        sa.select(cat.label("category"), sa.func.count(), sa.func.min(ri.c.created_at))
        .where(ri.c.state == "open")
        .group_by(cat)
    )
    with db.read() as conn:
        rows = conn.execute(stmt).all()
        count_rows = conn.execute(counts_stmt).all()
    counts = {c: 0 for c in CATEGORIES}
    oldest: dict[str, float] = {}
    for c, n, first in count_rows:
        counts[c] = int(n)
        oldest[c] = max(0.0, (now - _aware(first)).total_seconds())
    items = [
        QueueItem(
            id=int(x.id),
            key=x.item_key,
            category=x.category,
            kind=x.kind,
            visit=x.visit,
            event_id=x.event_id,
            account=x.account,
            total=None if x.total is None else int(x.total),
            currency=x.currency,
            receipt_status=x.status,
            reason=x.reason,
            created_at=_aware(x.created_at),
            age_s=max(0.0, (now - _aware(x.created_at)).total_seconds()),
        )
        for x in rows
    ]
    return QueuePage(items, counts, oldest, sum(counts.values()), page, per_page, category)


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t
