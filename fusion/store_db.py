"""Fusion's rows in the database: the inbox, engine snapshots, visits, cart lines, receipts, review items,
device status events, trajectories and account standing (tables in :mod:`fusion.db`, migration 0002).

Every function takes an open :class:`sqlalchemy.engine.Connection` and runs inside the caller's transaction,
so the service decides what commits together.  Writes that an effect may repeat after a restart are
idempotent: ``insert ... on conflict do nothing`` on the natural key (``(source, seq)``, ``(visit, line_id)``,
the visit, the review item's key), and status changes only move forward (a receipt leaves ``pending`` once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from fusion.carts import Line
from fusion.db import (
    DatabaseError,
    account_standing,
    cart_lines,
    device_events,
    engine_snapshots,
    inbox,
    receipts,
    review_items,
    trajectories,
    utcnow,
    visits,
)

log = logging.getLogger(__name__)

#: Fusion tables whose rows are never updated or deleted (migration 0002 installs the triggers).
FUSION_APPEND_ONLY_TABLES = ("cart_lines",)


def _insert(conn: Connection, table: sa.Table) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return pg.insert(table)
    if name == "sqlite":
        return sqlite_dialect.insert(table)
    raise DatabaseError(f"unsupported dialect {name!r}")  # pragma: no cover - Database admits only the two


def insert_ignore(
    conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> int:
    """Insert ``rows``, skipping those whose ``keys`` exist already; returns how many were inserted."""
    if not rows:
        return 0
    stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=list(keys))
    if len(rows) == 1:
        return conn.execute(stmt, dict(rows[0]), execution_options={"preserve_rowcount": True}).rowcount
    result = conn.execute(stmt, [dict(r) for r in rows], execution_options={"preserve_rowcount": True})
    return max(result.rowcount, 0)


# ------------------------------------------------------------------------------------------------ inbox
@dataclass(frozen=True)
class InboxRow:
    pos: int
    source: str
    seq: int
    kind: str
    topic: str
    ts: float
    payload: bytes


def inbox_add(
    conn: Connection,
    *,
    source: str,
    seq: int,
    kind: str,
    topic: str,
    ts: float,
    payload: bytes,
    received_at: datetime | None = None,
) -> int | None:
    """Append an accepted message; its inbox position, or None when ``(source, seq)`` is there already.

    The hot path of the service (every track message): one prepared statement through the driver, without
    building a SQLAlchemy statement each time (that cost more than the insert itself)."""
    sqlite = conn.dialect.name == "sqlite"
    at = (received_at or utcnow()).astimezone(UTC)
    row = conn.exec_driver_sql(
        _INBOX_SQL_SQLITE if sqlite else _INBOX_SQL_PG,
        (
            source,
            seq,
            kind,
            topic,
            ts,
            payload,
            at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else at,
        ),
    ).first()
    return None if row is None else int(row[0])


_INBOX_COLUMNS = "source, seq, kind, topic, ts, payload, received_at"
# same storage as UtcDateTime: SQLite keeps naive UTC text in SQLAlchemy's format, PostgreSQL timestamptz
_INBOX_SQL_SQLITE = (
    f"INSERT INTO inbox ({_INBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (source, seq) DO NOTHING RETURNING pos"
)
_INBOX_SQL_PG = (
    f"INSERT INTO inbox ({_INBOX_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (source, seq) DO NOTHING RETURNING pos"
)


def inbox_after(conn: Connection, pos: int) -> list[InboxRow]:
    """The messages after inbox position ``pos``, in the order they were fed."""
    rows = conn.execute(
        sa.select(
            inbox.c.pos, inbox.c.source, inbox.c.seq, inbox.c.kind, inbox.c.topic, inbox.c.ts, inbox.c.payload
        )
        .where(inbox.c.pos > pos)
        .order_by(inbox.c.pos)
    )
    return [InboxRow(r.pos, r.source, r.seq, r.kind, r.topic, r.ts, bytes(r.payload)) for r in rows]


def inbox_size(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one())


# ------------------------------------------------------------------------------------------------ snapshots
@dataclass(frozen=True)
class Snapshot:
    id: int
    inbox_pos: int
    event_ts: float
    state: bytes
    dedup: dict[str, Any]


def latest_snapshot(conn: Connection) -> Snapshot | None:
    row = conn.execute(sa.select(engine_snapshots).order_by(engine_snapshots.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return Snapshot(row.id, int(row.inbox_pos), float(row.event_ts), bytes(row.state), dict(row.dedup))


def write_snapshot(
    conn: Connection, *, inbox_pos: int, event_ts: float, state: bytes, dedup: dict[str, Any]
) -> int:
    """Store a snapshot that includes every inbox message up to ``inbox_pos``; drop older snapshots and the
    inbox rows it includes.  Returns the snapshot's id."""
    sid = conn.execute(
        engine_snapshots.insert()
        .values(inbox_pos=inbox_pos, event_ts=event_ts, state=state, dedup=dedup, created_at=utcnow())
        .returning(engine_snapshots.c.id)
    ).scalar_one()
    conn.execute(engine_snapshots.delete().where(engine_snapshots.c.id < sid))
    conn.execute(inbox.delete().where(inbox.c.pos <= inbox_pos))
    return int(sid)


# ------------------------------------------------------------------------------------------------ devices
def device_event_add(
    conn: Connection,
    *,
    source: str,
    seq: int,
    device: str,
    kind: str,
    state: str,
    version: str,
    config_hash: str,
    counters: Mapping[str, int],
    ts: float,
) -> bool:
    """Record a device status message; False when ``(source, seq)`` was recorded before."""
    return (
        insert_ignore(
            conn,
            device_events,
            [
                {
                    "source": source,
                    "seq": seq,
                    "device": device,
                    "kind": kind,
                    "state": state,
                    "version": version,
                    "config_hash": config_hash,
                    "counters": dict(counters),
                    "ts": ts,
                    "received_at": utcnow(),
                }
            ],
            ["source", "seq"],
        )
        == 1
    )


# ------------------------------------------------------------------------------------------------ visits
@dataclass(frozen=True)
class VisitRow:
    visit: str
    account: str
    gate: str
    party_size: int
    entered_at: float
    exited_at: float | None
    settled_at: float | None
    status: str
    shoppers: list[str]
    hold_id: str | None
    hold_status: str | None


def visit_add(
    conn: Connection, *, visit: str, account: str, gate: str, party_size: int, entered_at: float
) -> bool:
    now = utcnow()
    return (
        insert_ignore(
            conn,
            visits,
            [
                {
                    "visit": visit,
                    "account": account,
                    "gate": gate,
                    "party_size": party_size,
                    "entered_at": entered_at,
                    "status": "open",
                    "shoppers": [],
                    "created_at": now,
                    "updated_at": now,
                }
            ],
            ["visit"],
        )
        == 1
    )


def visit_get(conn: Connection, visit: str) -> VisitRow | None:
    r = conn.execute(sa.select(visits).where(visits.c.visit == visit)).first()
    if r is None:
        return None
    return VisitRow(
        r.visit,
        r.account,
        r.gate,
        r.party_size,
        r.entered_at,
        r.exited_at,
        r.settled_at,
        r.status,
        list(r.shoppers or []),
        r.hold_id,
        r.hold_status,
    )


def visit_set_hold(conn: Connection, visit: str, hold_id: str | None, hold_status: str) -> None:
    """Record the entry hold's outcome (once: a later call does not overwrite it)."""
    conn.execute(
        visits.update()
        .where(visits.c.visit == visit, visits.c.hold_status.is_(None))
        .values(hold_id=hold_id, hold_status=hold_status, updated_at=utcnow())
    )


_STATUS_ORDER = {"open": 0, "settling": 1, "closed": 2}


def visit_advance(
    conn: Connection,
    visit: str,
    status: str,
    *,
    exited_at: float | None = None,
    settled_at: float | None = None,
    shoppers: Sequence[str] | None = None,
) -> None:
    """Move a visit forward (open -> settling -> closed); never back."""
    later = [s for s, k in _STATUS_ORDER.items() if k < _STATUS_ORDER[status]]
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if exited_at is not None:
        values["exited_at"] = exited_at
    if settled_at is not None:
        values["settled_at"] = settled_at
    if shoppers is not None:
        values["shoppers"] = list(shoppers)
    conn.execute(visits.update().where(visits.c.visit == visit, visits.c.status.in_(later)).values(**values))


def open_visits(conn: Connection) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(visits).where(visits.c.status != "closed")
        ).scalar_one()
    )


# ----------------------------------------------------------------------------------------------- cart lines
def cart_lines_add(conn: Connection, visit: str, lines: Iterable[Line]) -> int:
    """Append the lines the database does not hold yet (by ``line_id``); returns how many were new."""
    now = utcnow()
    rows = [
        {
            "visit": visit,
            "line_id": ln.line_id,
            "kind": ln.kind,
            "sku": ln.sku,
            "qty": ln.qty,
            "unit_price": ln.unit_price,
            "amount": ln.amount,
            "confidence": ln.confidence,
            "margin": ln.margin,
            "uncertain": ln.uncertain,
            "reason": ln.reason,
            "event_id": ln.event_id,
            "shopper": ln.shopper,
            "runner_up": ln.runner_up,
            "cameras": list(ln.cameras),
            "lanes": list(ln.lanes),
            "t": ln.t,
            "created_at": now,
        }
        for ln in lines
    ]
    return insert_ignore(conn, cart_lines, rows, ["visit", "line_id"])


def cart_lines_of(conn: Connection, visit: str) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(cart_lines).where(cart_lines.c.visit == visit).order_by(cart_lines.c.id))
    return [dict(r._mapping) for r in rows]


# ------------------------------------------------------------------------------------------------ receipts
@dataclass(frozen=True)
class ReceiptRow:
    visit: str
    account: str
    decision: str
    status: str
    total: int
    currency: str
    lines: list[dict[str, Any]]
    reasons: list[str]
    charge_key: str | None
    payment_id: str | None
    failure_code: str | None
    entered_at: float
    exited_at: float
    settled_at: float


def receipt_add(
    conn: Connection,
    *,
    visit: str,
    account: str,
    decision: str,
    total: int,
    currency: str,
    lines: Sequence[Mapping[str, Any]],
    reasons: Sequence[str],
    charge_key: str | None,
    entered_at: float,
    exited_at: float,
    settled_at: float,
) -> bool:
    """The visit's receipt in status ``pending`` (before any money moves); False if it exists already."""
    now = utcnow()
    return (
        insert_ignore(
            conn,
            receipts,
            [
                {
                    "visit": visit,
                    "account": account,
                    "decision": decision,
                    "status": "pending",
                    "total": total,
                    "currency": currency,
                    "lines": [dict(ln) for ln in lines],
                    "reasons": list(reasons),
                    "charge_key": charge_key,
                    "entered_at": entered_at,
                    "exited_at": exited_at,
                    "settled_at": settled_at,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
            ["visit"],
        )
        == 1
    )


def receipt_get(conn: Connection, visit: str) -> ReceiptRow | None:
    r = conn.execute(sa.select(receipts).where(receipts.c.visit == visit)).first()
    if r is None:
        return None
    return ReceiptRow(
        r.visit,
        r.account,
        r.decision,
        r.status,
        int(r.total),
        r.currency,
        list(r.lines),
        list(r.reasons),
        r.charge_key,
        r.payment_id,
        r.failure_code,
        r.entered_at,
        r.exited_at,
        r.settled_at,
    )


def receipt_finish(
    conn: Connection,
    visit: str,
    status: str,
    *,
    payment_id: str | None,
    failure_code: str | None,
    reasons: Sequence[str] | None = None,
) -> bool:
    """Set the outcome of a ``pending`` receipt; False if it had one already (nothing changes then)."""
    values: dict[str, Any] = {
        "status": status,
        "payment_id": payment_id,
        "failure_code": failure_code,
        "updated_at": utcnow(),
    }
    if reasons is not None:
        values["reasons"] = list(reasons)
    res = conn.execute(
        receipts.update().where(receipts.c.visit == visit, receipts.c.status == "pending").values(**values),
        execution_options={"preserve_rowcount": True},
    )
    return res.rowcount == 1


def all_receipts(conn: Connection) -> list[ReceiptRow]:
    rows = conn.execute(sa.select(receipts.c.visit).order_by(receipts.c.visit)).scalars().all()
    return [r for r in (receipt_get(conn, v) for v in rows) if r is not None]


# ------------------------------------------------------------------------------------------------ review
def review_add(
    conn: Connection,
    *,
    key: str,
    kind: str,
    reason: str,
    visit: str | None = None,
    event_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    event_ts: float | None = None,
) -> bool:
    """Queue an item for ops review; False if the same item (``key``) was queued before."""
    return (
        insert_ignore(
            conn,
            review_items,
            [
                {
                    "item_key": key,
                    "kind": kind,
                    "visit": visit,
                    "event_id": event_id,
                    "reason": reason[:2000],
                    "details": dict(details) if details is not None else None,
                    "state": "open",
                    "event_ts": event_ts,
                    "created_at": utcnow(),
                }
            ],
            ["item_key"],
        )
        == 1
    )


def review_open(conn: Connection) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(review_items).where(review_items.c.state == "open")
        ).scalar_one()
    )


def review_items_all(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(review_items).order_by(review_items.c.id))
    return [dict(r._mapping) for r in rows]


# --------------------------------------------------------------------------------------------- trajectories
def trajectory_add(conn: Connection, points: Sequence[Mapping[str, Any]]) -> int:
    """Add sampled positions ``{visit, shopper, bucket, t, x, y}``; one per (visit, shopper, bucket)."""
    return insert_ignore(conn, trajectories, points, ["visit", "shopper", "bucket"])


def trajectory_of(conn: Connection, visit: str) -> list[tuple[str, float, float, float]]:
    rows = conn.execute(
        sa.select(trajectories.c.shopper, trajectories.c.t, trajectories.c.x, trajectories.c.y)
        .where(trajectories.c.visit == visit)
        .order_by(trajectories.c.shopper, trajectories.c.bucket)
    )
    return [(r.shopper, r.t, r.x, r.y) for r in rows]


# ------------------------------------------------------------------------------------------------ accounts
@dataclass(frozen=True)
class Standing:
    account: str
    state: str  # ok | blocked
    reason: str
    failure_code: str | None
    visit: str | None
    event_ts: float | None


def standing_get(conn: Connection, account: str) -> Standing | None:
    r = conn.execute(sa.select(account_standing).where(account_standing.c.account == account)).first()
    if r is None:
        return None
    return Standing(r.account, r.state, r.reason, r.failure_code, r.visit, r.event_ts)


def standing_set(conn: Connection, s: Standing) -> None:
    values = {
        "state": s.state,
        "reason": s.reason,
        "failure_code": s.failure_code,
        "visit": s.visit,
        "event_ts": s.event_ts,
        "updated_at": utcnow(),
    }
    stmt = _insert(conn, account_standing).values(account=s.account, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["account"], set_=values))


# ------------------------------------------------------------------------------------------------ retention
def prune(conn: Connection, before_ts: float) -> dict[str, int]:
    """Delete trajectory points and device status events older than event time ``before_ts``."""
    out = {}
    for name, table, col in (
        ("trajectories", trajectories, trajectories.c.t),
        ("device_events", device_events, device_events.c.ts),
    ):
        res = conn.execute(
            table.delete().where(col < before_ts), execution_options={"preserve_rowcount": True}
        )
        out[name] = max(res.rowcount, 0)
    return out
