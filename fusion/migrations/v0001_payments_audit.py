"""0001: the audit log and the payment ledger (accounts, payment methods, the append-only journal)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Connection

from fusion.db import append_only_ddl

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True).with_variant(pg.JSONB(none_as_null=True), "postgresql")
_SETTLES = "kind IN ('capture', 'cancel') AND status = 'succeeded' AND target_id IS NOT NULL"


def _tables() -> sa.MetaData:
    md = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    sa.Table(
        "audit_log",
        md,
        sa.Column("seq", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("event_ts", sa.Double, nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=False),
        sa.Column("before", _JSON, nullable=True),
        sa.Column("after", _JSON, nullable=True),
        sa.Index(None, "entity", "entity_id"),
    )
    sa.Table(
        "payment_accounts",
        md,
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    sa.Table(
        "payment_methods",
        md,
        sa.Column("seq", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("payment_accounts.account_id"), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("declines", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Index(None, "account_id", "seq"),
    )
    sa.Table(
        "payment_records",
        md,
        sa.Column("seq", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.String(64), nullable=False, unique=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("payment_accounts.account_id"), nullable=False),
        sa.Column("target_id", sa.String(64), sa.ForeignKey("payment_records.record_id"), nullable=True),
        sa.Column("method_seq", _BIG_ID, sa.ForeignKey("payment_methods.seq"), nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("reason_code", sa.String(64), nullable=True),
        sa.Column("event_ts", sa.Double, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.CheckConstraint("kind IN ('hold', 'capture', 'cancel', 'refund')", name="kind"),
        sa.CheckConstraint("status IN ('succeeded', 'failed')", name="status"),
        sa.CheckConstraint("amount >= 0", name="amount"),
        sa.Index(None, "account_id", "seq"),
        sa.Index(None, "target_id"),
        sa.Index(
            "uq_payment_records_settles_hold",
            "target_id",
            unique=True,
            sqlite_where=sa.text(_SETTLES),
            postgresql_where=sa.text(_SETTLES),
        ),
    )
    return md


def upgrade(conn: Connection) -> None:
    _tables().create_all(conn, checkfirst=False)
    for table in ("audit_log", "payment_methods", "payment_records"):
        for ddl in append_only_ddl(conn.dialect.name, table):
            conn.execute(sa.text(ddl))
