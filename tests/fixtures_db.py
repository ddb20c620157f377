"""Database fixtures: ``db`` runs a test on both backends, a SQLite file and PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432, database ``test``, trust auth (user ``postgres``, then ``root``),
or the URL in ``WALKOUT_TEST_PG_URL``.  Every PostgreSQL database a test gets is a fresh schema named after
this run (``wt_<pid>_<random>_<n>``), dropped when the test ends; whatever a crashed test left behind under
this run's prefix is dropped at the end of the session.  When PostgreSQL cannot be reached, the PostgreSQL
variants fail and say so; they are never skipped silently.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from fusion.db import Database

PG_ENV = "WALKOUT_TEST_PG_URL"
PG_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _libpq(url: str) -> str:
    """The psycopg connection string for a SQLAlchemy URL."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A reachable PostgreSQL URL (SQLAlchemy form), or a test failure that says what was tried."""
    env = os.environ.get(PG_ENV)
    candidates = (env,) if env else PG_CANDIDATES
    errors = []
    for url in candidates:
        try:
            with psycopg.connect(_libpq(url), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return url if "+psycopg" in url else url.replace("postgresql://", "postgresql+psycopg://", 1)
        except (psycopg.Error, ValueError) as e:
            errors.append(f"{sa.make_url(url).render_as_string(hide_password=True)}: {str(e).strip()}")
    pytest.fail(
        "PostgreSQL is not reachable, so the PostgreSQL variants of the storage tests cannot run.\n  "
        + "\n  ".join(errors)
        + f"\nStart PostgreSQL (.ci/run does) or point {PG_ENV} at one (postgresql+psycopg://user@host:port/db).",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def pg_run_prefix(pg_url: str) -> Iterator[str]:
    """This run's schema-name prefix; every schema under it is dropped at the end of the session."""
    prefix = f"wt_{os.getpid()}_{secrets.token_hex(3)}"
    yield prefix
    with psycopg.connect(_libpq(pg_url), autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
            )
        ]
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class DbFactory:
    """Fresh, empty databases of one backend for one test, and second handles on them."""

    def __init__(self, backend: str, tmp_path: Path, pg_url: str | None, prefix: str | None) -> None:
        self.backend = backend
        self._tmp = tmp_path
        self._pg_url = pg_url
        self._prefix = prefix
        self._n = 0
        self._opened: list[Database] = []
        self._schemas: list[Database] = []

    def url(self) -> str:
        """A URL for a new, empty database (nothing is created until it is used)."""
        self._n += 1
        if self.backend == "sqlite":
            return f"sqlite:///{self._tmp / f'walkout-{self._n}.db'}"
        assert self._pg_url is not None and self._prefix is not None
        return f"{self._pg_url}?schema={self._prefix}_{self._n}"

    def new(self, *, migrate: bool = True) -> Database:
        db = self.open(self.url(), owner=True)
        if migrate:
            db.migrate()
        return db

    def open(self, url: str, *, owner: bool = False) -> Database:
        """A handle on ``url``; with ``owner`` its PostgreSQL schema is dropped when the test ends."""
        db = Database(url)
        self._opened.append(db)
        if owner and db.schema is not None:
            self._schemas.append(db)
        return db

    def reopen(self, db: Database) -> Database:
        """Another handle (own engine and pool) on the same database, as a second process would have."""
        return self.open(url_of(db))

    def close(self) -> None:
        for db in self._opened:
            db.dispose()
        for db in self._schemas:
            try:
                db.drop_schema()
            except sa.exc.SQLAlchemyError as e:  # the session sweep retries it
                print(f"could not drop schema {db.schema}: {e}")


def url_of(db: Database) -> str:
    """The URL (with ``?schema=``) that opens ``db`` again."""
    url = db.url
    if db.schema is not None:
        url = url.update_query_dict({"schema": db.schema})
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _factory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> DbFactory:
    pg_url = prefix = None
    if backend == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        prefix = request.getfixturevalue("pg_run_prefix")
    return DbFactory(backend, tmp_path, pg_url, prefix)


@pytest.fixture
def db_factory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DbFactory]:
    """Fresh databases of the test's backend (the test runs once per backend)."""
    factory = _factory(backend, tmp_path, request)
    yield factory
    factory.close()


@pytest.fixture
def db(db_factory: DbFactory) -> Database:
    """A fresh, migrated database; the test runs once on SQLite and once on PostgreSQL."""
    return db_factory.new()


@pytest.fixture
def sqlite_db(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh, migrated SQLite database, for checks that stop before storage (input validation)."""
    factory = _factory("sqlite", tmp_path, request)
    yield factory.new()
    factory.close()


@pytest.fixture
def pg_db(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh, migrated PostgreSQL database, for behaviour only PostgreSQL has (mark the test ``postgres``)."""
    factory = _factory("postgresql", tmp_path, request)
    yield factory.new()
    factory.close()
