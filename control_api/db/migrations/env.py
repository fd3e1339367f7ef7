"""Alembic environment: always run against the connection handed over by `engine.migrate()`."""

from alembic import context

from control_api.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through control_api.db.engine.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
