"""Database access in one place: one :class:`Database` from a URL, the table definitions, migrations.

SQLite is the embedded default and PostgreSQL the production database, through the same code
(SQLAlchemy 2 Core):

* ``sqlite:///path/to/walkout.db`` (or a plain path): WAL journal with ``synchronous=FULL`` (a committed
  charge survives a power cut), foreign keys on, a busy timeout, and write transactions opened with
  ``BEGIN IMMEDIATE`` so two writers (threads or processes) queue instead of failing half way.
* ``postgresql+psycopg://user@host:5432/db`` (psycopg 3), optionally with a schema of its own
  (``schema=`` argument, or a ``?schema=NAME`` query parameter on the URL), used as the connection's
  ``search_path``.

Contracts:

* :meth:`Database.begin` is the one way to write: a transaction that commits when the block ends and rolls
  back when it raises.  :meth:`Database.read` is a read-only snapshot (it never blocks writers on SQLite).
* :meth:`Database.migrate` applies the ordered migrations of :mod:`fusion.migrations` that the database has
  not recorded in ``schema_migrations``, all in one transaction, and returns the versions it applied.  It is
  idempotent, and safe when several processes start at once: on PostgreSQL they queue on an advisory lock
  (per schema), on SQLite on the database's write lock.  A database that holds a migration this code does not
  know (a newer release wrote it) is refused with :class:`MigrationError`.
* :data:`metadata` holds every table the code queries.  Migrations create them with frozen DDL of their own
  (a migration must never change once released); ``tests/test_db.py`` checks that the migrated schema matches
  :data:`metadata`, on both backends.  Adding a table: define it here, and add the next migration module
  ``fusion/migrations/vNNNN_<name>.py`` with ``upgrade(conn)``.
* Money is BIGINT in integer minor units.  Wall-clock timestamps are timezone-aware UTC
  (:class:`UtcDateTime`); event times (seconds since the epoch, driven by the messages) are ``DOUBLE``.
* Rows of money tables and of the audit log are append-only: the database itself refuses UPDATE and DELETE
  on them (triggers, see :func:`append_only_ddl`).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import pkgutil
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "fusion.migrations"
SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_MODULE_RE = re.compile(r"^v(\d{4})_([a-z0-9_]+)$")


class DatabaseError(Exception):
    """A database URL, schema or state this code cannot work with."""


class MigrationError(DatabaseError):
    """The migrations cannot be applied (bad package, unknown or renamed applied version)."""


# ------------------------------------------------------------------------------------------------ types
class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both dialects (SQLite stores it naive, in UTC).

    Binding a naive datetime is an error: it is ambiguous.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Surrogate keys: BIGINT on PostgreSQL, INTEGER on SQLite (only ``INTEGER PRIMARY KEY`` auto-increments).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Money in integer minor units.
Money = sa.BigInteger
#: JSON documents (JSONB on PostgreSQL); Python ``None`` is stored as SQL NULL.
Json = sa.JSON(none_as_null=True).with_variant(pg.JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------------- tables
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("event_ts", sa.Double, nullable=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("entity_id", sa.String(255), nullable=False),
    sa.Column("before", Json, nullable=True),
    sa.Column("after", Json, nullable=True),
    sa.Index(None, "entity", "entity_id"),
)

payment_accounts = sa.Table(
    "payment_accounts",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

payment_methods = sa.Table(
    "payment_methods",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("payment_accounts.account_id"), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("declines", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index(None, "account_id", "seq"),
)

#: The ledger's journal: one row per money operation (hold, capture, cancel, refund), never changed.
payment_records = sa.Table(
    "payment_records",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("record_id", sa.String(64), nullable=False, unique=True),
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("payment_accounts.account_id"), nullable=False),
    sa.Column("target_id", sa.String(64), sa.ForeignKey("payment_records.record_id"), nullable=True),
    sa.Column("method_seq", BigId, sa.ForeignKey("payment_methods.seq"), nullable=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("reason_code", sa.String(64), nullable=True),
    sa.Column("event_ts", sa.Double, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("kind IN ('hold', 'capture', 'cancel', 'refund')", name="kind"),
    sa.CheckConstraint("status IN ('succeeded', 'failed')", name="status"),
    sa.CheckConstraint("amount >= 0", name="amount"),
    sa.Index(None, "account_id", "seq"),
    sa.Index(None, "target_id"),
    # At most one successful capture or cancel per hold, whatever the key: a second one is a bug upstream.
    sa.Index(
        "uq_payment_records_settles_hold",
        "target_id",
        unique=True,
        sqlite_where=sa.text(
            "kind IN ('capture', 'cancel') AND status = 'succeeded' AND target_id IS NOT NULL"
        ),
        postgresql_where=sa.text(
            "kind IN ('capture', 'cancel') AND status = 'succeeded' AND target_id IS NOT NULL"
        ),
    ),
)

# Fusion's own tables (migration 0002; queries in :mod:`fusion.store_db`).  Event times are DOUBLE seconds
# since the epoch; wall-clock times UtcDateTime.  Retention: see fusion/migrations/v0002_fusion.py.

#: Every input message fusion accepted, in the order it was fed to the engine (``pos``); rows up to the
#: latest engine snapshot are deleted when the snapshot is written.
inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("pos", BigId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("source", "seq"),
    sqlite_autoincrement=True,  # positions never come back, also after the rows before a snapshot went
)

#: The engine's state (a pickle of our own objects) after every message up to ``inbox_pos``.
engine_snapshots = sa.Table(
    "engine_snapshots",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("inbox_pos", sa.BigInteger, nullable=False),
    sa.Column("event_ts", sa.Double, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("dedup", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

visits = sa.Table(
    "visits",
    metadata,
    sa.Column("visit", sa.String(64), primary_key=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("gate", sa.String(64), nullable=False),
    sa.Column("party_size", sa.Integer, nullable=False),
    sa.Column("entered_at", sa.Double, nullable=False),
    sa.Column("exited_at", sa.Double, nullable=True),
    sa.Column("settled_at", sa.Double, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("shoppers", Json, nullable=False),
    sa.Column("hold_id", sa.String(64), nullable=True),
    sa.Column("hold_status", sa.String(16), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("status IN ('open', 'settling', 'closed')", name="status"),
    sa.Index(None, "account"),
    sa.Index(None, "status"),
)

#: Append-only: one row per cart line with all its evidence; totals are derived.
cart_lines = sa.Table(
    "cart_lines",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), nullable=False),
    sa.Column("line_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("unit_price", Money, nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("confidence", sa.Double, nullable=False),
    sa.Column("margin", sa.Double, nullable=False),
    sa.Column("uncertain", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=True),
    sa.Column("shopper", sa.String(64), nullable=True),
    sa.Column("runner_up", sa.String(64), nullable=True),
    sa.Column("cameras", Json, nullable=False),
    sa.Column("lanes", Json, nullable=False),
    sa.Column("t", sa.Double, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("visit", "line_id"),
    sa.Index(None, "event_id"),
)

#: One receipt per visit; ``status`` is ``pending`` between the row and the payment's outcome.
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), primary_key=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("total", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("lines", Json, nullable=False),
    sa.Column("reasons", Json, nullable=False),
    sa.Column("charge_key", sa.String(255), nullable=True),
    sa.Column("payment_id", sa.String(64), nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("entered_at", sa.Double, nullable=False),
    sa.Column("exited_at", sa.Double, nullable=False),
    sa.Column("settled_at", sa.Double, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("decision IN ('charge', 'no_charge', 'hold')", name="decision"),
    sa.CheckConstraint(
        "status IN ('pending', 'charged', 'no_charge', 'held_for_review', 'payment_failed')", name="status"
    ),
    sa.Index(None, "account"),
    sa.Index(None, "status"),
)

#: What ops must look at: a held visit (``visit:{id}``) or an event no cart took (``event:{id}``).
review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("item_key", sa.String(255), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("visit", sa.String(64), nullable=True),
    sa.Column("event_id", sa.String(64), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", Json, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("event_ts", sa.Double, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.CheckConstraint("kind IN ('visit', 'event')", name="kind"),
    sa.CheckConstraint("state IN ('open', 'resolved')", name="state"),
    sa.Index(None, "state"),
    sa.Index(None, "visit"),
)

#: Device status messages (online / offline / stopped) as received.
device_events = sa.Table(
    "device_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(128), nullable=False),
    sa.Column("counters", Json, nullable=False),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("source", "seq"),
    sa.Index(None, "device", "ts"),
)

#: Shopper floor positions of each visit, one per 1/rate second bucket (``bucket = floor(t * rate)``).
trajectories = sa.Table(
    "trajectories",
    metadata,
    sa.Column("visit", sa.String(64), primary_key=True),
    sa.Column("shopper", sa.String(64), primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("t", sa.Double, nullable=False),
    sa.Column("x", sa.Double, nullable=False),
    sa.Column("y", sa.Double, nullable=False),
    sa.Index(None, "t"),
)

#: The standing fusion last published for an account (``blocked`` after a failed payment).
account_standing = sa.Table(
    "account_standing",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("visit", sa.String(64), nullable=True),
    sa.Column("event_ts", sa.Double, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("state IN ('ok', 'blocked')", name="state"),
)

# The ops app's tables (migration 0003; queries in :mod:`fusion.ops`).

#: Staff accounts of the ops app: argon2 password hashes, one role each.
ops_users = sa.Table(
    "ops_users",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("role IN ('viewer', 'reviewer', 'admin')", name="role"),
)

#: Ops login sessions; only a SHA-256 of the cookie's token is stored.
ops_sessions = sa.Table(
    "ops_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", BigId, sa.ForeignKey("ops_users.id"), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.Index(None, "user_id"),
)

#: Login attempts, for rate limiting (by user name and by client address).
ops_login_attempts = sa.Table(
    "ops_login_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("client", sa.String(64), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index(None, "name", "at"),
    sa.Index(None, "client", "at"),
)

#: Shopper API bearer tokens (one or more per account); only a SHA-256 of the token is stored.
shopper_tokens = sa.Table(
    "shopper_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.Index(None, "account"),
)

#: Shoppers' disputes of receipt lines, and their outcome.
disputes = sa.Table(
    "disputes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("outcome_note", sa.Text, nullable=True),
    sa.Column("refunded", Money, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.CheckConstraint("state IN ('open', 'resolved')", name="state"),
    sa.CheckConstraint("outcome IN ('refunded', 'corrected', 'rejected')", name="outcome"),
    sa.Index(None, "visit"),
    sa.Index(None, "account"),
)

#: Append-only: every ops correction of a cart (its cart lines are ``adjustment`` lines named after it).
ops_adjustments = sa.Table(
    "ops_adjustments",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("adjustment", sa.String(64), nullable=False, unique=True),
    sa.Column("visit", sa.String(64), sa.ForeignKey("visits.visit"), nullable=False),
    sa.Column("action", sa.String(24), nullable=False),
    sa.Column("line_id", sa.String(64), nullable=True),
    sa.Column("sku", sa.String(64), nullable=True),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("refunded", Money, nullable=False),
    sa.Column("reason_code", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("payment_id", sa.String(64), nullable=True),
    sa.Column("dispute_id", sa.BigInteger, nullable=True),
    sa.Column("other_visit", sa.String(64), nullable=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index(None, "visit"),
)

#: Evidence kept around each shelf event for review: the lanes' weight samples and the cameras' tracks.
ops_event_evidence = sa.Table(
    "ops_event_evidence",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("shelf", sa.String(64), nullable=False),
    sa.Column("action", sa.String(8), nullable=False),
    sa.Column("t_start", sa.Double, nullable=False),
    sa.Column("t_end", sa.Double, nullable=False),
    sa.Column("lanes", Json, nullable=False),
    sa.Column("candidates", Json, nullable=False),
    sa.Column("weights", Json, nullable=False),
    sa.Column("tracks", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index(None, "t_end"),
)

#: The review queue's order (open items, oldest first): the queue page reads its first rows only.
sa.Index(
    "ix_review_items_open_queue",
    review_items.c.created_at,
    review_items.c.id,
    sqlite_where=sa.text("state = 'open'"),
    postgresql_where=sa.text("state = 'open'"),
)

#: Tables whose rows may never be updated or deleted (enforced by triggers).
APPEND_ONLY_TABLES = ("audit_log", "payment_methods", "payment_records")


def append_only_ddl(dialect_name: str, table: str) -> list[str]:
    """DDL that makes ``table`` refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL).

    For use in migrations (run each with ``conn.execute(sa.text(ddl))``); on PostgreSQL it (re)creates the
    shared trigger function first.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
        raise ValueError(f"bad table name {table!r}")
    if dialect_name == "sqlite":
        return [
            (
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END"
            ),
            (
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END"
            ),
        ]
    if dialect_name == "postgresql":
        return [
            (
                "CREATE OR REPLACE FUNCTION walkout_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
                "USING ERRCODE = 'restrict_violation'; END $$"
            ),
            (
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION walkout_append_only()"
            ),
            (
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION walkout_append_only()"
            ),
        ]
    raise DatabaseError(f"unsupported dialect {dialect_name!r}")


def record_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    before: Any = None,
    after: Any = None,
    event_ts: float | None = None,
    at: datetime | None = None,
) -> int:
    """Append one audit entry (who did what to which entity, with its JSON state before and after).

    Call it inside the transaction that makes the change, so the entry and the change commit together.
    Returns the entry's sequence number.
    """
    for what, value in (("actor", actor), ("action", action), ("entity", entity), ("entity_id", entity_id)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"audit {what} must be a non-empty string, got {value!r}")
    result = conn.execute(
        audit_log.insert()
        .values(
            at=at or utcnow(),
            event_ts=event_ts,
            actor=actor,
            action=action,
            entity=entity,
            entity_id=entity_id,
            before=before,
            after=after,
        )
        .returning(audit_log.c.seq)
    )
    return int(result.scalar_one())


# ------------------------------------------------------------------------------------------- migrations
@dataclass(frozen=True)
class Migration:
    """One schema step: ``upgrade(conn)`` runs inside the migration transaction."""

    version: int
    name: str
    upgrade: Callable[[Connection], None]


def discover_migrations(package: str = MIGRATIONS_PACKAGE) -> list[Migration]:
    """The migrations of ``package``: modules named ``vNNNN_name`` with an ``upgrade(conn)``, in order."""
    pkg = importlib.import_module(package)
    found: dict[int, Migration] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        m = _MIGRATION_MODULE_RE.match(info.name)
        if not m:
            raise MigrationError(f"{package}.{info.name}: migration modules are named vNNNN_name")
        version, name = int(m.group(1)), m.group(2)
        if version in found:
            raise MigrationError(f"{package}: two migrations numbered {version:04d}")
        module = importlib.import_module(f"{package}.{info.name}")
        upgrade = getattr(module, "upgrade", None)
        if not callable(upgrade):
            raise MigrationError(f"{package}.{info.name}: no upgrade(conn) function")
        found[version] = Migration(version, name, upgrade)
    return [found[v] for v in sorted(found)]


def _enable_wal(cur: Any, timeout_s: float) -> None:
    """Switch a SQLite database to WAL, retrying while another connection holds it.

    Two processes that open a new database at the same moment both try to change its journal mode; that
    needs the exclusive lock, and SQLite answers one of them "database is locked" at once (a deadlock
    between two shared locks, so the busy handler is not called).  Retry with a short backoff until the
    busy timeout: by then the other one has switched the file, and the pragma only reads it.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _lock_id(schema: str | None) -> int:
    """A stable signed 64-bit advisory-lock id for migrating one schema."""
    digest = hashlib.sha256(f"walkout.migrate:{schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --------------------------------------------------------------------------------------------- database
@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    applied_at: datetime


class Database:
    """One database, from a URL (or a plain path, meaning a SQLite file)."""

    def __init__(
        self,
        url: str | Path | URL,
        *,
        schema: str | None = None,
        busy_timeout_s: float = 30.0,
        pool_size: int = 5,
        echo: bool = False,
    ) -> None:
        self.url, url_schema = _parse_url(url)
        if schema is not None and url_schema is not None and schema != url_schema:
            raise DatabaseError(f"schema given twice: {schema!r} and ?schema={url_schema!r}")
        self.schema = schema if schema is not None else url_schema
        self.dialect = self.url.get_backend_name()
        if self.schema is not None:
            if self.dialect != "postgresql":
                raise DatabaseError(f"a schema is only supported on PostgreSQL, not {self.dialect}")
            if not SCHEMA_RE.match(self.schema):
                raise DatabaseError(f"schema {self.schema!r}: use lower-case letters, digits and _")
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(busy_timeout_s, pool_size, echo)
        elif self.dialect == "postgresql":
            self.engine = self._pg_engine(busy_timeout_s, pool_size, echo)
        else:
            raise DatabaseError(f"unsupported database {self.url.render_as_string(hide_password=True)!r}")
        self._migrate_lock = threading.Lock()

    # ---------------------------------------------------------------------------------- engines
    def _sqlite_engine(self, busy_timeout_s: float, pool_size: int, echo: bool) -> Engine:
        database = self.url.database
        if not database or database == ":memory:":
            raise DatabaseError(
                "use a SQLite file, not an in-memory database (it would not survive a restart)"
            )
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            self.url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=10,
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
        )
        busy_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
            cur = dbapi_conn.cursor()
            try:
                _enable_wal(cur, busy_timeout_s)
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.execute("PRAGMA synchronous=FULL")  # a commit (a charge) survives a power cut
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A write transaction takes the write lock up front: a deferred one that reads first and
            # writes later fails with SQLITE_BUSY (no retry) when another writer got in between.
            mode = "DEFERRED" if conn.get_execution_options().get("walkout_read_only") else "IMMEDIATE"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    def _pg_engine(self, busy_timeout_s: float, pool_size: int, echo: bool) -> Engine:
        options = f"-c lock_timeout={int(busy_timeout_s * 1000)}"
        if self.schema is not None:
            options += f" -c search_path={self.schema}"
        return sa.create_engine(
            self.url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=10,
            pool_pre_ping=True,
            connect_args={"options": options},
        )

    # ----------------------------------------------------------------------------- transactions
    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: ``with db.begin() as conn:``; commits on success, rolls back on error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot; on SQLite it does not take the write lock)."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(
                    postgresql_readonly=True
                )  # BEGIN READ ONLY, no extra round trip
            else:
                conn = conn.execution_options(walkout_read_only=True)  # BEGIN DEFERRED (see _on_begin)
            with conn.begin():
                yield conn

    @staticmethod
    def insert_if_absent(
        conn: Connection,
        table: sa.Table,
        values: Mapping[str, Any],
        conflict_columns: Sequence[str] | None = None,
    ) -> bool:
        """``INSERT ... ON CONFLICT (conflict_columns) DO NOTHING``; True when the row was inserted.

        ``conflict_columns`` defaults to the primary key; name a unique constraint's columns to dedupe on it.
        On PostgreSQL a concurrent insert of the same key waits for the other transaction, then does nothing.
        """
        cols = list(conflict_columns) if conflict_columns else [c.name for c in table.primary_key.columns]
        name = conn.dialect.name
        if name == "postgresql":
            stmt: Any = pg.insert(table).values(dict(values)).on_conflict_do_nothing(index_elements=cols)
        elif name == "sqlite":
            stmt = (
                sqlite_dialect.insert(table).values(dict(values)).on_conflict_do_nothing(index_elements=cols)
            )
        else:  # pragma: no cover - the constructor admits only the two
            raise DatabaseError(f"unsupported dialect {name!r}")
        return conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount == 1

    # ------------------------------------------------------------------------------- migrations
    def migrate(self, migrations: Sequence[Migration] | None = None) -> list[int]:
        """Apply the migrations not yet recorded; returns the versions applied now (empty when up to date)."""
        todo = list(discover_migrations() if migrations is None else migrations)
        versions = [m.version for m in todo]
        if versions != sorted(set(versions)):
            raise MigrationError(f"migration versions must be unique and ascending, got {versions}")
        known = {m.version: m.name for m in todo}
        applied_now: list[int] = []
        with self._migrate_lock, self.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(self.schema))))
                if self.schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            _create_schema_migrations(conn)
            applied = {r.version: r.name for r in conn.execute(sa.select(schema_migrations))}
            for version, name in sorted(applied.items()):
                if version not in known:
                    raise MigrationError(
                        f"the database has migration {version:04d}_{name}, which this code does not know "
                        "(it was written by a newer release)"
                    )
                if known[version] != name:
                    raise MigrationError(
                        f"migration {version:04d} is recorded as {name!r} but the code calls it "
                        f"{known[version]!r}: released migrations must not be renamed"
                    )
            for m in todo:
                if m.version in applied:
                    continue
                log.info("applying migration %04d_%s", m.version, m.name)
                m.upgrade(conn)
                conn.execute(
                    schema_migrations.insert().values(version=m.version, name=m.name, applied_at=utcnow())
                )
                applied_now.append(m.version)
        if applied_now:
            log.info("database migrated: applied %s", applied_now)
        return applied_now

    def applied_migrations(self) -> list[AppliedMigration]:
        with self.read() as conn:
            rows = conn.execute(sa.select(schema_migrations).order_by(schema_migrations.c.version))
            return [AppliedMigration(r.version, r.name, r.applied_at) for r in rows]

    # ----------------------------------------------------------------------------- management
    def drop_schema(self) -> None:
        """Drop this database's PostgreSQL schema and everything in it (tests and tear-down only)."""
        if self.dialect != "postgresql" or self.schema is None:
            raise DatabaseError("drop_schema needs a PostgreSQL database with a schema")
        self.engine.dispose()
        with self.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        self.engine.dispose()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        where = self.url.render_as_string(hide_password=True)
        return f"Database({where!r}{f', schema={self.schema!r}' if self.schema else ''})"


def _create_schema_migrations(conn: Connection) -> None:
    """The bookkeeping table itself (frozen definition; created before any migration runs)."""
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER NOT NULL, name VARCHAR(128) NOT NULL, "
        f"applied_at {'DATETIME' if conn.dialect.name == 'sqlite' else 'TIMESTAMP WITH TIME ZONE'} NOT NULL, "
        "CONSTRAINT pk_schema_migrations PRIMARY KEY (version))"
    )


def _parse_url(url: str | Path | URL) -> tuple[URL, str | None]:
    """A SQLAlchemy URL (a plain path means a SQLite file) and the ``?schema=`` it carried, if any."""
    if isinstance(url, Path):
        return make_url(f"sqlite:///{url}"), None
    if isinstance(url, str) and "://" not in url:
        return make_url(f"sqlite:///{url}"), None
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as e:
        raise DatabaseError(f"bad database URL: {e}") from None
    schema = parsed.query.get("schema")
    if isinstance(schema, tuple):
        raise DatabaseError("?schema= given more than once in the database URL")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise DatabaseError(
            f"PostgreSQL URLs use the psycopg 3 driver: postgresql+psycopg://..., got {parsed.drivername!r}"
        )
    return parsed.difference_update_query(["schema"]), schema
