"""Is the database's schema the one this code expects? Asked by `/readyz` and the worker.

`migration_problem` compares the database's Alembic revision with the newest one the
package ships (and, for the procrastinate engine, that procrastinate's tables exist)
and says in words what to do when they differ.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from callfleet.store.db import Database
from callfleet.store.migrate import alembic_config

__all__ = ["migration_problem"]


def _heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def migration_problem(db: Database, *, procrastinate: bool = False) -> str | None:
    """None if the schema is current; otherwise what is wrong, in words."""
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
        if procrastinate:
            present = conn.execute(
                sa.text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            ).scalar()
            if not present:
                return "procrastinate's schema is missing: run `callfleet migrate`"
    heads = _heads()
    if current != heads:
        have = ", ".join(sorted(current)) or "none"
        want = ", ".join(sorted(heads))
        return f"the schema is at {have}, not at {want}: run `callfleet migrate`"
    return None
