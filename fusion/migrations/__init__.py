"""Ordered schema migrations, applied by :meth:`fusion.db.Database.migrate`.

Each module is named ``vNNNN_<name>.py`` (four digits, ascending, never reused) and defines
``upgrade(conn: sqlalchemy.Connection) -> None``, which runs inside the one migration transaction (DDL is
transactional on both SQLite and PostgreSQL, so a failing migration leaves nothing behind).  A released
migration is frozen: it spells out its own DDL instead of reusing :data:`fusion.db.metadata`, whose tables
describe the latest schema; change the schema by adding the next module.  ``conn.dialect.name`` is
``"sqlite"`` or ``"postgresql"`` where the two need different DDL (see :func:`fusion.db.append_only_ddl`).
"""
