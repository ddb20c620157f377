"""Helpers shared by the fusion service tests and the benchmark: publishing a scene's messages on their
topics, the ledger with the scene's accounts, and reading back what a run left in the database."""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from fusion import store_db
from fusion.db import Database, payment_records
from fusion.payments import LedgerGateway
from wire.messages import GateEntryMsg, ShelfEventMsg, StatusMsg, TracksMsg
from wire.topics import Kind
from wire.transport import Transport

KIND_KEY = {
    TracksMsg: (Kind.TRACKS, "camera"),
    ShelfEventMsg: (Kind.SHELF_EVENTS, "shelf"),
    GateEntryMsg: (Kind.GATE_ENTRY, "gate"),
    StatusMsg: (Kind.STATUS, "device"),
}


def publish(transport: Transport, msg: BaseModel) -> None:
    """Publish a scene message on its own topic (its source and seq kept as they are)."""
    kind, field = KIND_KEY[type(msg)]
    transport.publish(kind, getattr(msg, field), msg)


def ledger_with_accounts(
    db: Database, accounts: dict[str, str], declining: tuple[str, ...], currency: str = "USD"
) -> LedgerGateway:
    ledger = LedgerGateway(db, currency=currency)
    for account in accounts.values():
        ledger.ensure_account(account, declines=account in declining)
    return ledger


def receipts_by_account(db: Database) -> dict[str, dict[str, Any]]:
    """The receipts table as {account: comparable fields} (one visit per account in the scenes)."""
    with db.read() as conn:
        rows = store_db.all_receipts(conn)
    return {
        r.account: {
            "visit": r.visit,
            "status": r.status,
            "decision": r.decision,
            "total": r.total,
            "lines": r.lines,
            "reasons": r.reasons,
            "charge_key": r.charge_key,
            "payment_id": r.payment_id,
            "failure_code": r.failure_code,
            "exited_at": round(r.exited_at, 6),
        }
        for r in rows
    }


def payment_journal(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(sa.select(payment_records).order_by(payment_records.c.seq)).all()
    return [
        {
            "key": r.idempotency_key,
            "kind": r.kind,
            "account": r.account_id,
            "amount": r.amount,
            "status": r.status,
            "record_id": r.record_id,
        }
        for r in rows
    ]


def captures_per_visit(journal: list[dict[str, Any]]) -> Counter[str]:
    """How many capture records each ``capture:{visit}`` key has (succeeded or failed)."""
    return Counter(r["key"] for r in journal if r["kind"] == "capture")
