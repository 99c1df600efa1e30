"""Alembic environment: runs our migrations on the connection that `migrate()` hands in."""

from __future__ import annotations

from alembic import context

from callfleet.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - we always pass a connection
    raise RuntimeError("run migrations through callfleet.store.migrate(), not the alembic CLI")


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """procrastinate keeps its own schema (`callfleet migrate` applies it): not ours."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate"))


context.configure(
    connection=connection,
    target_metadata=metadata,
    include_object=_ours,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
