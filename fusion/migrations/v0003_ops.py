"""0003: the ops app — staff users, login sessions and attempts, shopper API tokens, disputes, the append-only
log of ops adjustments, and the evidence kept around each shelf event (weight samples and camera tracks);
and a partial index on fusion's ``review_items`` for the queue page (open items, oldest first).

Retention: ``ops_login_attempts`` and expired ``ops_sessions`` are deleted by the ops app after a day;
``ops_event_evidence`` (floor positions, pixel boxes and wrist points of per-camera track ids, and load-cell
grams; no image, no face, nothing that names a person) after ``retention_days`` like fusion's trajectories;
``ops_adjustments`` and ``disputes`` are part of the record of what was charged and refunded and stay as long
as the payment records (``ops_adjustments`` refuses UPDATE and DELETE).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Connection

from fusion.db import append_only_ddl

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True).with_variant(pg.JSONB(none_as_null=True), "postgresql")


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
    # visits exists already (0002): a stand-in so the foreign keys resolve; create_all skips it below
    sa.Table("visits", md, sa.Column("visit", sa.String(64), primary_key=True))
    sa.Table(
        "ops_users",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("role IN ('viewer', 'reviewer', 'admin')", name="role"),
    )
    sa.Table(
        "ops_sessions",
        md,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", _BIG_ID, sa.ForeignKey("ops_users.id"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Index(None, "user_id"),
    )
    sa.Table(
        "ops_login_attempts",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Index(None, "name", "at"),
        sa.Index(None, "client", "at"),
    )
    sa.Table(
        "shopper_tokens",
        md,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Index(None, "account"),
    )
    sa.Table(
        "disputes",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("outcome_note", sa.Text, nullable=True),
        sa.Column("refunded", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.CheckConstraint("state IN ('open', 'resolved')", name="state"),
        sa.CheckConstraint("outcome IN ('refunded', 'corrected', 'rejected')", name="outcome"),
        sa.Index(None, "visit"),
        sa.Index(None, "account"),
    )
    sa.Table(
        "ops_adjustments",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("adjustment", sa.String(64), nullable=False, unique=True),
        sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("line_id", sa.String(64), nullable=True),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("refunded", sa.BigInteger, nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=True),
        sa.Column("dispute_id", sa.BigInteger, nullable=True),
        sa.Column("other_visit", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Index(None, "visit"),
    )
    sa.Table(
        "ops_event_evidence",
        md,
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("shelf", sa.String(64), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("t_start", sa.Double, nullable=False),
        sa.Column("t_end", sa.Double, nullable=False),
        sa.Column("lanes", _JSON, nullable=False),
        sa.Column("candidates", _JSON, nullable=False),
        sa.Column("weights", _JSON, nullable=False),
        sa.Column("tracks", _JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Index(None, "t_end"),
    )

    return md


OPS_TABLES = (
    "ops_users",
    "ops_sessions",
    "ops_login_attempts",
    "shopper_tokens",
    "disputes",
    "ops_adjustments",
    "ops_event_evidence",
)


def upgrade(conn: Connection) -> None:
    md = _tables()
    md.create_all(conn, tables=[md.tables[name] for name in OPS_TABLES], checkfirst=False)
    # the review queue (fusion's table, 0002): open items oldest first, read a page at a time
    conn.execute(
        sa.text(
            "CREATE INDEX ix_review_items_open_queue ON review_items (created_at, id) WHERE state = 'open'"
        )
    )
    for ddl in append_only_ddl(conn.dialect.name, "ops_adjustments"):
        conn.execute(sa.text(ddl))
