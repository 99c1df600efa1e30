"""The migrations build exactly the schema that the table definitions describe."""

from __future__ import annotations

import sqlalchemy as sa

from callfleet.store.db import Database
from callfleet.store.migrate import autogenerate_diff, migrate
from callfleet.store.tables import metadata


def test_migrations_match_the_models(db: Database) -> None:
    # `db` is already migrated to head by the fixture.
    assert autogenerate_diff(db) == []


def test_migrate_is_idempotent(db: Database) -> None:
    migrate(db)
    with db.read() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables


def test_an_empty_database_differs_from_the_models(tmp_path: object) -> None:
    # Guards the check above against passing vacuously.
    empty = Database(f"sqlite:///{tmp_path}/empty.db")
    try:
        diff = autogenerate_diff(empty)
    finally:
        empty.dispose()
    assert any(op[0] == "add_table" for op in diff)
