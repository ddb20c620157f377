"""0002: fusion's state — the inbox of accepted messages, engine snapshots, visits, cart lines (append-only),
receipts, review items, device status events, shopper trajectories and account standing.

Retention (what a store keeps, and for how long):

* ``inbox``: only the messages after the latest engine snapshot (deleted as each snapshot is written, every
  ``snapshot_every_s`` seconds of event time); ``engine_snapshots``: the latest one only.
* ``trajectories`` and ``device_events``: operational data for the ops app and the evaluation report, pruned
  by the fusion service after ``retention_days`` (default 30).  Trajectories are floor positions of per-visit
  shopper ids (``s17``), sampled at 2 Hz; they hold no image, no face and no biometric template, and they link
  to an account only through the visit.
* ``visits``, ``cart_lines``, ``receipts``, ``review_items``, ``account_standing``: the record of what was
  charged and why; kept as long as the payment records (bookkeeping law, typically 6-10 years), then deleted
  by an operator's migration (``cart_lines`` refuses UPDATE and DELETE like the payment journal).
* Nothing here stores pictures, faces or any feature of a body beyond a floor position and wrist rays' effect
  (which shopper took a line, with its confidence).
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
    sa.Table(
        "inbox",
        md,
        sa.Column("pos", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.UniqueConstraint("source", "seq"),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "engine_snapshots",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("inbox_pos", sa.BigInteger, nullable=False),
        sa.Column("event_ts", sa.Double, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("dedup", _JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    sa.Table(
        "visits",
        md,
        sa.Column("visit", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("gate", sa.String(64), nullable=False),
        sa.Column("party_size", sa.Integer, nullable=False),
        sa.Column("entered_at", sa.Double, nullable=False),
        sa.Column("exited_at", sa.Double, nullable=True),
        sa.Column("settled_at", sa.Double, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("shoppers", _JSON, nullable=False),
        sa.Column("hold_id", sa.String(64), nullable=True),
        sa.Column("hold_status", sa.String(16), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("status IN ('open', 'settling', 'closed')", name="status"),
        sa.Index(None, "account"),
        sa.Index(None, "status"),
    )
    sa.Table(
        "cart_lines",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), nullable=False),
        sa.Column("line_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("confidence", sa.Double, nullable=False),
        sa.Column("margin", sa.Double, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("shopper", sa.String(64), nullable=True),
        sa.Column("runner_up", sa.String(64), nullable=True),
        sa.Column("cameras", _JSON, nullable=False),
        sa.Column("lanes", _JSON, nullable=False),
        sa.Column("t", sa.Double, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("visit", "line_id"),
        sa.Index(None, "event_id"),
    )
    sa.Table(
        "receipts",
        md,
        sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("lines", _JSON, nullable=False),
        sa.Column("reasons", _JSON, nullable=False),
        sa.Column("charge_key", sa.String(255), nullable=True),
        sa.Column("payment_id", sa.String(64), nullable=True),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("entered_at", sa.Double, nullable=False),
        sa.Column("exited_at", sa.Double, nullable=False),
        sa.Column("settled_at", sa.Double, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("decision IN ('charge', 'no_charge', 'hold')", name="decision"),
        sa.CheckConstraint(
            "status IN ('pending', 'charged', 'no_charge', 'held_for_review', 'payment_failed')",
            name="status",
        ),
        sa.Index(None, "account"),
        sa.Index(None, "status"),
    )
    sa.Table(
        "review_items",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("item_key", sa.String(255), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("visit", sa.String(64), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", _JSON, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("event_ts", sa.Double, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.CheckConstraint("kind IN ('visit', 'event')", name="kind"),
        sa.CheckConstraint("state IN ('open', 'resolved')", name="state"),
        sa.Index(None, "state"),
        sa.Index(None, "visit"),
    )
    sa.Table(
        "device_events",
        md,
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("counters", _JSON, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.UniqueConstraint("source", "seq"),
        sa.Index(None, "device", "ts"),
    )
    sa.Table(
        "trajectories",
        md,
        sa.Column("visit", sa.String(64), primary_key=True),
        sa.Column("shopper", sa.String(64), primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("t", sa.Double, nullable=False),
        sa.Column("x", sa.Double, nullable=False),
        sa.Column("y", sa.Double, nullable=False),
        sa.Index(None, "t"),
    )
    sa.Table(
        "account_standing",
        md,
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("visit", sa.String(64), nullable=True),
        sa.Column("event_ts", sa.Double, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("state IN ('ok', 'blocked')", name="state"),
    )
    return md


def upgrade(conn: Connection) -> None:
    _tables().create_all(conn, checkfirst=False)
    for ddl in append_only_ddl(conn.dialect.name, "cart_lines"):
        conn.execute(sa.text(ddl))
