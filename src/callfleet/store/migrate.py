"""Schema migrations: `migrate(db)` brings any database to the newest revision.

The Alembic scripts ship inside the package, so `callfleet migrate` works from an
installed wheel with no alembic.ini. `autogenerate_diff` is what the migration test
uses to prove that the migrations and the table definitions describe one schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from callfleet.store.db import Database
from callfleet.store.tables import metadata

__all__ = ["alembic_config", "autogenerate_diff", "migrate"]

_HERE = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade the database to `revision` (default: the newest)."""
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def autogenerate_diff(db: Database) -> list[Any]:
    """Differences between the live schema and the table definitions (empty = in sync)."""
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, other: (
                    not (type_ == "table" and str(name).startswith("procrastinate"))
                ),
            },
        )
        return list(compare_metadata(ctx, metadata))
