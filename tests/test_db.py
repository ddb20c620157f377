"""fusion.db on both backends: URLs, connection settings, migrations, helpers, append-only tables."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from fusion.db import (
    APPEND_ONLY_TABLES,
    Database,
    DatabaseError,
    Migration,
    MigrationError,
    _enable_wal,
    audit_log,
    discover_migrations,
    metadata,
    payment_accounts,
    record_audit,
    schema_migrations,
    utcnow,
)
from tests.fixtures_db import DbFactory, url_of

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = discover_migrations()


# ------------------------------------------------------------------------------------------------ URLs
@pytest.mark.parametrize(
    ("url", "kwargs", "dialect", "schema"),
    [
        ("{tmp}/a.db", {}, "sqlite", None),
        ("sqlite:///{tmp}/sub/dir/a.db", {}, "sqlite", None),
        ("postgresql://u@h:5432/d", {}, "postgresql", None),
        ("postgresql+psycopg://u@h/d?schema=store_1", {}, "postgresql", "store_1"),
        ("postgresql+psycopg://u@h/d", {"schema": "store_2"}, "postgresql", "store_2"),
    ],
)
def test_url_forms(tmp_path: Path, url: str, kwargs: dict, dialect: str, schema: str | None) -> None:
    db = Database(url.format(tmp=tmp_path), **kwargs)
    try:
        assert db.dialect == dialect
        assert db.schema == schema
        assert "schema" not in db.url.query
        if dialect == "postgresql":
            assert db.url.drivername == "postgresql+psycopg"
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("sqlite://", {}, "in-memory"),
        ("sqlite:///:memory:", {}, "in-memory"),
        ("sqlite:///{tmp}/a.db", {"schema": "x"}, "only supported on PostgreSQL"),
        ("postgresql+psycopg://u@h/d?schema=Bad-Name", {}, "lower-case"),
        ("postgresql+psycopg://u@h/d?schema=a", {"schema": "b"}, "schema given twice"),
        ("postgresql+psycopg2://u@h/d", {}, "psycopg 3"),
        ("mysql://u@h/d", {}, "unsupported database"),
        ("://nonsense", {}, "bad database URL"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(tmp_path: Path, url: str, kwargs: dict, message: str) -> None:
    with pytest.raises(DatabaseError, match=message):
        Database(url.format(tmp=tmp_path), **kwargs)


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    with Database(tmp_path / "w.db", busy_timeout_s=7) as db, db.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000


@pytest.mark.postgres
def test_postgres_uses_its_own_schema(pg_db: Database) -> None:
    with pg_db.read() as conn:
        assert conn.exec_driver_sql("SELECT current_schema()").scalar() == pg_db.schema
        tables = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": pg_db.schema},
            )
        }
    assert set(metadata.tables) <= tables


@pytest.mark.postgres
def test_money_is_bigint_minor_units_on_postgres(pg_db: Database) -> None:
    with pg_db.read() as conn:
        types = dict(
            conn.execute(
                sa.text(
                    "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND column_name IN ('amount', 'at', 'created_at', 'event_ts')"
                )
            ).all()
        )
    assert types["payment_records.amount"] == "bigint"
    assert types["payment_records.created_at"] == types["audit_log.at"] == "timestamp with time zone"
    assert types["payment_records.event_ts"] == "double precision"


@pytest.mark.postgres
def test_postgres_read_transactions_refuse_writes(pg_db: Database) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="read-only"), pg_db.read() as conn:
        conn.execute(payment_accounts.insert().values(account_id="x", created_at=utcnow()))


# ------------------------------------------------------------------------------------------ migrations
def test_migrations_apply_once_and_are_idempotent(db_factory: DbFactory) -> None:
    db = db_factory.new(migrate=False)
    assert db.migrate() == [m.version for m in SHIPPED]
    assert db.migrate() == []
    other = db_factory.reopen(db)
    assert other.migrate() == []
    applied = db.applied_migrations()
    assert [(a.version, a.name) for a in applied] == [(m.version, m.name) for m in SHIPPED]
    assert all(a.applied_at.tzinfo is not None and a.applied_at <= utcnow() for a in applied)


def test_shipped_migrations_are_numbered_from_one() -> None:
    assert [m.version for m in SHIPPED] == list(range(1, len(SHIPPED) + 1))


def _coarse(t: sa.types.TypeEngine) -> str:
    """The type family of a column, as both dialects report it back."""
    for family, py in (("bool", bool), ("int", int), ("float", float), ("str", str), ("datetime", datetime),
                       ("bytes", bytes)):
        try:
            if t.python_type is py:
                return family
        except NotImplementedError:
            break
    return "json" if isinstance(t, sa.JSON) else type(t).__name__


def test_migrated_schema_matches_metadata(db: Database) -> None:
    """The frozen DDL of the migrations builds exactly the tables the code queries."""
    insp = sa.inspect(db.engine)
    assert set(insp.get_table_names()) == set(metadata.tables)
    for table in metadata.sorted_tables:
        found = {c["name"]: c for c in insp.get_columns(table.name)}
        assert list(found) == [c.name for c in table.columns], table.name
        for col in table.columns:
            assert found[col.name]["nullable"] == col.nullable, f"{table.name}.{col.name} nullable"
            impl = col.type.impl if isinstance(col.type, sa.TypeDecorator) else col.type
            impl = impl.dialect_impl(db.engine.dialect) if impl._variant_mapping else impl
            assert _coarse(found[col.name]["type"]) == _coarse(impl), f"{table.name}.{col.name} type"
        assert insp.get_pk_constraint(table.name)["constrained_columns"] == [
            c.name for c in table.primary_key
        ]
        want_ix = {(ix.name, ix.unique, tuple(c.name for c in ix.columns)) for ix in table.indexes}
        got_ix = {
            (ix["name"], bool(ix["unique"]), tuple(ix["column_names"])) for ix in insp.get_indexes(table.name)
        }
        assert want_ix <= got_ix, table.name
        want_fk = {
            (tuple(fk.parent.name for fk in c.elements), c.referred_table.name)
            for c in table.foreign_key_constraints
        }
        got_fk = {
            (tuple(fk["constrained_columns"]), fk["referred_table"])
            for fk in insp.get_foreign_keys(table.name)
        }
        assert want_fk == got_fk, table.name
        want_uq = {
            tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, sa.UniqueConstraint)
        }
        want_uq |= {(c.name,) for c in table.columns if c.unique}
        got_uq = {tuple(u["column_names"]) for u in insp.get_unique_constraints(table.name)}
        assert want_uq == got_uq, table.name


def _create_table_migration(
    version: int, table: str, *, fail: bool = False, sleep_s: float = 0.0
) -> Migration:
    def upgrade(conn: sa.Connection) -> None:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        time.sleep(sleep_s)
        if fail:
            raise RuntimeError(f"migration {version} broke")

    return Migration(version, table, upgrade)


def _tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def test_a_failing_migration_leaves_nothing_behind(db_factory: DbFactory) -> None:
    db = db_factory.new(migrate=False)
    steps = [
        *SHIPPED,
        _create_table_migration(900, "extra_ok"),
        _create_table_migration(901, "extra_bad", fail=True),
    ]
    with pytest.raises(RuntimeError, match="901 broke"):
        db.migrate(steps)
    assert not _tables(db) & {"extra_ok", "extra_bad", "payment_records"}
    assert db.migrate([*SHIPPED, _create_table_migration(900, "extra_ok")]) == [
        m.version for m in SHIPPED
    ] + [900]
    assert {"extra_ok", "payment_records"} <= _tables(db)


def test_database_newer_than_the_code_is_refused(db_factory: DbFactory) -> None:
    db = db_factory.new(migrate=False)
    db.migrate([*SHIPPED, _create_table_migration(950, "from_the_future")])
    with pytest.raises(MigrationError, match="0950_from_the_future.*newer release"):
        db.migrate()


def test_renamed_migration_is_refused(db_factory: DbFactory) -> None:
    db = db_factory.new(migrate=False)
    db.migrate([*SHIPPED, _create_table_migration(950, "first_name")])
    with pytest.raises(MigrationError, match="must not be renamed"):
        db.migrate([*SHIPPED, _create_table_migration(950, "second_name")])


def test_migrations_out_of_order_are_refused(db_factory: DbFactory) -> None:
    db = db_factory.new(migrate=False)
    with pytest.raises(MigrationError, match="unique and ascending"):
        db.migrate([_create_table_migration(2, "b"), _create_table_migration(1, "a")])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"v0001_a.py": "def upgrade(conn): pass\n", "second.py": ""}, "named vNNNN_name"),
        (
            {"v0001_a.py": "def upgrade(conn): pass\n", "v0001_b.py": "def upgrade(conn): pass\n"},
            "two migrations",
        ),
        ({"v0001_a.py": "UPGRADE = 1\n"}, "no upgrade"),
    ],
)
def test_bad_migration_packages_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], message: str
) -> None:
    pkg = tmp_path / f"mig_{abs(hash(tuple(files)))}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MigrationError, match=message):
        discover_migrations(pkg.name)


def test_concurrent_migrators_in_threads_apply_each_migration_once(db_factory: DbFactory) -> None:
    """Separate engines racing on one fresh database: the lock makes the others wait, then find it done."""
    url = db_factory.url()
    steps = [*SHIPPED, _create_table_migration(990, "slow_one", sleep_s=0.3)]
    handles = [db_factory.open(url, owner=i == 0) for i in range(3)]
    results: list[list[int] | Exception] = [[] for _ in handles]
    barrier = threading.Barrier(len(handles))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = handles[i].migrate(steps)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(results, key=len) == [[], [], [m.version for m in steps]]
    assert [a.version for a in handles[0].applied_migrations()] == [m.version for m in steps]


_MIGRATOR = textwrap.dedent(
    """
    import sys
    from fusion.db import Database
    db = Database(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    print(db.migrate(), flush=True)
    """
)


def test_concurrent_migrator_processes_apply_each_migration_once(db_factory: DbFactory) -> None:
    """Four processes, released at the same moment, migrate one new database (on PostgreSQL, no schema yet).

    On SQLite they also race to switch the new file to WAL, which SQLite refuses at once to all but one.
    """
    db = db_factory.new(migrate=False)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATOR, url_of(db)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4  # type: ignore[union-attr]
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert sorted((out.strip() for out, _ in outs), key=len) == ["[]"] * 3 + [str([m.version for m in SHIPPED])]
    assert [a.version for a in db.applied_migrations()] == [m.version for m in SHIPPED]


# --------------------------------------------------------------------------------------------- helpers
def test_insert_if_absent(db: Database) -> None:
    row = {"account_id": "acc-1", "created_at": utcnow()}
    with db.begin() as conn:
        assert Database.insert_if_absent(conn, payment_accounts, row) is True
        assert Database.insert_if_absent(conn, payment_accounts, row) is False
    with db.begin() as conn:
        assert Database.insert_if_absent(conn, payment_accounts, row, ["account_id"]) is False
        assert conn.execute(sa.select(sa.func.count()).select_from(payment_accounts)).scalar() == 1


def test_insert_if_absent_racing_threads_insert_once(db: Database) -> None:
    """Eight transactions insert the same key at once: one inserts, the others wait and do nothing."""
    barrier = threading.Barrier(8)
    outcomes: list[bool | Exception] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            with db.begin() as conn:
                got: bool | Exception = Database.insert_if_absent(
                    conn, payment_accounts, {"account_id": "race", "created_at": utcnow()}
                )
                time.sleep(0.02)  # hold the transaction open so the others pile up behind it
        except Exception as e:  # noqa: BLE001 - reported below
            got = e
        with lock:
            outcomes.append(got)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes, key=str) == [False] * 7 + [True]


def test_begin_commits_or_rolls_back(db: Database) -> None:
    with pytest.raises(RuntimeError), db.begin() as conn:
        conn.execute(payment_accounts.insert().values(account_id="gone", created_at=utcnow()))
        raise RuntimeError("abort")
    with db.begin() as conn:
        conn.execute(payment_accounts.insert().values(account_id="kept", created_at=utcnow()))
    with db.read() as conn:
        assert conn.execute(sa.select(payment_accounts.c.account_id)).scalars().all() == ["kept"]


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(sa.exc.IntegrityError), db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO payment_methods (account_id, label, declines, created_at) "
                "VALUES ('nobody', 'card', false, CURRENT_TIMESTAMP)"
            )
        )


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_timestamps_are_timezone_aware_utc(db: Database, when: datetime) -> None:
    with db.begin() as conn:
        conn.execute(payment_accounts.insert().values(account_id="t", created_at=when))
    with db.read() as conn:
        back = conn.execute(sa.select(payment_accounts.c.created_at)).scalar_one()
    assert back == when and back.tzinfo == UTC


def test_naive_timestamps_are_refused(db: Database) -> None:
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"), db.begin() as conn:
        conn.execute(payment_accounts.insert().values(account_id="n", created_at=datetime(2026, 1, 1)))


def test_audit_log_round_trips_json(db: Database) -> None:
    before = {"lines": [{"sku": "A1", "qty": 2, "price": 199}], "total": 398}
    after = {"lines": [{"sku": "A1", "qty": 1, "price": 199}], "total": 199, "note": "ümlaut ✓"}
    with db.begin() as conn:
        first = record_audit(
            conn,
            actor="ops:alice",
            action="adjust",
            entity="visit",
            entity_id="v-1",
            before=before,
            after=after,
            event_ts=1700000000.25,
        )
        second = record_audit(conn, actor="fusion", action="settle", entity="visit", entity_id="v-1")
    assert second > first
    with db.read() as conn:
        rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).all()
    assert [(r.actor, r.action, r.before, r.after, r.event_ts) for r in rows] == [
        ("ops:alice", "adjust", before, after, 1700000000.25),
        ("fusion", "settle", None, None, None),
    ]
    assert rows[0].at.tzinfo == UTC


@pytest.mark.parametrize("field", ["actor", "action", "entity", "entity_id"])
def test_audit_requires_who_what_and_which(db: Database, field: str) -> None:
    args = {"actor": "a", "action": "b", "entity": "c", "entity_id": "d", field: ""}
    with pytest.raises(ValueError, match=field), db.begin() as conn:
        record_audit(conn, **args)


_SEED = {
    "audit_log": "INSERT INTO audit_log (at, actor, action, entity, entity_id) "
    "VALUES (CURRENT_TIMESTAMP, 'a', 'b', 'c', 'd')",
    "payment_methods": "INSERT INTO payment_methods (account_id, label, declines, created_at) "
    "VALUES ('acc', 'card', false, CURRENT_TIMESTAMP)",
    "payment_records": "INSERT INTO payment_records (record_id, idempotency_key, request_hash, kind, account_id, "
    "amount, currency, status, created_at) "
    "VALUES ('ch_1', 'capture:v1', 'h', 'capture', 'acc', 500, 'EUR', 'succeeded', CURRENT_TIMESTAMP)",
}
_CHANGE = {"update": "UPDATE {t} SET seq = seq", "delete": "DELETE FROM {t}"}


def _refused(db: Database, table: str, change: str) -> None:
    with db.begin() as conn:
        conn.execute(payment_accounts.insert().values(account_id="acc", created_at=utcnow()))
        conn.execute(sa.text(_SEED[table]))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.begin() as conn:
        conn.execute(sa.text(change.format(t=table)))
    with db.read() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 1


@pytest.mark.parametrize("change", list(_CHANGE))
@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_append_only_tables_refuse_changes(db: Database, table: str, change: str) -> None:
    _refused(db, table, _CHANGE[change])


@pytest.mark.postgres
@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_append_only_tables_refuse_truncate_on_postgres(pg_db: Database, table: str) -> None:
    _refused(pg_db, table, "TRUNCATE {t} CASCADE")


def test_schema_migrations_definition_matches_bootstrap(db: Database) -> None:
    with db.read() as conn:
        rows = conn.execute(sa.select(schema_migrations)).all()
    assert [r.version for r in rows] == [m.version for m in SHIPPED]


def _reader_holding(path: Path) -> sqlite3.Connection:
    """A connection in the middle of a read on a rollback-journal file (it holds the shared lock)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM t").fetchall()
    return holder


def test_wal_switch_retries_while_another_connection_reads_the_new_file(tmp_path: Path) -> None:
    """SQLite refuses a journal-mode change at once (no busy handler) while another connection reads."""
    holder = _reader_holding(tmp_path / "new.db")
    switcher = sqlite3.connect(tmp_path / "new.db", timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        switcher.execute("PRAGMA journal_mode=WAL")
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    try:
        _enable_wal(switcher.cursor(), timeout_s=10.0)
    finally:
        release.join()
    assert switcher.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_wal_switch_gives_up_at_the_busy_timeout(tmp_path: Path) -> None:
    _reader_holding(tmp_path / "new.db")
    switcher = sqlite3.connect(tmp_path / "new.db", timeout=0, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _enable_wal(switcher.cursor(), timeout_s=0.3)
    assert 0.1 < time.monotonic() - started < 5
